"""Scores of generated talking-head clips, one `torchmetrics.Metric` per score, registered by name.

Every metric follows `ClipMetric`'s conventions (see `talkinghead.metrics.base`): it is updated
once per clip with the named inputs it declares, and `compute()` returns a dict of table columns.
The harness, the LightningModules' validation and the CLI all build metrics through `build_metric`.

The built-in metric modules are imported here, by name, so that their `register_metric`
decorators fill `METRICS` whenever any part of this package is imported. A new metric module
must be added to this list. (`syncnet_expert` registers no metric: it loads SyncNets for `lse`.)
"""
from talkinghead.metrics.base import METRICS, ClipMetric, build_metric, metric_names, register_metric

# the built-in metrics (imported for their registration)
from talkinghead.metrics import cpbd, csim, factors, fid, head_motion, image, lmd, lse, pose_lmd  # noqa: F401

__all__ = ["METRICS", "ClipMetric", "build_metric", "metric_names", "register_metric"]
