"""Generated protobuf package authpb."""
