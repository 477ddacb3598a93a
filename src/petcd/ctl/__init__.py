"""petcd.ctl."""
