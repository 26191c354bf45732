"""SyncNet: the official evaluator (import of `syncnet_v2.model`) and SyncNet experts we train ourselves.

* `official.load_official()`: the official net (LSE-C / LSE-D as published).
* `train(config, store, out_dir)`: train an expert on any clip store (`module.SyncNetModule`,
  pairwise contrastive loss of the original paper; data from `data.SyncWindowDataset`).
* `load_expert(checkpoint)` -> (SyncNet, description); `default_checkpoint(store)`.
* `evaluate`: planted-offset recovery and real-vs-shuffled LSE-C of an expert on held-out clips.
"""
from talkinghead.methods.syncnet.official import OFFICIAL_NAME, load_official
from talkinghead.methods.syncnet.train import default_checkpoint, load_config, load_expert, save_expert, train

__all__ = ["OFFICIAL_NAME", "SyncNetModule", "default_checkpoint", "load_config", "load_expert", "load_official",
           "save_expert", "train"]


def __getattr__(name: str):
    if name == "SyncNetModule":  # imported lazily: it pulls in Lightning
        from talkinghead.methods.syncnet.module import SyncNetModule

        return SyncNetModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
