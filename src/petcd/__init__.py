"""petcd: an etcd-compatible distributed key-value store in Python."""

__version__ = "0.1.0"

# The etcd server version petcd implements and reports (Maintenance.Status, /version,
# `petcd --version`). Kubernetes sends watch progress requests only to etcd >= 3.5.13.
ETCD_VERSION = "3.5.17"
# The cluster version, as etcd reports it: major.minor.0.
ETCD_CLUSTER_VERSION = "3.5.0"
