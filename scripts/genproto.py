#!/usr/bin/env python3
"""Generate petcd's protobuf and gRPC Python code from the .proto files.

Theory of operation: every ``*.proto`` under ``src/petcd/api`` is compiled in
one ``grpc_tools.protoc`` run with the include root ``src`` so that imports read
``import "petcd/api/mvccpb/kv.proto";`` and the generated modules import each
other as ``from petcd.api.mvccpb import kv_pb2``. The outputs (``*_pb2.py``,
``*_pb2.pyi``, ``*_pb2_grpc.py``) are committed and never edited by hand;
``tests/unit/api/test_generated_current.py`` regenerates them into a temporary
directory and requires byte-identical files, so a .proto change without a
``make proto`` fails the tests. Each package directory gets an ``__init__.py``
if it has none (the hand-written ones are left alone).

Usage: ``python scripts/genproto.py [--out DIR]`` (default: ``src``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
API = SRC / "petcd" / "api"


def proto_files() -> list[Path]:
    """The .proto files, relative to the include root, in a stable order."""
    return sorted(p.relative_to(SRC) for p in API.rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Compile every .proto into ``out``; return the generated files (relative)."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # dev dependency

    protos = proto_files()
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{SRC}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p) for p in protos),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    generated: list[Path] = []
    for proto in protos:
        stem = proto.with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            generated.append(stem.parent / (stem.name + suffix))
        package_dir = out / proto.parent
        init = package_dir / "__init__.py"
        if not init.exists():
            init.write_text(f'"""Generated protobuf package {proto.parent.name}."""\n')
    return generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SRC, help="output root (default: src)")
    ns = parser.parse_args(argv)
    for path in generate(ns.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
