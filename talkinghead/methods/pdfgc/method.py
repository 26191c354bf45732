"""PD-FGC's declaration for the method registry: stages, config, module, data, generator, importer, bench rows.

Stages (`module.PDFGCModule`): ``motion`` (E_app + E_mot + G_0, appearance / motion
disentanglement), ``fine`` (lip / eye / pose branches on the frozen motion trunk), ``expression``
(E_exp + the final generator G); each starts from the weights the earlier ones trained.
Configs: ``experiments/pdfgc/`` (``base.yaml`` the paper settings; ``synth.yaml`` the CPU default,
``tiny.yaml`` for tests, both inherit it).
"""
from __future__ import annotations

from pathlib import Path

from talkinghead.config import to_dict
from talkinghead.methods.pdfgc.config import PDFGCRunConfig
from talkinghead.training.method import BenchRow, Method, lazy_bench_row, preset_model_config, stage_data

__all__ = ["AUGMENTS", "METHOD", "build_augment", "model_config", "stage_data_size"]

STAGES = ("motion", "fine", "expression")
#: the ``augment`` names a PD-FGC config may give
AUGMENTS = ("pdfgc", "none")
#: the model sections whose null ``num_identities`` takes the store's train-speaker count
IDENTITY_SECTIONS = ("appearance", "motion")


def model_config(model: dict, num_identities: int | None = None):
    """The `PDFGCConfig` of a config's ``model`` section (preset paper|tiny plus field overrides);
    null ``num_identities`` of ``appearance`` / ``motion`` take `num_identities` (the store's train
    speakers)."""
    from talkinghead.methods.pdfgc.networks import PDFGCConfig

    def tiny(spec: dict) -> PDFGCConfig:  # sized by the frame / map sizes given
        return PDFGCConfig.tiny(image_size=int(spec.get("image_size", 56)), appearance_size=spec.get("appearance_size"),
                                map_size=(spec.get("appearance") or {}).get("map_size"),
                                motion_size=spec.get("motion_size"))

    return preset_model_config(PDFGCConfig, model, tiny, IDENTITY_SECTIONS, num_identities)


def stage_data_size(model_cfg, stage: str) -> int:
    """Side of the frames a stage's batches carry. The fine stage feeds E_mot alone (frames, eye
    donors and anchors: ``motion_input_size``); the motion and expression stages carry the largest
    size a network needs (the reference for E_app, the driving / in-window frames for E_mot, the
    targets for G), at most the store's native 224 px, and the module resizes them for each network."""
    if stage == "fine":
        return model_cfg.motion_input_size
    sizes = (model_cfg.image_size, model_cfg.reference_size, model_cfg.motion_input_size)
    return max(model_cfg.image_size, min(max(sizes), 224))


def build_augment(name: str, stage: str = "data"):
    """The augmentation object of an ``augment`` name: ``pdfgc`` = colour jitter + perspective of
    the motion branch's input (`MotionAppearanceAugment`), ``none`` = None."""
    if name == "pdfgc":
        from talkinghead.data.transforms import MotionAppearanceAugment

        return MotionAppearanceAugment()
    if name == "none":
        return None
    raise ValueError(f"data.augment / {stage}.data.augment must be one of {', '.join(AUGMENTS)}, got {name!r}")


def _model_config(cfg, stage: str):
    from talkinghead.data.store import ClipStore

    split = stage_data(cfg, stage)["train_split"]
    return model_config(to_dict(cfg.model), len(ClipStore(cfg.store).speakers(split)))


def build_data(cfg, stage: str, world_size: int):
    from talkinghead.data.datamodule import TalkingHeadDataModule

    data = stage_data(cfg, stage)
    augment = build_augment(data.pop("augment"), stage)
    if stage == "motion" and augment is None:
        raise ValueError("the motion stage reads augmented driving frames: set data.augment / motion.data.augment "
                         "to 'pdfgc'")
    in_window = int(data.pop("in_window"))
    if stage == "expression" and in_window < 1:
        raise ValueError("the expression stage averages the emotion code over in-window frames: set "
                         "expression.data.in_window >= 1 (paper 13)")
    source = data.pop("source")
    if source not in ("store", "shards"):
        raise ValueError(f"data.source / {stage}.data.source must be 'store' or 'shards', got {source!r}")
    where = {"store": str(cfg.store)} if source == "store" else {"shards": str(Path(cfg.store) / "shards")}
    scfg = cfg[stage]
    batch = int(scfg.batch_size)
    # in_window: the data module draws the window with InWindowAugment(window_size=in_window), so the
    # frames averaged are exactly the augmentation's window
    return TalkingHeadDataModule(
        **where, train_split=data.pop("train_split"),
        image_size=stage_data_size(_model_config(cfg, stage), stage), batch_size=batch, seed=int(cfg.seed),
        samples_per_epoch=int(scfg.epoch_batches) * batch * world_size, drop_last=True, persistent_workers=True,
        augment=augment, eye_pairs=bool(data.pop("eye_pairs")), in_window=in_window, **data)


