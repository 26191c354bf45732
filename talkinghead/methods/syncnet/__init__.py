"""SyncNet experts we train ourselves (the network is `talkinghead.nn.syncnet.SyncNet`).

* training: ``talkinghead train --method syncnet`` (`method.METHOD` through the staged runner;
  `module.SyncNetModule`, pairwise contrastive loss of the original paper; data from
  `data.SyncWindowDataset`); the finished stage writes ``<store>/experts/syncnet/syncnet_expert.pt``.
* `evaluate`: planted-offset recovery and real-vs-shuffled LSE-C of an expert on held-out clips.

Loading a SyncNet for scoring lives in `talkinghead.metrics.syncnet_expert` (re-exported here):
`load_official()` (the official net, LSE-C / LSE-D as published), `load_expert(checkpoint)` ->
(SyncNet, description), `save_expert`, `default_expert_path(store)`.
"""
from talkinghead.metrics.syncnet_expert import (
    OFFICIAL_NAME,
    default_expert_path,
    load_expert,
    load_official,
    save_expert,
)

__all__ = ["OFFICIAL_NAME", "default_expert_path", "load_expert", "load_official", "save_expert"]
