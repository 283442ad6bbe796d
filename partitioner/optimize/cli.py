"""``splitinfer optimize MODEL --out OPTIMIZED.onnx``: prune, factorize and distill a model, gated.

Prints a table (parameters, GFLOPs, single-thread latency, fidelity of every step next to
the cloud-only JPEG baseline), writes a PNG of latency vs fidelity beside the output, and
writes the last kept model as ONNX with its lineage in the metadata; ``splitinfer
partition OPTIMIZED.onnx`` then cuts it like any other model and records the lineage in
the bundle manifest.
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys

from partitioner.optimize.steps import Distill, LowRank, Plan, Prune
from protos.lineage import IMPORTANCES, PRUNE_SCOPES

_DISTILL = Distill()


def _pair(kind: type):  # noqa: ANN202 - argparse type
    def parse(text: str) -> tuple[str, object]:
        name, sep, value = text.rpartition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
        try:
            return name, kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} in {text!r} is not a {kind.__name__}") from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splitinfer optimize", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a built-in model (mobilenet_v2) or an .onnx file (low-rank only)")
    p.add_argument("--out", required=True, type=pathlib.Path, help="where to write the optimized .onnx")
    g = p.add_argument_group("structured pruning (Torch-Pruning)")
    g.add_argument("--prune", type=float, metavar="RATIO", help="fraction of channels to remove, in (0, 1)")
    g.add_argument("--prune-scope", choices=PRUNE_SCOPES, default="per-layer")
    g.add_argument("--importance", choices=IMPORTANCES, default="magnitude")
    g.add_argument("--layer-ratio", type=_pair(float), action="append", default=[], metavar="LAYER=RATIO",
                   help="override the ratio of one module (repeatable)")
    g = p.add_argument_group("low-rank factorization (SVD)")
    g.add_argument("--lowrank", type=float, metavar="ENERGY",
                   help="factorize layers, keeping this fraction of squared singular values, in (0, 1]")
    g.add_argument("--rank", type=_pair(int), action="append", default=[], metavar="LAYER=RANK",
                   help="fix the rank of one layer or ONNX node (repeatable)")
    g = p.add_argument_group("distillation after each step")
    g.add_argument("--distill-seconds", type=float, default=_DISTILL.seconds, help="0 = no distillation")
    g.add_argument("--distill-epochs", type=int, default=_DISTILL.epochs)
    g.add_argument("--temperature", type=float, default=_DISTILL.temperature)
    g.add_argument("--feature-weight", type=float, default=_DISTILL.feature_weight)
    g.add_argument("--learning-rate", type=float, default=_DISTILL.learning_rate)
    g.add_argument("--optimizer", choices=("sgd", "adamw"), default=_DISTILL.optimizer,
                   help="sgd (momentum 0.9; default): steps in proportion to the gradient, right for fine-tuning")
    g.add_argument("--batch-size", type=int, default=_DISTILL.batch_size)
    g.add_argument("--seed", type=int, default=_DISTILL.seed)
    g.add_argument("--threads", type=int, default=1, help="training threads (latency is always timed on one)")
    g = p.add_argument_group("footage and gate")
    g.add_argument("--train-source", type=pathlib.Path, help="video or image folder (default: sample bikes.mp4)")
    g.add_argument("--train-frames", type=int, default=250)
    g.add_argument("--heldout-source", type=pathlib.Path, help="default: the other sample videos")
    g.add_argument("--heldout-frames", type=int, default=100)
    g.add_argument("--margin", type=float, default=0.02, help="allowance below the JPEG baseline's fidelity")
    g.add_argument("--confident-at", type=float, default=0.8,
                   help="FP32 confidence above which a step must always agree with the original")
    p.add_argument("--plot", type=pathlib.Path, help="latency-vs-fidelity PNG (default: OUT with .png)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The plan the flags ask for (pruning first, then low-rank); ``ValueError`` names a bad value."""
    steps: list[Prune | LowRank] = []
    if args.prune is not None or args.layer_ratio:
        if args.prune is None:
            raise ValueError("--layer-ratio needs --prune RATIO for the other layers")
        steps.append(Prune(args.prune, scope=args.prune_scope, importance=args.importance,
                           layer_ratios=tuple(args.layer_ratio)))
    if args.lowrank is not None or args.rank:
        steps.append(LowRank(1.0 if args.lowrank is None else args.lowrank, ranks=tuple(args.rank)))
    distill = None
    if args.distill_seconds:
        distill = Distill(seconds=args.distill_seconds, epochs=args.distill_epochs, temperature=args.temperature,
                          feature_weight=args.feature_weight, learning_rate=args.learning_rate,
                          batch_size=args.batch_size, seed=args.seed, optimizer=args.optimizer)
    if not steps:
        raise ValueError("nothing to do: pass --prune RATIO and/or --lowrank ENERGY")
    return Plan(tuple(steps), distill)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        plan = plan_from_args(args)
        from partitioner.fidelity import Gate

        gate = Gate(mode="baseline", margin=args.margin, confident_at=args.confident_at)
    except ValueError as exc:
        print(f"splitinfer optimize: {exc}", file=sys.stderr)
        return 2
    import onnx

    from partitioner.errors import PartitionerError
    from partitioner.optimize import report
    from partitioner.optimize.run import optimize
    from partitioner.optimize.sources import gather_footage, input_spec, load_source

    try:
        source = load_source(args.model)
        footage = gather_footage(input_spec(source), train_source=args.train_source, train_frames=args.train_frames,
                                 heldout_source=args.heldout_source, heldout_frames=args.heldout_frames)
        result = optimize(source, plan, footage, gate=gate, threads=args.threads, progress=not args.no_progress)
    except (ValueError, PartitionerError) as exc:
        print(f"splitinfer optimize: {exc}", file=sys.stderr)
        return 2
    print(report.format_table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(result.model, str(args.out))
    plot = report.plot_result(result, args.plot or args.out.with_suffix(".png"))
    kept = ", ".join(s.label for s in result.kept) or "none (the original model)"
    print(f"wrote {args.out} (kept: {kept}) and {plot}")
    return 0
