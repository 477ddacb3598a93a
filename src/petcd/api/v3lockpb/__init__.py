"""Generated protobuf package v3lockpb."""
