"""The benchmark: protocols (which clips, which driving signals), the harness that runs methods
and metrics over them, and the report (table, CSV, JSON lines, plots, sample videos, W&B).

  from talkinghead.bench import BenchConfig, run_benchmark
  result = run_benchmark(BenchConfig(protocol="synth", methods=["ground_truth", "static"]))

Methods: the baselines and every registered method's bench rows (`talkinghead.bench.methods`).
"""
from talkinghead.bench.methods import (
    GenerationRequest,
    TalkingHeadGenerator,
    build_method,
    method_names,
    register_method,
)
from talkinghead.bench.protocol import PROTOCOLS, Protocol, get_protocol, protocol_names, select_clips

__all__ = [
    "PROTOCOLS",
    "BenchConfig",
    "GenerationRequest",
    "Protocol",
    "TalkingHeadGenerator",
    "build_method",
    "get_protocol",
    "method_names",
    "protocol_names",
    "register_method",
    "run_benchmark",
    "select_clips",
]


def __getattr__(name: str):
    """The harness (torch metrics, tqdm) is imported on first use."""
    if name in ("BenchConfig", "run_benchmark"):
        from talkinghead.bench import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'talkinghead.bench' has no attribute {name!r}")
