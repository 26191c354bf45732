"""Rhythmic Head's declaration for the method registry: stages, config, module, data, importer.

Stages (`module.RhythmicModule`): ``expression`` (Psi, the facial expression learner), ``head_motion``
(Phi, the head-motion learner), ``generator`` (Theta on ground-truth landmarks and poses), ``joint``
(Theta on Psi's landmarks posed with Phi's poses, Psi and Phi frozen); each starts from the weights
the earlier ones trained. Configs: ``experiments/rhythmic/`` (``base.yaml`` the paper settings;
``synth.yaml`` the CPU default, ``tiny.yaml`` for tests, ``vox2.yaml``).

Data per stage (one `TalkingHeadDataModule` each): every stage reads the tau frames before its
window as the reference context (``reference_span`` = ``model.tau``); ``expression`` and
``head_motion`` read no images (``decode_frames=False``) but the 4480-sample audio windows (7 chunks
of 640 around each frame: Phi's input, and Psi's waveform rebuilt from them); ``generator`` reads the
window frames and K = ``model.num_references`` reference frames drawn among the context frames;
``joint`` reads both. Frames, landmarks and references come at ``model.image_size``.

Generation: `generate.RhythmicGenerator` (reference video + audio, ``--pose-source``,
``--references``, ``--finetune-steps``); bench rows ``rhythmic`` / ``rhythmic_gt_pose`` (`bench.py`).
The official image generator ``latest_net_G.pth`` imports into the `Composer` (``model.generator``)
through `talkinghead.methods.rhythmic.official.load_official`.
"""
from __future__ import annotations

from pathlib import Path

from talkinghead.config import to_dict
from talkinghead.methods.rhythmic.config import RhythmicRunConfig
from talkinghead.training.method import BenchRow, Method, lazy_bench_row, preset_model_config, stage_data

__all__ = ["METHOD", "build_data", "build_module", "model_config"]

STAGES = ("expression", "head_motion", "generator", "joint")
SEQUENCE_STAGES = ("expression", "head_motion")


def model_config(model: dict | None):
    """The `RhythmicConfig` of a config's ``model`` section (preset paper|tiny plus field overrides;
    the tiny preset is sized by the section's ``image_size`` / ``tau`` / ``num_references``)."""
    from talkinghead.methods.rhythmic.networks import RhythmicConfig

    def tiny(spec: dict) -> RhythmicConfig:
        return RhythmicConfig.tiny(image_size=int(spec.get("image_size", 64)), tau=int(spec.get("tau", 16)),
                                   num_references=int(spec.get("num_references", 2)))

    return preset_model_config(RhythmicConfig, model, tiny, ())


def _source_path(cfg, source: str) -> str:
    if source not in ("store", "shards"):
        raise ValueError(f"data.source must be 'store' or 'shards', got {source!r}")
    return str(cfg.store) if source == "store" else str(Path(cfg.store) / "shards")


def build_data(cfg, stage: str, world_size: int):
    from talkinghead.data.datamodule import TalkingHeadDataModule

    data = stage_data(cfg, stage)
    mcfg = model_config(to_dict(cfg.model))
    source = data.pop("source")
    where = {source: _source_path(cfg, source)}
    scfg = cfg[stage]
    batch = int(scfg.batch_size)
    window = int(data.pop("window"))
    if stage == "head_motion" and window < 3:
        raise ValueError("the head_motion stage predicts the window's motion and its discriminator reads motion "
                         "statistics over it: set head_motion.data.window >= 3")
    images = stage not in SEQUENCE_STAGES
    return TalkingHeadDataModule(
        **where, train_split=data.pop("train_split"), window=window,
        num_references=mcfg.num_references if images else 0, reference_span=mcfg.tau, decode_frames=images,
        audio_samples=0 if stage == "generator" else mcfg.head_motion.window_samples,
        image_size=mcfg.image_size, batch_size=batch, seed=int(cfg.seed),
        samples_per_epoch=int(scfg.epoch_batches) * batch * world_size, drop_last=True, persistent_workers=True,
        num_workers=int(data.pop("num_workers")))


def build_module(cfg, stage: str):
    from talkinghead.methods.rhythmic.module import RhythmicModule

    scfg = cfg[stage]
    data = stage_data(cfg, stage)
    return RhythmicModule(stage=stage, model=model_config(to_dict(cfg.model)).to_dict(), loss=to_dict(scfg.loss),
                          optim=to_dict(scfg.optim), worst_match_prob=float(scfg.worst_match_prob),
                          store=_source_path(cfg, data["source"]), train_split=data["train_split"],
                          sample_every_n_steps=int(scfg.sample_every_n_steps), name=str(cfg.name),
                          gradient_clip=scfg.gradient_clip, max_nonfinite_in_a_row=int(cfg.trainer.max_nonfinite_in_a_row))


def _official_import(path: str | Path | None = None, **kwargs):
    """The official ``latest_net_G.pth`` as our `Composer` (`official.load_official`)."""
    from talkinghead.methods.rhythmic.official import load_official

    return load_official(path, **kwargs)


def _official_fixture(folder: Path, seed: int = 0):
    """An official-layout ``latest_net_G.pth`` (a plain state dict, official keys, spectral-norm
    ``weight_orig`` / ``weight_u`` / ``weight_v`` included) of a random tiny hybrid generator in
    `folder`: (path, the state dict it fills in our keys, importer kwargs). Our keys are the official
    ones (`official.KEY_MAP` maps every prefix to itself)."""
    import torch

    from talkinghead.methods.rhythmic.composer import Composer, ComposerConfig
    from talkinghead.methods.rhythmic.official import FILE

    torch.manual_seed(seed)
    model = Composer(ComposerConfig.tiny())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = Path(folder) / FILE
    torch.save(state, path)
    return path, state, {}


def _generator():
    from talkinghead.methods.rhythmic.generate import RhythmicGenerator

    return RhythmicGenerator


def _bench_row(builder: str, description: str, needs_checkpoint: bool = True) -> BenchRow:
    """A bench row built by `talkinghead.methods.rhythmic.bench.<builder>` (imported when built)."""
    return lazy_bench_row("talkinghead.methods.rhythmic.bench", builder, description, needs_checkpoint)


BENCH = {
    "rhythmic": _bench_row("build", "Rhythmic Head (ours, Lightning; expression and head motion from the audio)"),
    "rhythmic_gt_pose": _bench_row("build_gt_pose", "Rhythmic Head (ours), head poses of the request's pose source "
                                                    "(ground truth when self-driven)"),
}


METHOD = Method(
    name="rhythmic", description="Rhythmic Head (Chen et al., ECCV 2020): audio-driven expression and rhythmic "
                                 "head motion from a short reference video, 3D-aware few-shot generator",
    stages=STAGES, schema=RhythmicRunConfig, build_module=build_module, build_data=build_data,
    generator=_generator, official_import=_official_import, official_state=_official_fixture, bench=BENCH,
)
