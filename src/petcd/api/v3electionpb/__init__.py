"""Generated protobuf package v3electionpb."""
