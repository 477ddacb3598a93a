"""petcd.backend."""
