"""petcd.api."""
