"""petcd.http."""
