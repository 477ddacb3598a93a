import re

import petcd


def test_reported_etcd_version_is_at_least_3_5_13() -> None:
    # Kubernetes >= 1.31 sends watch progress requests only to etcd >= 3.5.13.
    major, minor, patch = (int(x) for x in re.findall(r"\d+", petcd.ETCD_VERSION)[:3])
    assert (major, minor) == (3, 5)
    assert patch >= 13
