"""petcd.client."""
