"""petcd.server."""
