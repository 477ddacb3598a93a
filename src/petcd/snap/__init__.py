"""petcd.snap."""
