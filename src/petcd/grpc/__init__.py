"""petcd.grpc."""
