"""petcd.wal."""
