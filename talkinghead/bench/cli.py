"""`talkinghead bench`: benchmark methods on a dataset protocol and write the results table.

  talkinghead bench --dataset synth --methods ground_truth static
  talkinghead bench --dataset synth --methods ground_truth static pcavs pdfgc   # each method's final checkpoint
  talkinghead bench --dataset vox2 --store /data/store/vox2 --methods pcavs pdfgc \\
      --checkpoint pcavs=runs/pcavs/full/checkpoints/last.ckpt \\
      --checkpoint pdfgc=runs/pdfgc/expression/checkpoints/last.ckpt --clips 200 --syncnet official
  talkinghead bench --dataset synth-rhythmic --methods ground_truth rhythmic rhythmic_gt_pose
  talkinghead bench --list                      # protocols, methods and metrics available
  talkinghead bench --config my_bench.yaml num_clips=20 --print-config

A method's checkpoint defaults to the final one of ``talkinghead train --method M``:
``runs/<method>/<last stage>/checkpoints/last.ckpt`` (pcavs: full, pdfgc: expression, rhythmic:
joint; a method's variants such as pdfgc_fixed_pose read the same file).

Settings are the keys of `talkinghead.bench.harness.BenchConfig`, resolved as every config of the
suite (`talkinghead.config`): its defaults, then ``--config`` (a YAML file; ``inherits:`` works),
then the flags given, then ``KEY=VALUE`` words (anywhere on the line: a method name never holds
``=``). ``--print-config`` prints the result.

Also runnable on its own: ``python -m talkinghead.bench.cli ...``. Exit status: 0 when every
clip of every method was scored, 1 when the run completed with recorded failures, 2 when it
could not start (unknown name, missing store, ...), 130 / 143 when interrupted by Ctrl-C / SIGTERM
(run.json then says "interrupted"; the same command resumes the run, ``--no-resume`` starts anew).
``--check`` only validates the settings (the Makefile runs it before making a store).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from talkinghead.bench.protocol import PROTOCOLS, SETTINGS, protocol_names

__all__ = ["add_bench_parser", "build_config", "main", "resolve_settings", "run_bench"]


def _checkpoint(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected METHOD=PATH, got {text!r}")
    return name, path


#: flag destination -> BenchConfig key (flags not listed have the key's name)
FLAG_KEYS = {"dataset": "protocol", "clips": "num_clips"}
#: ``--no-X`` flags: destination -> the BenchConfig key they set to False
NEGATED = {"no_train_syncnet": "train_syncnet", "no_wandb": "wandb", "no_progress": "progress", "no_resume": "resume"}


def _add_options(p: argparse.ArgumentParser) -> None:
    """The bench flags. Their defaults are BenchConfig's (shown in the help); a flag that is not
    given sets nothing, so that ``--config`` values stay."""
    d = argparse.SUPPRESS
    p.add_argument("--config", default=None, help="YAML of bench settings (BenchConfig keys)")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    p.add_argument("--check", action="store_true",
                   help="only check the settings (protocol, methods, metrics, given checkpoints) and exit: 0 when "
                        "they are valid, 2 with the reason otherwise; makes and trains nothing")
    p.add_argument("--dataset", default=d, metavar="PROTOCOL",
                   help=f"benchmark protocol: {', '.join(protocol_names())} (default synth)")
    p.add_argument("--methods", nargs="+", default=d, help="methods to benchmark (default: ground_truth static)")
    p.add_argument("--checkpoint", type=_checkpoint, action="append", default=d, metavar="METHOD=PATH",
                   help="checkpoint of a method (repeatable); default: the method's final trained checkpoint")
    p.add_argument("--clips", type=int, default=d, help="number of test clips (default: the protocol's, 50)")
    p.add_argument("--metrics", nargs="+", default=d, help="metric names (default: every registered metric)")
    p.add_argument("--store", default=d, help="clip store folder (default: the protocol's)")
    p.add_argument("--out", default=d, help="run folder (default: <bench-root>/<timestamp>-<protocol>)")
    p.add_argument("--bench-root", default=d,
                   help="parent of run folders; holds results.jsonl of every run and cache/ (default runs/bench)")
    p.add_argument("--syncnet", choices=["expert", "official"], default=d,
                   help="SyncNet for LSE: the dataset's expert (trained first when missing; default) or the "
                        "official syncnet_v2 weights ($TALKINGHEAD_HOME/syncnet_v2.model)")
    p.add_argument("--syncnet-checkpoint", default=d, help="use this SyncNet expert checkpoint")
    p.add_argument("--syncnet-config", default=d,
                   help="config to train the expert with when it is missing (default experiments/syncnet/synth.yaml)")
    p.add_argument("--no-train-syncnet", action="store_true", default=d,
                   help="do not train a missing SyncNet expert (LSE is then n/a)")
    p.add_argument("--nlse-clips", type=int, default=d,
                   help="real train-split clips measured for NLSE-C's reference LSE-C (default 50)")
    p.add_argument("--setting", choices=SETTINGS, default=d,
                   help="self-driven, or cross-driven (another clip drives the protocol's cross sources: pose, "
                        "eyes, emotion); default: the protocol's")
    p.add_argument("--split", default=d, help="split to evaluate (default: the protocol's, test)")
    p.add_argument("--seed", type=int, default=d, help="clip selection seed (default 0)")
    p.add_argument("--control-matrix", action="store_true", default=d,
                   help="also measure each method's factor-control matrix (change one driver, see what moves)")
    p.add_argument("--control-clips", type=int, default=d, help="clips of the control matrix (default 10)")
    p.add_argument("--samples", type=int, default=d, help="clips written as side-by-side sample videos (default 2)")
    p.add_argument("--device", default=d, help="torch device (cpu, cuda, cuda:1, ...; default cpu)")
    p.add_argument("--published", default=d, help="YAML of published numbers (default benchmarks/published.yaml)")
    p.add_argument("--no-wandb", action="store_true", default=d, help="do not log to Weights & Biases")
    p.add_argument("--wandb-project", default=d,
                   help="W&B project of the bench runs, shared with training (default talkinghead; "
                        "$WANDB_PROJECT overrides)")
    p.add_argument("--no-progress", action="store_true", default=d, help="no progress bars")
    p.add_argument("--no-resume", action="store_true", default=d,
                   help="start a new run folder even when the latest run with the same settings was interrupted "
                        "(default: continue it, reusing the methods it had scored)")
    p.add_argument("--list", action="store_true", help="list protocols, methods and metrics, then exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings (BenchConfig keys), e.g. num_clips=20")


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `bench` command to a `parser.add_subparsers()` object; returns its parser."""
    p = subparsers.add_parser("bench", help="benchmark methods on a dataset protocol (table, plots, videos)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_options(p)
    p.set_defaults(func=run_bench)
    return p


def resolve_settings(args: argparse.Namespace):
    """The resolved bench settings (a `DictConfig` of `BenchConfig`): defaults, ``--config``, the
    flags given, then the ``KEY=VALUE`` words."""
    from talkinghead.bench.harness import BenchConfig
    from talkinghead.config import apply_overrides, load_config, merge_into

    given = dict(vars(args))
    words = list(given.pop("overrides", []) or [])
    if "methods" in given:  # `--methods a b KEY=VALUE`: the greedy list took the overrides too
        words += [w for w in given["methods"] if "=" in w]
        given["methods"] = [w for w in given["methods"] if "=" not in w]
    flags: dict[str, Any] = {}
    for dest, value in given.items():
        if dest in ("config", "print_config", "check", "list", "func", "command", "method", "options"):
            continue
        if dest in NEGATED:
            flags[NEGATED[dest]] = not value
        elif dest == "checkpoint":
            checkpoints: dict[str, str] = {}
            for name, path in value:
                if name in checkpoints:
                    raise ValueError(f"--checkpoint given twice for {name!r}")
                checkpoints[name] = path
            flags["checkpoints"] = checkpoints
        else:
            flags[FLAG_KEYS.get(dest, dest)] = value
    settings = load_config(BenchConfig, given.get("config"))
    settings = merge_into(settings, flags, "command-line flags")
    return apply_overrides(settings, words)


def build_config(args: argparse.Namespace) -> Any:
    """The `BenchConfig` of parsed arguments (see `resolve_settings`)."""
    from talkinghead.bench.harness import BenchConfig
    from talkinghead.config import to_dict

    values = to_dict(resolve_settings(args))
    values["command"] = values.get("command") or list(sys.argv)
    return BenchConfig(**values)


def _list() -> int:
    from talkinghead.bench.methods import METHODS, method_names
    from talkinghead.bench.records import column_direction
    from talkinghead.bench.report import column_header
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
        cols = ", ".join(column_header(c, column_direction(c, up)) for c, up in cls.columns.items())
        if "real_confidence" in inspect.signature(cls.__init__).parameters:
            cols += ", NLSE-C →0 (closer to 0 is better, ranked by |x|; with the real clips' LSE-C)"
        print(f"  {name:<14} {cols}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Run `talkinghead bench`; returns the exit status (module docstring)."""
    if args.list:
        return _list()
    from talkinghead.bench.harness import run_benchmark, validate
    from talkinghead.config import to_yaml

    try:
        if args.print_config:
            print(to_yaml(resolve_settings(args)), end="")
            return 0
        config = build_config(args)
        if getattr(args, "check", False):
            protocol = validate(config)
            print(f"talkinghead bench: settings ok (protocol {protocol.name}, store {protocol.store}, methods "
                  f"{' '.join(config.methods)})")
            return 0
        result = run_benchmark(config)
    except (KeyError, ValueError, FileNotFoundError, FileExistsError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"talkinghead bench: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:  # run.json says "interrupted"; the same command resumes
        by = getattr(error, "signal", "SIGINT")
        print(f"talkinghead bench: interrupted ({by}); run the same command again to resume", file=sys.stderr)
        return 143 if by == "SIGTERM" else 129 if by == "SIGHUP" else 130
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
