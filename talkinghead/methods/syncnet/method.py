"""The SyncNet expert's declaration for the method registry: one stage (``expert``), no generator.

``make train METHOD=syncnet`` trains a tiny expert on the SynthTalk store (experiments/syncnet/
synth.yaml); when the stage finishes, the expert file LSE scoring reads is written to
``<out>/syncnet_expert.pt`` (default out: ``<store>/experts/syncnet``, i.e.
`talkinghead.metrics.syncnet_expert.default_expert_path(store)`). The official syncnet_v2
importer is `talkinghead.metrics.syncnet_expert.load_official`.
"""
from __future__ import annotations

from pathlib import Path

from talkinghead.config import to_dict
from talkinghead.methods.syncnet.config import SyncNetRunConfig
from talkinghead.training.method import Method

__all__ = ["METHOD"]


def _net_config(cfg):
    from talkinghead.nn.syncnet import SyncNetConfig

    return SyncNetConfig.from_dict(to_dict(cfg.model))


def build_data(cfg, stage: str, world_size: int):
    from talkinghead.methods.syncnet.data import SyncNetDataModule

    scfg = cfg[stage]
    batch = int(scfg.batch_size)
    return SyncNetDataModule(cfg.store, _net_config(cfg), batch_size=batch,
                             samples_per_epoch=int(scfg.epoch_batches) * batch * world_size, seed=int(cfg.seed),
                             **to_dict(cfg.data))


def build_module(cfg, stage: str):
    from talkinghead.methods.syncnet.module import SyncNetModule

    return SyncNetModule(model=to_dict(cfg.model), name=str(cfg.name), min_shift=int(cfg.data.min_shift),
                         **to_dict(cfg.loss), **to_dict(cfg.optim), gradient_clip=cfg[stage].gradient_clip,
                         max_nonfinite_in_a_row=int(cfg.trainer.max_nonfinite_in_a_row))


def default_out(cfg) -> Path:
    """``<store>/experts/syncnet``: beside the data it was trained on, where LSE looks for it."""
    from talkinghead.metrics.syncnet_expert import default_expert_path

    return default_expert_path(cfg.store).parent


def export_expert(cfg, stage: str, checkpoint: Path, out: Path) -> Path:
    """Write ``<out>/syncnet_expert.pt`` from the finished stage's checkpoint."""
    import torch

    from talkinghead.metrics.syncnet_expert import EXPERT_FILE, load_expert, save_expert

    net, _ = load_expert(checkpoint)
    step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])
    path = save_expert(Path(out) / EXPERT_FILE, net, str(cfg.name), step, cfg.store)
    print(f"SyncNet expert: {path}", flush=True)
    return path


def _official_import(path=None, **kwargs):
    from talkinghead.metrics.syncnet_expert import load_official

    return load_official(path, **kwargs)


def _official_fixture(folder: Path, seed: int = 0):
    """A random official-size SyncNet saved in the official key layout (syncnet_v2.model)."""
    import torch

    from talkinghead.nn.syncnet import SyncNet

    torch.manual_seed(seed)
    net = SyncNet()
    state = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = Path(folder) / "syncnet_v2.model"
    torch.save(state, path)
    return path, net.state_dict(), {}


METHOD = Method(
    name="syncnet", description="SyncNet expert (Chung & Zisserman 2016) for LSE-C / LSE-D scoring, trained on "
                                "a clip store",
    stages=("expert",), schema=SyncNetRunConfig, build_module=build_module, build_data=build_data,
    official_import=_official_import, official_state=_official_fixture,
    default_out=default_out, after_stage=export_expert,  # no generator: it scores, it does not generate
)
