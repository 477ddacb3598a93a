"""Generated protobuf package mvccpb."""
