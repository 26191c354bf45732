"""`talkinghead bench`: benchmark methods on a dataset protocol and write the results table.

  talkinghead bench --dataset synth --methods ground_truth static
  talkinghead bench --dataset vox2 --store /data/store/vox2 --methods pcavs pdfgc \\
      --checkpoint pcavs=runs/pcavs/last.ckpt --clips 200 --syncnet official
  talkinghead bench --list                      # protocols, methods and metrics available

Also runnable on its own: ``python -m talkinghead.bench.cli ...``. Exit status: 0 when every
clip of every method was scored, 1 when the run completed with recorded failures, 2 when it
could not start (unknown name, missing store, ...).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from talkinghead.bench.protocol import PROTOCOLS, SETTINGS, protocol_names

__all__ = ["add_bench_parser", "build_config", "main", "run_bench"]


def _checkpoint(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected METHOD=PATH, got {text!r}")
    return name, path


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="synth", metavar="PROTOCOL",
                   help=f"benchmark protocol: {', '.join(protocol_names())} (default synth)")
    p.add_argument("--methods", nargs="+", default=["ground_truth", "static"],
                   help="methods to benchmark (default: ground_truth static)")
    p.add_argument("--checkpoint", type=_checkpoint, action="append", default=[], metavar="METHOD=PATH",
                   help="checkpoint of a method (repeatable); default: the newest under runs/<method>/")
    p.add_argument("--clips", type=int, default=None, help="number of test clips (default: the protocol's, 50)")
    p.add_argument("--metrics", nargs="+", default=None, help="metric names (default: every registered metric)")
    p.add_argument("--store", default=None, help="clip store folder (default: the protocol's)")
    p.add_argument("--out", default=None, help="run folder (default: <bench-root>/<timestamp>-<protocol>)")
    p.add_argument("--bench-root", default="runs/bench",
                   help="parent of run folders; holds results.jsonl of every run and cache/ (default runs/bench)")
    p.add_argument("--syncnet", choices=["expert", "official"], default="expert",
                   help="SyncNet for LSE: the dataset's expert (trained first when missing) or the official "
                        "syncnet_v2 weights ($TALKINGHEAD_HOME/syncnet_v2.model)")
    p.add_argument("--syncnet-checkpoint", default=None, help="use this SyncNet expert checkpoint")
    p.add_argument("--syncnet-config", default="experiments/syncnet/synth.yaml",
                   help="config to train the expert with when it is missing")
    p.add_argument("--no-train-syncnet", action="store_true",
                   help="do not train a missing SyncNet expert (LSE is then n/a)")
    p.add_argument("--nlse-clips", type=int, default=50,
                   help="real train-split clips measured for NLSE-C's reference LSE-C (default 50)")
    p.add_argument("--setting", choices=SETTINGS, default=None,
                   help="self-driven, or cross-driven (another clip drives the protocol's cross sources: pose, eyes, emotion); default: the protocol's")
    p.add_argument("--split", default=None, help="split to evaluate (default: the protocol's, test)")
    p.add_argument("--seed", type=int, default=None, help="clip selection seed (default 0)")
    p.add_argument("--samples", type=int, default=2, help="clips written as side-by-side sample videos")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--published", default=None, help="YAML of published numbers (default benchmarks/published.yaml)")
    p.add_argument("--no-wandb", action="store_true", help="do not log to Weights & Biases")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="list protocols, methods and metrics, then exit")


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `bench` command to a `parser.add_subparsers()` object; returns its parser."""
    p = subparsers.add_parser("bench", help="benchmark methods on a dataset protocol (table, plots, videos)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_options(p)
    p.set_defaults(func=run_bench)
    return p


def build_config(args: argparse.Namespace) -> Any:
    """The `BenchConfig` of parsed arguments."""
    from talkinghead.bench.harness import BenchConfig

    checkpoints = {}
    for name, path in args.checkpoint:
        if name in checkpoints:
            raise ValueError(f"--checkpoint given twice for {name!r}")
        checkpoints[name] = path
    return BenchConfig(
        protocol=args.dataset, methods=list(args.methods), checkpoints=checkpoints, metrics=args.metrics,
        store=args.store, num_clips=args.clips, setting=args.setting, split=args.split, seed=args.seed,
        out=args.out, bench_root=args.bench_root, syncnet=args.syncnet, syncnet_checkpoint=args.syncnet_checkpoint,
        syncnet_config=args.syncnet_config, train_syncnet=not args.no_train_syncnet, nlse_clips=args.nlse_clips,
        device=args.device, samples=args.samples, wandb=not args.no_wandb, progress=not args.no_progress,
        published=args.published, command=list(sys.argv),
    )


def _list() -> int:
    from talkinghead.bench.methods import METHODS, method_names
    from talkinghead.metrics import METRICS, metric_names

    print("protocols (--dataset):")
    for name in protocol_names():
        p = PROTOCOLS[name]
        print(f"  {name:<14} {p.store:<24} {p.setting:<5} {p.description}")
    print("methods (--methods):")
    for name in method_names():
        print(f"  {name:<14} {METHODS[name].description}")
    print("metrics (--metrics):")
    import inspect

    for name in metric_names():
        cls = METRICS[name]
        cols = ", ".join(f"{c} {'↑' if up else '↓'}" for c, up in cls.columns.items())
        if "real_confidence" in inspect.signature(cls.__init__).parameters:
            cols += ", NLSE-C ↓ (with the real clips' LSE-C)"
        print(f"  {name:<14} {cols}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Run `talkinghead bench`; returns the exit status (module docstring)."""
    if args.list:
        return _list()
    from talkinghead.bench.harness import run_benchmark

    try:
        config = build_config(args)
        result = run_benchmark(config)
    except (KeyError, ValueError, FileNotFoundError, FileExistsError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"talkinghead bench: {message}", file=sys.stderr)
        return 2
    failed = sum(m.clips_failed for m in result.methods)
    if failed:
        print(f"talkinghead bench: {failed} clip(s) failed; see {Path(result.run_dir) / 'results.json'}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="talkinghead bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_options(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
