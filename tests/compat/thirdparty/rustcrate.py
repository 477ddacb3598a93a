"""What the Rust clients' harnesses share: a crate's source release, cargo, protoc.

``unpack(base, name, version, sha256)`` downloads ``<name>-<version>.crate`` from crates.io,
checks its SHA-256 (a release that changed is an error) and unpacks it under ``base``.
``cargo()`` finds cargo. ``protoc_wrapper(directory)`` writes an executable ``protoc`` that is
grpcio-tools' compiler with its well-known types, for the crates' build scripts (tonic-build
and prost-build run ``$PROTOC``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest


def unpack(base: Path, name: str, version: str, sha256: str) -> Path:
    """The unpacked crate's directory."""
    crate = f"{name}-{version}"
    url = f"https://static.crates.io/crates/{name}/{crate}.crate"
    with urllib.request.urlopen(url, timeout=120) as answer:
        data = answer.read()
    assert hashlib.sha256(data).hexdigest() == sha256, f"the release of {crate} changed"
    archive = base / f"{crate}.crate"
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        tar.extractall(base, filter="data")
    return base / crate


def cargo() -> str:
    found = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not os.path.exists(found):
        pytest.fail("cargo is needed to build the Rust clients' tests (not found)")
    return found


def protoc_wrapper(directory: Path) -> Path:
    """An executable ``protoc``: grpcio-tools' compiler with its well-known types."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    wrapper = directory / "protoc"
    wrapper.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m grpc_tools.protoc -I"{include}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper
