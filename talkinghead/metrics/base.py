"""The metric base class and the name -> class registry.

Clip inputs (the names a metric lists in `inputs`; the harness passes exactly those):

    fake            float32 (T, 3, H, W) generated frames, RGB in [0, 1] (H = W = 224 unless stated)
    real            float32 (T, 3, H, W) ground-truth frames of the same clip, RGB in [0, 1]
    audio           float32 (N,) the driving audio, 16 kHz mono in [-1, 1]
    reference       float32 (3, H, W) the identity reference image, RGB in [0, 1]
    real_landmarks  float32 (T, 68, 2) dlib-68 landmarks of `real` (a cache; optional)
    pose_landmarks  float32 (T, 68, 2) dlib-68 landmarks of the pose-source frame that drove each
                    generated frame (the clip itself when self-driven, another clip when cross-driven)
    fake_landmarks  float32 (T, 68, 2) dlib-68 landmarks of `fake`, detected once by the harness for
                    every landmark metric (a cache; optional)
    driver_truth    float32 (T, 7) SynthTalk ground truth of each factor's driver at each frame
                    (`talkinghead.metrics.factors.DRIVER_TRUTH_COLUMNS`), NaN where there is none
    emotion_targets float32 (K, 5) mean expression features of the reference identity's real clips,
                    one per emotion, and emotion_target () int64 the driver's row (MEAD layout with
                    an emotion source only; None otherwise, so only as optional inputs)

`update(**inputs)` takes one clip; `compute()` returns ``{column: 0-d tensor}``, the columns of
the results table (a metric may fill several, e.g. LSE-C and LSE-D). `columns` maps each column
to True when higher is better, False when lower is better. A metric whose pretrained weights are
missing raises `talkinghead.weights.MissingWeightsError` from its constructor; the harness then
shows "n/a" with the reason.

Registry: `METRICS` (name -> class) is filled by the `register_metric` decorators of the metric
modules. `talkinghead/metrics/__init__.py` imports every built-in metric module by name, and
importing this module imports that package first, so `metric_names()` / `build_metric()` always
see the built-in metrics (plus any registered later, e.g. by tests or plug-ins).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

from torchmetrics import Metric

__all__ = ["METRICS", "ClipMetric", "build_metric", "metric_names", "register_metric"]


class ClipMetric(Metric):
    """A per-clip score, averaged over clips (or pooled, e.g. FID). See the module docstring."""

    inputs: ClassVar[tuple[str, ...]] = ()
    columns: ClassVar[dict[str, bool]] = {}
    full_state_update = False
    # update() and compute() stay abstract (torchmetrics.Metric declares them so).


METRICS: dict[str, type[ClipMetric]] = {}


def register_metric(name: str) -> Callable[[type[ClipMetric]], type[ClipMetric]]:
    """Class decorator: make the metric buildable as `build_metric(name)`."""

    def add(cls: type[ClipMetric]) -> type[ClipMetric]:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        cls.metric_name = name
        METRICS[name] = cls
        return cls

    return add


def metric_names() -> list[str]:
    """Names of every registered metric (the built-in ones are registered when the package
    `talkinghead.metrics` is imported, i.e. before this module can be used)."""
    return sorted(METRICS)


def build_metric(name: str, **kwargs: Any) -> ClipMetric:
    """An instance of metric `name`; an unknown name lists the valid ones."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; choose from: {', '.join(sorted(METRICS))}")
    return METRICS[name](**kwargs)
