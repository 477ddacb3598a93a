"""petcd.peer."""
