"""petcd.utl."""
