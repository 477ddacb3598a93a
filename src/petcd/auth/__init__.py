"""petcd.auth."""
