"""python-etcd's own integration tests (the v2 API), run with etcd 3.4 and with petcd
(``make test-long``).

Theory of operation: python-etcd (the ``etcd`` module, 0.4.5 from PyPI, the last release) is
the client of etcd's v2 API: keys and directories under ``/v2/keys`` with TTLs, in-order
creation, compare-and-swap, watches by index over long polls, ``/v2/machines`` and the
leader from ``/v2/stats``, v2 users and roles. Its source release ships
``src/etcd/tests/integration/`` (``test_simple.py``: keys, directories, errors, watches from
other processes; clients that reconnect to another member when one is killed; ``test_ssl.py``:
an https server) and ``src/etcd/tests/test_auth.py`` (v2 users, roles and ``/v2/auth/enable``).
Each test class starts its own cluster, three members (one for the auth tests), through the
suite's ``helpers.EtcdProcessHelper``: the first ``etcd`` on ``PATH``, with etcd's flags in
Go's single-dash spelling, on the fixed client ports 6001-6003 and peer ports 8001-8003 (a
client also tries 6004 and 9999); the harness holds ``LOCK`` meanwhile.

The harness puts in front of ``PATH`` a directory whose ``etcd`` is a small wrapper: it runs
the real etcd 3.4 in one run and petcd (this tree's ``src``) in the other, changing the
command line the helper writes in two ways, both for etcd 3.4 and petcd alike:

- ``--enable-v2`` is added: the suite was written for etcd 2, where the v2 API is all there
  is; etcd 3.4 serves it only when asked (as does petcd).
- etcd 2's ``-ca-file=F`` (client certificates signed by F required; etcd 3.4 no longer knows
  the flag and exits) becomes ``--trusted-ca-file=F --client-cert-auth``, what it meant.

Its CA signs certificates with SHA-1, which OpenSSL 3 refuses at its default security level:
the suite's processes get an ``OPENSSL_CONF`` that lowers it to 0, else its https tests fail
against any server. The release is installed with the packages it needs, pinned at versions
that run on Python 3.11 with its Python 2-era code: urllib3 1.26 (it reads headers with
``getheader``), dnspython, pyOpenSSL 24.2 (the last with ``X509Extension``, which its CA
helper uses) and pynose (``nose.tools.nottest``; nose itself no longer imports). Its unit
tests (``src/etcd/tests/unit``, mocks) need no server and are not run.

Every test that passes against etcd must pass against petcd, except those listed in
``DIFFERENT`` with the reason; with ``PETCD_ETCD35_BIN_DIR`` naming a directory that holds
etcd 3.5.17's ``etcd``, those run against it too and must fail there as well (they are 3.5's
changes). Failing against both: its six auth tests (written for etcd
2.1's v2 auth answers: a user list of names, where etcd 2.2 and later, 3.4 and petcd send
user objects).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, REPO
from tests.compat.thirdparty import pysuite

pytestmark = [pytest.mark.long, pytest.mark.timeout(1800)]

RELEASE = "python-etcd==0.4.5"
REQUIREMENTS = (
    "urllib3==1.26.20",
    "dnspython==2.7.0",
    "pyopenssl==24.2.1",
    "pynose==1.5.5",
    "pytest==9.0.3",
)
SUITES = ("src/etcd/tests/integration", "src/etcd/tests/test_auth.py")
# The suite's literal ports: clients 6001-6003 (and 6004, 9999: nobody there), peers 8001-8003.
PORTS = (6001, 6002, 6003, 6004, 8001, 8002, 8003, 9999)
LOCK = Path("/tmp/petcd-python-etcd-ports.lock")
# etcd 3.5.17's etcd (built from the Go module proxy), when set: the DIFFERENT tests run there too.
ETCD35_DIR = os.environ.get("PETCD_ETCD35_BIN_DIR", "")

# Test -> why it fails against petcd but passes against etcd 3.4.
DIFFERENT: dict[str, str] = {
    "src/etcd/tests/integration/test_simple.py::TestSimple::test_directory_ttl_update": (
        "it renews a directory's TTL with a PUT ?dir=true&prevExist=true, which is an update "
        "of a directory: etcd 3.4 ignores the error of writing a value into a directory and "
        "changes the TTL; etcd 3.5 (the target) returns that error, 300 'Raft Internal Error' "
        "with cause 'nodePath /1/dir : Not a file ()', and petcd does as 3.5 (the test fails "
        "the same way against etcd 3.5.17)"
    ),
}

_WRAPPER = """#!/bin/sh
# etcd as python-etcd's tests start it: see test_python_etcd.py.
for arg in "$@"; do
    shift
    case "$arg" in
        -ca-file=*|--ca-file=*) set -- "$@" "--trusted-ca-file=${arg#*=}" --client-cert-auth ;;
        *) set -- "$@" "$arg" ;;
    esac
done
exec %s --enable-v2 "$@"
"""

# OpenSSL 3 refuses certificates signed with SHA-1 at its default security level.
_OPENSSL_CONF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
CipherString = DEFAULT@SECLEVEL=0
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the virtualenv's python, the unpacked release holding ``src/etcd/tests``)."""
    return pysuite.install(tmp_path_factory.mktemp("python-etcd"), RELEASE, REQUIREMENTS)


def _server_dir(base: Path, kind: str) -> Path:
    """A directory holding the ``etcd`` the suite runs: etcd 3.4, etcd 3.5 or petcd, wrapped."""
    base.mkdir(parents=True)
    if kind == "etcd":
        command = ETCD_BIN
    elif kind == "etcd35":
        command = os.path.join(ETCD35_DIR, "etcd")
    else:
        python = REPO / ".venv" / "bin" / "python"
        command = f"env PYTHONPATH={REPO / 'src'} {python} -m petcd.server.main"
    wrapper = base / "etcd"
    wrapper.write_text(_WRAPPER % command)
    wrapper.chmod(0o755)
    return base


def test_python_etcd_suite_passes_on_petcd_where_it_passes_on_etcd(
    suite: tuple[Path, Path], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    python, source = suite
    conf = tmp_path / "openssl.cnf"
    conf.write_text(_OPENSSL_CONF)
    results = {}
    with pysuite.fixed_ports(LOCK, PORTS):
        for kind in ("etcd", "petcd", "etcd35") if ETCD35_DIR else ("etcd", "petcd"):
            bin_dir = _server_dir(tmp_path / kind, kind)
            env = {
                "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
                "OPENSSL_CONF": str(conf),
                # The helper makes each member's data directory in TMPDIR (it removes them).
                "TMPDIR": str(tmp_path / kind),
            }
            tests = SUITES if kind != "etcd35" else tuple(DIFFERENT)
            results[kind] = pysuite.run(python, source, env, *tests, log=tmp_path / f"{kind}.log")
    pysuite.compare({kind: results[kind] for kind in ("etcd", "petcd")}, DIFFERENT, least=20)
    for test in DIFFERENT if ETCD35_DIR else ():  # as etcd 3.5 does: it fails there too
        assert results["etcd35"].get(test) == "FAILED", (test, results["etcd35"])
