"""What every method trains with, and nothing method-specific.

* `config`: the config schema every run shares (`RunConfig`, `StageConfig`, trainer / logger /
  validation sections); a method's schema subclasses it.
* `module`: `StagedModule`, the LightningModule base (freezing, lr groups, the non-finite guard,
  EMA, gradient clipping, sample grids, validation steps).
* `runner`: `train(method, config, overrides)`: the method's stages in order, each a resumable
  Lightning fit, with loggers, checkpoints and scale-out from the config.
* `callbacks`: stage budget, throughput, stage-end samples, batch records (tests).
* `validation`: held-out clips generated and scored with the harness's metrics during training.
* `method`: the `Method` contract each method folder declares (read by the registry).

Submodules are imported by name (``from talkinghead.training.runner import train``); this package
imports nothing itself, so listing methods stays cheap.
"""
