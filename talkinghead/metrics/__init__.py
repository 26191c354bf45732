"""Scores of generated talking-head clips, one `torchmetrics.Metric` per score, registered by name.

Every metric follows `ClipMetric`'s conventions (see `talkinghead.metrics.base`): it is updated
once per clip with the named inputs it declares, and `compute()` returns a dict of table columns.
The harness, the LightningModules' validation and the CLI all build metrics through `build_metric`.
"""
from talkinghead.metrics.base import METRICS, ClipMetric, build_metric, metric_names, register_metric

__all__ = ["METRICS", "ClipMetric", "build_metric", "metric_names", "register_metric"]
