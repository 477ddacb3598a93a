"""petcd.mvcc."""
