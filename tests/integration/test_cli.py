"""The petcd program's command line, as etcd's: --version, --help, bad flags, config file."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from petcd import ETCD_VERSION
from tests.integration.petcd_proc import PetcdProcess, etcdctl, run_petcd
from tests.ports import free_port


def test_version() -> None:
    out = run_petcd("--version")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0] == f"etcd Version: {ETCD_VERSION}"
    assert lines[1].startswith("Git SHA: ")
    assert lines[2].startswith("Go Version: python3.")
    assert lines[3].startswith("Go OS/Arch: linux/")
    assert lines[4].startswith("petcd Version: ")


def test_help_goes_to_stdout() -> None:
    out = run_petcd("--help")
    assert out.returncode == 0
    assert "--listen-client-urls 'http://localhost:2379'" in out.stdout


def test_unknown_flag_exits_2_with_usage() -> None:
    out = run_petcd("--no-such-flag")
    assert out.returncode == 2
    assert out.stderr.startswith("flag provided but not defined: -no-such-flag\n")
    assert "Usage:" in out.stderr


def test_invalid_config_exits_1_with_a_fatal_json_line() -> None:
    out = run_petcd("--election-timeout", "100", "--heartbeat-interval", "100")
    assert out.returncode == 1
    assert '"level":"fatal"' in out.stderr
    assert "should be at least as 5 times as --heartbeat-interval" in out.stderr


def test_unsupported_flag_is_rejected_clearly() -> None:
    out = run_petcd("--experimental-enable-v2v3=/v2")
    assert out.returncode == 1
    assert "does not support this feature yet" in out.stderr


def test_config_file_and_env(tmp_path: Path) -> None:
    port, peer = free_port(), free_port()
    cfg = tmp_path / "petcd.yaml"
    cfg.write_text(
        f"name: fromfile\n"
        f"data-dir: {tmp_path / 'data'}\n"
        f"listen-client-urls: http://127.0.0.1:{port}\n"
        f"advertise-client-urls: http://127.0.0.1:{port}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-cluster: fromfile=http://127.0.0.1:{peer}\n"
    )
    # Started through ETCD_CONFIG_FILE, without any flag; other ETCD_* variables are ignored.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    env["ETCD_CONFIG_FILE"] = str(cfg)
    env["ETCD_NAME"] = "ignored-because-of-the-config-file"
    p = PetcdProcess(
        tmp_path / "data", name="fromfile", client_port=port, peer_port=peer, args=[], env=env
    )
    p.start()
    try:
        assert etcdctl(p.endpoint, "put", "cfg", "file").stdout == "OK\n"
        assert (tmp_path / "data" / "member" / "wal").is_dir()
        assert (tmp_path / "data" / "member" / "snap" / "db").exists()
    finally:
        p.stop()


def test_client_port_in_use_exits_1_without_creating_a_data_dir(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        url = f"http://127.0.0.1:{busy.getsockname()[1]}"
        out = run_petcd(
            "--data-dir",
            str(tmp_path / "data"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
        )
    assert out.returncode == 1
    assert "failed to listen on client urls" in out.stderr
    assert not (tmp_path / "data").exists()
