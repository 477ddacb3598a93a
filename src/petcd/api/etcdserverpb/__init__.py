"""Generated protobuf package etcdserverpb."""
