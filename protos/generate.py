"""Regenerate the committed protobuf/gRPC modules from ``protos/*.proto``.

Run ``python -m protos.generate`` (or ``make protos``). The output is deterministic
for a given grpcio-tools version; ``--check`` fails when the committed files differ
from what would be generated (the test suite runs it).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

PROTO_DIR = pathlib.Path(__file__).resolve().parent
ROOT = PROTO_DIR.parent
PROTO_FILES = ("inference.proto", "control.proto", "bundle.proto")
_DEFAULT_POOL = "_descriptor_pool.Default()"
_PRIVATE_POOL = "_splitinfer_pool.POOL"


def _generate_into(out_dir: pathlib.Path) -> list[pathlib.Path]:
    import subprocess

    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
    ] + [str(PROTO_DIR / name) for name in PROTO_FILES]
    # A child process: grpc_tools' protoc segfaults in a process that has loaded TensorFlow
    # (the importer tests do), both carrying their own C++ protobuf.
    code = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args[1:]], check=False).returncode
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} for {', '.join(PROTO_FILES)}")
    generated = sorted((out_dir / "protos").glob("*_pb2*.py*"))
    for path in generated:
        if path.suffix == ".py" and path.name.endswith("_pb2.py"):
            text = path.read_text()
            if _DEFAULT_POOL not in text:
                raise RuntimeError(f"{path.name}: expected {_DEFAULT_POOL!r} in generated code")
            text = text.replace(
                "from google.protobuf import symbol_database as _symbol_database\n",
                "from google.protobuf import symbol_database as _symbol_database\n"
                "from protos import _pool as _splitinfer_pool\n",
            ).replace(_DEFAULT_POOL, _PRIVATE_POOL)
            path.write_text(text)
    return generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generated = _generate_into(pathlib.Path(tmp))
        stale = []
        for path in generated:
            target = PROTO_DIR / path.name
            new = path.read_bytes()
            if args.check:
                if not target.exists() or target.read_bytes() != new:
                    stale.append(path.name)
            else:
                target.write_bytes(new)
    if stale:
        print(f"out of date: {', '.join(stale)}; run `make protos`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
