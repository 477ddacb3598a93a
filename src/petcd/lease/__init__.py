"""petcd.lease."""
