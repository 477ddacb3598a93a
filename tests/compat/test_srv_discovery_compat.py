"""DNS SRV discovery (``--discovery-srv``): etcd 3.4 against petcd, members, etcdctl, gateway.

DNS discovery reads the system's resolver configuration, so ``srv_scenario.py`` runs in a
network and mount namespace of its own (``unshare``), with a private ``/etc/resolv.conf``
naming a small DNS server it serves itself; see its docstring. It runs the same scenario on
etcd 3.4 and on petcd and prints what it saw. Where etcd 3.4 and 3.5 differ, petcd does what
3.5 does: 3.4 reads only the https peer records (the scenario's peers are https for that
reason), its ``endpoint health`` ignores ``--discovery-srv``, and its gateway logs no
"Running" line.

Needs ``unshare`` with mount and network namespaces (root, or a kernel that lets the user
create them); skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.compat.servers import ETCD_BIN

REPO = Path(__file__).resolve().parents[2]
UNSHARE = ["unshare", "--mount", "--net", "--propagation", "private", "--"]


def _namespaces_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.skipif(not os.path.exists(ETCD_BIN), reason="needs etcd 3.4"),
    pytest.mark.skipif(
        not _namespaces_available(),
        reason="needs unshare with mount and network namespaces (and ip) for a private DNS",
    ),
]


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("srv")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    done = subprocess.run(
        [*UNSHARE, sys.executable, "-m", "tests.compat.srv_scenario", str(tmp)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return result


def test_members_bootstrap_from_srv_records_as_etcd_members_do(
    seen: dict[str, dict[str, Any]],
) -> None:
    etcd, petcd = seen["etcd"], seen["petcd"]
    assert petcd["members"] == etcd["members"]  # ids, names, peer and client URLs
    assert petcd["cluster_id"] == etcd["cluster_id"]
    assert [m[2] for m in petcd["members"]] == [
        ["https://m3.petcd.test:2380"],
        ["https://m1.petcd.test:2380"],
        ["https://m2.petcd.test:2380"],
    ]
    # The real etcdctl finds petcd's members through DNS as it finds etcd's.
    assert petcd["etcdctl"] == etcd["etcdctl"]
    assert petcd["etcdctl"]["code"] == 0


def test_a_member_not_in_the_records_is_refused_as_etcd_refuses_it(
    seen: dict[str, dict[str, Any]],
) -> None:
    assert seen["petcd"]["stray_code"] == seen["etcd"]["stray_code"] == 1
    assert seen["petcd"]["stray_warnings"] == seen["etcd"]["stray_warnings"]
    assert 'cannot find local etcd member "m4" in SRV records' in str(
        seen["petcd"]["stray_warnings"]
    )


def test_petcdctl_finds_its_endpoints_in_dns(seen: dict[str, dict[str, Any]]) -> None:
    etcd, petcd = seen["etcd"], seen["petcd"]
    assert petcd["ctl"] == etcd["ctl"]  # member list through --discovery-srv
    assert petcd["ctl_secure_only"] == etcd["ctl_secure_only"]
    assert petcd["ctl_nxdomain"] == etcd["ctl_nxdomain"]
    assert petcd["ctl_nxdomain"]["err"].startswith("Error: dns lookup errors: lookup ")
    # etcd 3.5's endpoint health asks every discovered endpoint (3.4's ignores them).
    health = petcd["ctl_health"]
    assert health["code"] == 0
    assert sorted(line.split()[0] for line in health["out"].splitlines()) == [
        f"http://m{i}.petcd.test:2379" for i in (1, 2, 3)
    ]


def test_the_gateway_finds_its_endpoints_in_dns(seen: dict[str, dict[str, Any]]) -> None:
    etcd, petcd = seen["etcd"], seen["petcd"]
    for key in ("gateway_put", "gateway_get", "gateway_alive"):
        assert petcd[key] == etcd[key], key
    assert petcd["gateway_get"]["out"] == "k\nv\n"
    nx_etcd, nx_petcd = etcd["gateway_nxdomain"], petcd["gateway_nxdomain"]
    assert nx_petcd["code"] == nx_etcd["code"] == 1
    assert nx_petcd["err"].splitlines()[-1] == nx_etcd["err"].splitlines()[-1]