def pose_statistics(store: str | Path, split: str) -> tuple[list[float], list[float]]:
    """Per-dimension mean and 1 / std of the stored poses (rotation vector, tx, ty, log scale) of
    every frame of `split`: the fine stage's pose target offset and scale with
    ``loss.pose_standardise``."""
    import numpy as np

    from talkinghead.data.store import ClipStore

    clips = ClipStore(store)
    entries = clips.clips(split)
    if not entries:
        raise ValueError(f"{store}: no clips in split {split!r} to standardise the pose prior with")
    poses = np.concatenate([np.asarray(clips.load(c, ["pose"])["pose"], np.float64).reshape(-1, 6) for c in entries])
    std = poses.std(0)
    if np.any(std <= 0):
        raise ValueError(f"{store}: pose dimension(s) {np.flatnonzero(std <= 0).tolist()} never vary in split "
                         f"{split!r}; cannot standardise the pose prior (set loss.pose_standardise: false)")
    return poses.mean(0).tolist(), (1.0 / std).tolist()


def build_module(cfg, stage: str):
    from talkinghead.methods.pdfgc.module import PDFGCModule

    scfg = cfg[stage]
    loss = to_dict(scfg.loss)
    if stage == "fine" and loss["pose_standardise"]:
        loss["pose_offset"], loss["pose_scale"] = pose_statistics(cfg.store, stage_data(cfg, stage)["train_split"])
    return PDFGCModule(stage=stage, model=_model_config(cfg, stage).to_dict(), loss=loss,
                       optim=to_dict(scfg.optim), bank_size=int(cfg.bank_size),
                       sample_every_n_steps=int(scfg.sample_every_n_steps), name=str(cfg.name),
                       gradient_clip=scfg.gradient_clip, max_nonfinite_in_a_row=int(cfg.trainer.max_nonfinite_in_a_row),
                       generator_init=str(scfg.generator_init), trunk=list(scfg.trunk))


def _generator():
    from talkinghead.methods.pdfgc.generate import PDFGCGenerator

    return PDFGCGenerator


def _official_import(path: str | Path | None = None, **kwargs):
    from talkinghead.methods.pdfgc.official import load_official

    return load_official(path, **kwargs)


def _official_fixture(folder: Path, seed: int = 0):
    """Official-layout files (``appearance_model.pth`` etc., plain state dicts without prefixes) of a
    random tiny PD-FGC in `folder`: (path, the state dict they fill in our keys, importer kwargs).
    The training-only heads the official loader skips (`official.UNFILLED`) are left out of the
    expected state: they keep their initialisation."""
    import torch

    from talkinghead.methods.pdfgc.networks import PDFGC, PDFGCConfig
    from talkinghead.methods.pdfgc.official import FILES, UNFILLED

    torch.manual_seed(seed)
    config = PDFGCConfig.tiny(image_size=32, num_identities=5)
    model = PDFGC(config)
    for component, file in FILES.items():
        torch.save(getattr(model, component).state_dict(), Path(folder) / file)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(UNFILLED)}
    return Path(folder), expected, {"config": config}


def _bench_row(builder: str, description: str, needs_checkpoint: bool = True) -> BenchRow:
    """A bench row built by `talkinghead.methods.pdfgc.bench.<builder>` (imported when built)."""
    return lazy_bench_row("talkinghead.methods.pdfgc.bench", builder, description, needs_checkpoint)


BENCH = {
    "pdfgc": _bench_row("build", "PD-FGC (ours, Lightning; pose, eyes and emotion from the request's sources)"),
    "pdfgc_fixed_pose": _bench_row("build_fixed_pose", "PD-FGC (ours), fixed pose: the reference's pose code for "
                                                       "every frame (eyes and emotion from the request's sources)"),
    "pdfgc_fixed_eye": _bench_row("build_fixed_eye", "PD-FGC (ours), fixed eyes: the reference's eye code for every "
                                                     "frame (pose and emotion from the request's sources)"),
    "pdfgc_fixed_emotion": _bench_row("build_fixed_emotion", "PD-FGC (ours), fixed emotion: the reference's emotion "
                                                             "code for every frame (pose and eyes from the request's "
                                                             "sources)"),
}


METHOD = Method(
    name="pdfgc", description="PD-FGC (Wang et al., CVPR 2023): progressive disentangled fine-grained control "
                              "(lip from audio; pose, eyes, emotion from driving videos)",
    stages=STAGES, schema=PDFGCRunConfig, build_module=build_module, build_data=build_data,
    generator=_generator, official_import=_official_import, official_state=_official_fixture, bench=BENCH,
)
