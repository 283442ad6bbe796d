"""``splitinfer`` — one command, one subcommand per job.

Each subcommand lives in the package that owns it and is imported only when used,
so ``splitinfer edge`` on a Pi never imports onnx or torch.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "partition": ("partitioner.cli", "partition_main", "split a model into a verified bundle of head/tail pairs"),
    "profile": ("partitioner.cli", "profile_main", "re-measure a bundle's edge side on this device"),
    "optimize": ("partitioner.optimize.cli", "main", "prune, factorize and distill a model (measured and gated)"),
    "export-triton": ("partitioner.cli", "export_triton_main", "write a bundle's tails as a Triton model repository"),
    "serve": ("cloud_server.cli", "main", "serve bundle tails over the Open Inference Protocol (gRPC)"),
    "edge": ("edge_agent.cli", "main", "run the smart-camera daemon with adaptive split offload"),
    "demo": ("splitinfer.demo", "main", "the end-to-end demo: partition, serve, and stream a video"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: splitinfer COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run `splitinfer COMMAND --help` for a command's options; `splitctl` controls a running agent."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from splitinfer import __version__

        print(f"splitinfer {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"splitinfer: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(
            f"splitinfer {name}: cannot import {module_name} ({exc}); install the matching extra, "
            "e.g. pip install 'splitinfer[edge]'",
            file=sys.stderr,
        )
        return 2
    return int(getattr(module, func_name)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
