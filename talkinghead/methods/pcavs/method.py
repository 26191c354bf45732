"""PC-AVS's declaration for the method registry: stages, config, module, data, generator, importer, bench rows.

Stages (`module.PCAVSModule`): ``identity`` (E_i), ``sync`` (E_n + E_c^a, contrastive), ``full``
(everything + the discriminator); each starts from the weights the earlier ones trained.
Configs: ``experiments/pcavs/`` (``base.yaml`` the paper settings; ``synth.yaml`` the CPU default,
``vox2.yaml``, ``lrw.yaml`` inherit it).
"""
from __future__ import annotations

from pathlib import Path

from talkinghead.config import to_dict
from talkinghead.methods.pcavs.config import PCAVSRunConfig
from talkinghead.training.method import BenchRow, Method, lazy_bench_row, preset_model_config, stage_data

__all__ = ["METHOD", "model_config", "stage_data_size"]

STAGES = ("identity", "sync", "full")


def model_config(model: dict, num_identities: int | None = None):
    """The `PCAVSConfig` of a config's ``model`` section (preset paper|tiny plus field overrides);
    null ``num_identities`` fields take `num_identities` (the store's train speakers)."""
    from talkinghead.methods.pcavs.networks import PCAVSConfig

    def tiny(spec: dict) -> PCAVSConfig:  # sized by the frame / map sizes given
        return PCAVSConfig.tiny(image_size=int(spec.get("image_size", 56)), identity_size=spec.get("identity_size"),
                                map_size=(spec.get("identity") or {}).get("map_size"),
                                content_size=spec.get("content_size"))

    return preset_model_config(PCAVSConfig, model, tiny, ("identity", "nonidentity", "audio"), num_identities)


def stage_data_size(model_cfg, stage: str) -> int:
    """Side of the frames a stage's batches carry. The sync stage feeds E_n alone
    (``content_input_size``); the others carry the largest size a network needs (the reference
    for E_i, the targets for G), at most the store's native 224 px, and the module resizes them
    for each network."""
    if stage == "sync":
        return model_cfg.content_input_size
    sizes = (model_cfg.image_size, model_cfg.reference_size, model_cfg.content_input_size)
    return max(model_cfg.image_size, min(max(sizes), 224))


def _model_config(cfg, stage: str):
    from talkinghead.data.store import ClipStore

    split = stage_data(cfg, stage)["train_split"]
    return model_config(to_dict(cfg.model), len(ClipStore(cfg.store).speakers(split)))


def build_data(cfg, stage: str, world_size: int):
    from talkinghead.data.datamodule import TalkingHeadDataModule

    data = stage_data(cfg, stage)
    augment = data.pop("augment")
    if augment == "pcavs":
        from talkinghead.methods.pcavs.augment import PCAVSAugment

        augment = PCAVSAugment()
    elif augment == "none":
        augment = None
    else:
        raise ValueError(f"data.augment / {stage}.data.augment must be 'pcavs' or 'none', got {augment!r}")
    source = data.pop("source")
    if source not in ("store", "shards"):
        raise ValueError(f"data.source / {stage}.data.source must be 'store' or 'shards', got {source!r}")
    where = {"store": str(cfg.store)} if source == "store" else {"shards": str(Path(cfg.store) / "shards")}
    scfg = cfg[stage]
    batch = int(scfg.batch_size)
    return TalkingHeadDataModule(
        **where, train_split=data.pop("train_split"),
        image_size=stage_data_size(_model_config(cfg, stage), stage), batch_size=batch, seed=int(cfg.seed),
        samples_per_epoch=int(scfg.epoch_batches) * batch * world_size, drop_last=True, persistent_workers=True,
        augment=augment, **data)


def build_module(cfg, stage: str):
    from talkinghead.methods.pcavs.module import PCAVSModule

    scfg = cfg[stage]
    return PCAVSModule(stage=stage, model=_model_config(cfg, stage).to_dict(), loss=to_dict(scfg.loss),
                       optim=to_dict(scfg.optim), sample_every_n_steps=int(scfg.sample_every_n_steps),
                       name=str(cfg.name), gradient_clip=scfg.gradient_clip,
                       max_nonfinite_in_a_row=int(cfg.trainer.max_nonfinite_in_a_row))


def _generator():
    from talkinghead.methods.pcavs.generate import PCAVSGenerator

    return PCAVSGenerator


def _official_import(path: str | Path | None = None, **kwargs):
    from talkinghead.methods.pcavs.official import load_official

    return load_official(path, **kwargs)


def _official_fixture(folder: Path, seed: int = 0):
    """Official-layout files (``latest_net_*.pth``, plain state dicts) of a random tiny PC-AVS in
    `folder`: (path, the state dict they hold in our keys, importer kwargs)."""
    import torch

    from talkinghead.methods.pcavs.networks import PCAVS, PCAVSConfig
    from talkinghead.methods.pcavs.official import FILES

    torch.manual_seed(seed)
    config = PCAVSConfig.tiny(image_size=32, num_identities=5)
    model = PCAVS(config)
    for component, file in FILES.items():
        torch.save(getattr(model, component).state_dict(), Path(folder) / file)
    return Path(folder), model.state_dict(), {"config": config}


def _bench_row(builder: str, description: str, needs_checkpoint: bool = True) -> BenchRow:
    """A bench row built by `talkinghead.methods.pcavs.bench.<builder>` (imported when built)."""
    return lazy_bench_row("talkinghead.methods.pcavs.bench", builder, description, needs_checkpoint)


BENCH = {
    "pcavs": _bench_row("build", "PC-AVS (ours, Lightning; pose from the pose source)"),
    "pcavs_fixed_pose": _bench_row("build_fixed_pose", "PC-AVS (ours), fixed pose: the reference's pose code "
                                                       "for every frame (paper's Ours-Fix Pose)"),
    "pcavs_official": _bench_row("build_official", "PC-AVS official checkpoint (published weights)",
                                 needs_checkpoint=False),
}


METHOD = Method(
    name="pcavs", description="PC-AVS (Zhou et al., CVPR 2021): identity / speech-content / pose spaces, "
                              "modulated-conv generator",
    stages=STAGES, schema=PCAVSRunConfig, build_module=build_module, build_data=build_data,
    generator=_generator, official_import=_official_import, official_state=_official_fixture, bench=BENCH,
)
