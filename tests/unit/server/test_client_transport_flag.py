"""petcd's own ``--client-transport`` flag: command line, PETCD_CLIENT_TRANSPORT, config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from petcd.server.config import parse
from petcd.server.errors import ConfigError
from petcd.server.flags import usage


def transport(argv: list[str], env: dict[str, str] | None = None) -> str:
    parsed = parse(argv, env or {})
    assert parsed.config is not None
    return parsed.config.client_transport


def test_default_is_native_and_the_flag_selects_grpcio() -> None:
    assert transport([]) == "native"
    assert transport(["--client-transport", "grpcio"]) == "grpcio"
    assert transport(["--client-transport=native"], {"PETCD_CLIENT_TRANSPORT": "grpcio"}) == (
        "native"
    )


def test_the_variable_is_petcd_own_not_an_etcd_one() -> None:
    assert transport([], {"PETCD_CLIENT_TRANSPORT": "grpcio"}) == "grpcio"
    parsed = parse([], {"ETCD_CLIENT_TRANSPORT": "grpcio"})
    assert parsed.config is not None and parsed.config.client_transport == "native"
    assert any("ETCD_CLIENT_TRANSPORT" in w for w in parsed.warnings)


def test_config_file_key_and_the_variable_when_the_file_has_none(tmp_path: Path) -> None:
    with_key = tmp_path / "a.yaml"
    with_key.write_text("name: default\nclient-transport: grpcio\n")
    assert transport(["--config-file", str(with_key)]) == "grpcio"
    without = tmp_path / "b.yaml"
    without.write_text("name: default\n")
    assert transport(["--config-file", str(without)]) == "native"
    env = {"PETCD_CLIENT_TRANSPORT": "grpcio"}
    assert transport(["--config-file", str(without)], env) == "grpcio"
    # the file wins over the variable, as it does over everything else
    env = {"PETCD_CLIENT_TRANSPORT": "native"}
    assert transport(["--config-file", str(with_key)], env) == "grpcio"


def test_an_unknown_transport_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match='valid values are "grpcio", "native"'):
        parse(["--client-transport", "h2"], {})
    with pytest.raises(ConfigError, match="client-transport"):
        parse([], {"PETCD_CLIENT_TRANSPORT": "quic"})


def test_help_lists_the_flag() -> None:
    text = usage()
    assert "--client-transport 'native'" in text
    assert "PETCD_CLIENT_TRANSPORT" in text


def test_native_without_the_built_module_exits_1_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from petcd.server.main import main

    monkeypatch.setitem(sys.modules, "petcd._frontend", None)  # import fails as if not built
    data_dir = tmp_path / "data"
    code = main(
        [
            "--data-dir", str(data_dir),
            "--client-transport", "native",
            "--listen-client-urls", "http://127.0.0.1:0",
            "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:0",
        ]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "the native client transport is not built: run `make install`" in err
    assert "--client-transport=grpcio" in err
    assert not data_dir.exists()  # nothing created
