"""Generated protobuf package healthpb."""
