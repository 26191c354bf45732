"""Benchmark-harness wall time per clip, mode against mode: CSIM's descriptor in dlib's own code
(frame by frame, as before) or in torch (`talkinghead.nn.dlib_resnet`, the default), sequential
(``workers=0``) or with metric worker processes.

    python benchmarks/perf/bench.py                      # ground_truth static, 6 clips, every metric, 3 repeats
    python benchmarks/perf/bench.py --modes dlib torch   # the CSIM descriptor, before / after (the default modes)
    python benchmarks/perf/bench.py --modes torch torch:w1 --methods ground_truth static pdfgc
    python benchmarks/perf/bench.py --metrics ssim fid lmd --repeats 5 --json out.json

A mode is ``NETWORK[:wN]``: CSIM's `dlib_network` ("dlib" or "torch") and optionally N metric worker
processes (`BenchConfig.workers`, default 0); the first mode is the speed-up's baseline.

Runs `run_benchmark` on a real clip store (default: the ``synth`` protocol's, data/store/synth-vox2,
with its trained SyncNet expert) once per mode and repeat, the modes interleaved (repeat 1: every
mode, repeat 2: every mode, ...) so that the load other jobs put on a shared machine hits them alike.
No report, no sample videos; the FID real statistics and the NLSE-C reference are cached under
``--bench-root`` by building the metrics once, untimed, so the timed runs score the methods only.

Prints one row per mode, medians over the repeats:
mode (CSIM network, workers, torch threads of the harness), methods, clips, wall s (the methods' scoring, from
`MethodResult.seconds`), s/clip (wall / (methods x clips)), CPU % (process + worker CPU time / wall
of the whole `run_benchmark` call, setup included: 200 % = both cores of a 2-core machine busy), speed-up (the first mode's median wall / this one's);
then the load average before and after, whether every mode gave the same numbers (n/a, counts and
errors exactly, values to 1e-5 relative: the two CSIM networks agree to float precision, and
torch's float results can depend on its thread count), and with ``--profile`` the median seconds per metric (``metric_seconds``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkinghead.bench.harness import BenchConfig, _Runner, run_benchmark  # noqa: E402
from talkinghead.bench.protocol import get_protocol, select_clips  # noqa: E402


def _cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children (the metric workers) so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _numbers(result) -> list:
    return [(m.name, m.values, m.na, m.clips_ok, m.clips_failed, m.metric_clips, m.errors) for m in result.methods]


def _same_numbers(a: list, b: list, rtol: float = 1e-5) -> bool:
    """Two runs' `_numbers`: n/a reasons, counts and errors equal, values within `rtol`."""
    if len(a) != len(b):
        return False
    for (name, values, *rest), (name_b, values_b, *rest_b) in zip(a, b):
        if name != name_b or rest != rest_b or values.keys() != values_b.keys():
            return False
        for k in values:
            x, y = values[k], values_b[k]
            if isinstance(x, float) and isinstance(y, float):
                if not (x == y or abs(x - y) <= rtol * max(1.0, abs(y))):
                    return False
            elif x != y:
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="synth")
    parser.add_argument("--store", default=None, help="clip store (default: the protocol's)")
    parser.add_argument("--methods", nargs="+", default=["ground_truth", "static"])
    parser.add_argument("--checkpoint", action="append", default=[], metavar="METHOD=PATH")
    parser.add_argument("--metrics", nargs="+", default=None, help="default: every registered metric")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--modes", nargs="+", default=["dlib", "torch"],
                        help="NETWORK[:wN] each: CSIM's descriptor network (dlib or torch) and N metric worker "
                             "processes (default 0); the first is the speed-up's baseline")
    parser.add_argument("--threads", type=int, default=None,
                        help="BenchConfig.threads of every mode (default: each mode's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bench-root", type=Path, default=Path("runs/perf-bench"))
    parser.add_argument("--profile", action="store_true", help="also print the median seconds per metric")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)

    def parse_mode(spec: str) -> tuple[str, int]:
        network, _, workers = spec.partition(":w")
        if network not in ("dlib", "torch") or (workers and not workers.isdigit()):
            parser.error(f"mode {spec!r}: expected dlib or torch, optionally followed by :wN (e.g. torch:w1)")
        return network, int(workers or 0)

    modes = {spec: parse_mode(spec) for spec in args.modes}

    def config(spec: str, tag: str) -> BenchConfig:
        network, workers = modes[spec]
        return BenchConfig(protocol=args.protocol, store=args.store, methods=list(args.methods), checkpoints=checkpoints,
                           metrics=args.metrics, metric_options={"csim": {"dlib_network": network}},
                           num_clips=args.clips, bench_root=str(args.bench_root),
                           out=str(args.bench_root / f"{stamp}-{tag}"), samples=0, wandb=False, progress=False,
                           workers=workers, threads=args.threads, command=["benchmarks/perf/bench.py"])

    # untimed: build the metrics once, which caches FID's real statistics and NLSE-C's reference
    warm = config(args.modes[0], "warmup")
    protocol = get_protocol(warm.protocol, store=warm.store, num_clips=warm.num_clips)
    runner = _Runner(warm, lambda message: None)
    store = runner.open_store(protocol)
    runner.build_metrics(protocol, store, select_clips(store, protocol)[0])
    del runner

    runs: dict[str, list[dict]] = {spec: [] for spec in args.modes}
    numbers: dict[str, list] = {}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for spec in args.modes:
            messages: list[str] = []
            cpu = _cpu_seconds()
            wall = time.perf_counter()
            result = run_benchmark(config(spec, f"{spec.replace(':', '-')}-r{repeat}"), log=messages.append, report=False)
            wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
            scoring = sum(m.seconds for m in result.methods)
            threads = next((m.split("torch threads here ")[1].split(":")[0] for m in messages
                            if "torch threads here" in m), None)
            runs[spec].append({"wall": scoring, "total": wall, "cpu_percent": 100 * cpu / wall,
                                  "threads": threads, "metric_seconds": [m.metric_seconds for m in result.methods],
                                  "load": os.getloadavg()[0]})
            numbers.setdefault(spec, _numbers(result))
            if _numbers(result) != numbers[spec]:
                print(f"  {spec}: repeat {repeat} gave other numbers than repeat 0", flush=True)
            print(f"  repeat {repeat} {spec}: {scoring:.1f} s scoring, CPU {100 * cpu / wall:.0f} %, "
                  f"load {runs[spec][-1]['load']:.2f}", flush=True)
            for message in messages:
                if "metric worker process" in message:
                    print(f"    {message}", flush=True)
    load_after = os.getloadavg()

    clips = args.clips * len(args.methods)
    base = statistics.median(r["wall"] for r in runs[args.modes[0]])
    rows = []
    print(f"\n{'mode':36s} {'methods':24s} {'clips':>5s} {'wall s':>8s} {'s/clip':>7s} {'CPU %':>6s} {'speed-up':>8s}")
    for spec in args.modes:
        network, workers = modes[spec]
        wall = statistics.median(r["wall"] for r in runs[spec])
        threads = runs[spec][0]["threads"] or (str(args.threads) if args.threads else "default")
        mode = (f"csim {network}, " + (f"workers={workers}, threads={threads}" if workers
                                        else f"sequential, threads={args.threads or 'default'}"))
        row = {"mode": mode, "spec": spec, "workers": workers, "csim_network": network,
               "methods": " ".join(args.methods), "clips": clips,
               "wall_s": round(wall, 1), "s_per_clip": round(wall / clips, 2),
               "cpu_percent": round(statistics.median(r["cpu_percent"] for r in runs[spec])),
               "speed_up": round(base / wall, 2), "walls": [round(r["wall"], 1) for r in runs[spec]]}
        rows.append(row)
        print(f"{mode:36s} {row['methods']:24s} {clips:5d} {row['wall_s']:8.1f} {row['s_per_clip']:7.2f} "
              f"{row['cpu_percent']:6d} {row['speed_up']:7.2f}x   (walls {row['walls']})")
    print(f"load average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, "
          f"after {tuple(round(x, 2) for x in load_after)}; {os.cpu_count()} cores")
    first = numbers[args.modes[0]]
    same = all(_same_numbers(numbers[spec], first) for spec in args.modes)
    print(f"same numbers in every mode (values to 1e-5 relative): {'yes' if same else 'NO'}")
    if args.profile:
        print("\nmedian seconds per metric (summed over methods):")
        for spec in args.modes:
            totals: dict[str, list[float]] = {}
            for r in runs[spec]:
                summed: dict[str, float] = {}
                for per_method in r["metric_seconds"]:
                    for k, v in per_method.items():
                        summed[k] = summed.get(k, 0.0) + v
                for k, v in summed.items():
                    totals.setdefault(k, []).append(v)
            print(f"  {spec}: " + ", ".join(f"{k} {statistics.median(v):.1f}"
                                           for k, v in sorted(totals.items(), key=lambda kv: -max(kv[1]))))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load_before": load_before, "load_after": load_after,
                                         "same_numbers": same, "runs": runs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
