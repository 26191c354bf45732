"""Train PC-AVS: the stages identity -> sync -> full in order, each resumable, from one YAML config.

    python -m talkinghead.methods.pcavs.train --config experiments/pcavs/synth.yaml
    python -m talkinghead.methods.pcavs.train --config experiments/pcavs/vox2.yaml --store /data/store/vox2 \\
        --set trainer.accelerator=gpu trainer.devices=8 trainer.strategy=ddp

`train(config, ...)` returns the final checkpoint of the last stage it ran
(``<out>/full/checkpoints/last.ckpt`` for the default stages). Layout of ``<out>`` (default
``runs/pcavs``)::

    <out>/config.yaml                   the resolved config of the last call
    <out>/<stage>/config.yaml           the resolved config of that stage (beside its checkpoints)
    <out>/<stage>/checkpoints/last.ckpt Lightning checkpoint (weights incl. netD, optimisers, step,
                                        epoch, callback state), written at every epoch end
    <out>/<stage>/done.json             written when the stage finished (steps, minutes, checkpoint)
    <out>/<stage>/logs/version_<n>/     CSV logs (metrics.csv, hparams.yaml) and samples/*.png
    <out>/<stage>/wandb/                W&B run files (offline unless WANDB_API_KEY is set)

Stages: a finished stage (done.json) is skipped; an unfinished one with a ``last.ckpt`` resumes
from it (optimisers, global step, epoch and data position: a training "epoch" is
``epoch_batches`` batches, ``max_steps`` is rounded up to whole epochs, and checkpoints and
time-limit stops happen at epoch ends only, so the next sample after a resume is exactly the one
an uninterrupted run would have drawn); a new one
starts from the weights the earlier stages trained (`module.STAGE_OUTPUTS`: netV from
``identity``, netE + netA_sync from ``sync``).

DDP is Trainer configuration (``trainer.strategy: ddp``, ``devices``, ``num_nodes``); ``ddp`` is
built as ``DDPStrategy(find_unused_parameters=True)`` (gloo on CPU) because the generator and
discriminator steps of the GAN each leave the other's parameters without gradients.

The clip store: when ``store`` has no ``index.json`` and ``make_store`` is true (the SynthTalk
config), SynthTalk in the VoxCeleb2 layout is generated and preprocessed first, exactly as
``talkinghead data`` does (`SynthConfig` defaults; raw corpus in ``<store>/../../synthtalk/vox2``).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml

from talkinghead.config import deep_update, merge_config, read_yaml_mapping
from talkinghead.fileio import atomic_write_text

__all__ = ["CONFIG_DIR", "DEFAULTS", "STAGES", "final_checkpoint", "load_config", "resolve_config", "train"]

CONFIG_DIR = Path(__file__).resolve().parents[3] / "experiments" / "pcavs"
STAGES = ("identity", "sync", "full")

_STAGE_DEFAULTS: dict[str, Any] = {
    "batch_size": 16,
    "max_steps": 1000,          # training batches (not optimiser steps)
    "max_minutes": None,        # wall-clock budget, checked at epoch ends (cumulative over resumes)
    "epoch_batches": 100,       # batches per epoch = checkpoint interval
    "sample_every_n_steps": 200,
    "data": {},                 # overrides of the shared `data` section
    "optim": {},                # module.OPTIM_DEFAULTS overrides
    "loss": {},                 # module.LOSS_DEFAULTS overrides
}

#: Every key a config may set, with its default (experiments/pcavs/*.yaml override these).
DEFAULTS: dict[str, Any] = {
    "name": "pcavs",
    "seed": 0,
    "store": "data/store/synth-vox2",
    "make_store": False,        # generate + preprocess SynthTalk vox2 when the store is missing
    "out": "runs/pcavs",
    "stages": list(STAGES),
    "model": {"preset": "paper"},   # PCAVSConfig: preset paper|tiny plus any field overrides
    "data": {                   # TalkingHeadDataModule arguments shared by the stages
        "train_split": "train",
        "window": 1,
        "num_references": 1,
        "num_negatives": 0,
        "num_shifted": 0,
        "min_shift": 5,
        "augment": "none",
        "num_workers": 0,
    },
    "trainer": {
        "accelerator": "auto",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "32-true",
        "num_threads": None,    # torch intra-op threads (1 is fastest for the tiny nets on a shared CPU)
        "log_every_n_steps": 10,
        "wandb": True,          # W&B logger when wandb is installed (offline without WANDB_API_KEY)
        "progress": True,
    },
    "identity": copy.deepcopy(_STAGE_DEFAULTS),
    "sync": copy.deepcopy(_STAGE_DEFAULTS),
    "full": copy.deepcopy(_STAGE_DEFAULTS),
}

_FREE_FORM = {"model", "data", "optim", "loss"}


def _merge(base: dict, override: dict | None, where: str = "config") -> dict:
    return merge_config(base, override, where, _FREE_FORM)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(config: dict, overrides: Iterable[str] | dict | None) -> dict:
    """``["full.max_steps=10", "trainer.devices=2"]`` or ``{"full.max_steps": 10}`` -> updated copy."""
    out = copy.deepcopy(config)
    if not overrides:
        return out
    items = overrides.items() if isinstance(overrides, dict) else (o.split("=", 1) for o in overrides)
    for item in items:
        if len(item) != 2:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        key, value = item
        value = _parse_value(value) if isinstance(value, str) else value
        node = out
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {part!r} is not a mapping")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """A YAML config merged over `DEFAULTS` (default file: experiments/pcavs/synth.yaml)."""
    path = Path(path) if path is not None else CONFIG_DIR / "synth.yaml"
    raw = read_yaml_mapping(path, "PC-AVS config")
    return _merge(DEFAULTS, raw, str(path))


def resolve_config(config: str | Path | dict | None, overrides: Iterable[str] | dict | None = None) -> dict:
    """Config path / dict / None (synth.yaml) + overrides -> full config (DEFAULTS filled in)."""
    if config is None or isinstance(config, (str, Path)):
        base = load_config(config)
    else:
        base = _merge(DEFAULTS, config)
    merged = apply_overrides(base, overrides)
    return _merge(DEFAULTS, merged)  # validates the overridden keys


def model_config(model: dict, num_identities: int | None = None):
    """The `PCAVSConfig` of a config's ``model`` section; null ``num_identities`` fields take
    `num_identities` (the store's train speakers)."""
    from talkinghead.methods.pcavs.networks import PCAVSConfig

    spec = copy.deepcopy(model or {})
    preset = spec.pop("preset", "paper")
    if preset not in ("paper", "tiny"):
        raise ValueError(f"model.preset must be 'paper' or 'tiny', got {preset!r}")
    if preset == "paper":
        base = PCAVSConfig.paper()
    else:  # the tiny preset is sized by the frame / map sizes given; explicit fields still override it
        base = PCAVSConfig.tiny(image_size=int(spec.get("image_size", 56)), identity_size=spec.get("identity_size"),
                                map_size=(spec.get("identity") or {}).get("map_size"),
                                content_size=spec.get("content_size"))
    values = deep_update(base.to_dict(), spec)
    for section in ("identity", "nonidentity", "audio"):
        if values[section].get("num_identities", 0) is None:
            if num_identities is None:
                raise ValueError(f"model.{section}.num_identities is null and no store gives the speaker count")
            values[section]["num_identities"] = int(num_identities)
    return PCAVSConfig.from_dict(values)


def stage_data_size(model_cfg, stage: str) -> int:
    """Side of the frames a stage's batches carry. The sync stage feeds E_n alone
    (``content_input_size``); the others carry the largest size a network needs (the reference
    for E_i, the targets for G), at most the store's native 224 px, and the module resizes them
    for each network."""
    if stage == "sync":
        return model_cfg.content_input_size
    sizes = (model_cfg.image_size, model_cfg.reference_size, model_cfg.content_input_size)
    return max(model_cfg.image_size, min(max(sizes), 224))


def final_checkpoint(out: str | Path = "runs/pcavs", stage: str = "full") -> Path:
    """Where `train` leaves a stage's final checkpoint: ``<out>/<stage>/checkpoints/last.ckpt``."""
    return Path(out) / stage / "checkpoints" / "last.ckpt"


# ---------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------
def ensure_store(store: Path, make: bool, progress: bool = True, workers: int = 2) -> Path:
    """Return `store`; when it has no index.json and `make`, generate + preprocess SynthTalk vox2
    into it as ``talkinghead data`` does."""
    if (store / "index.json").is_file():
        return store
    if not make:
        raise FileNotFoundError(f"{store}: not a clip store (no index.json); run `talkinghead data` (SynthTalk) or "
                                f"`talkinghead preprocess` first, or set make_store: true")
    from talkinghead.data.preprocess import preprocess_corpus
    from talkinghead.data.synthtalk.generate import SynthConfig, generate

    raw = (store.parent.parent if store.parent.name == "store" else store.parent) / "synthtalk" / "vox2"
    started = time.perf_counter()
    print(f"PC-AVS: clip store {store} missing: generating SynthTalk vox2 in {raw} and preprocessing it", flush=True)
    result = generate(raw, SynthConfig(layout="vox2"), workers=workers, progress=progress)
    if result["failed"]:
        print(f"  {len(result['failed'])} SynthTalk clips failed: {result['failed'][:3]}", flush=True)
    report = preprocess_corpus("vox2", raw, store, workers=workers, progress=progress)
    print(f"PC-AVS: store ready ({report['clips']} clips, {len(report['failed'])} bad inputs) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return store


# ---------------------------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------------------------
def _callbacks():
    from lightning.pytorch.callbacks import Callback

    class EpochTimeBudget(Callback):
        """Stop at the first epoch end after `minutes` of training (cumulative over resumes)."""

        def __init__(self, minutes: float | None):
            self.minutes = minutes
            self.elapsed = 0.0
            self._start: float | None = None

        def on_train_start(self, trainer, pl_module) -> None:
            self._start = time.perf_counter()

        def _total(self) -> float:
            return self.elapsed + (time.perf_counter() - self._start if self._start is not None else 0.0)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            total = self._total()
            pl_module.log("train/minutes", total / 60.0, on_step=False, on_epoch=True, sync_dist=False)
            if self.minutes is None:
                return
            stop = total >= 60.0 * float(self.minutes)
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            if stop:
                trainer.should_stop = True

        def state_dict(self) -> dict:
            return {"elapsed": self._total()}

        def load_state_dict(self, state_dict: dict) -> None:
            self.elapsed = float(state_dict.get("elapsed", 0.0))

    class RecordBatches(Callback):
        """Debug record (DDP test): per rank, the (clip, frames) of every batch and a digest of the
        final parameters, written to `<folder>/rank<r>.json`."""

        def __init__(self, folder: Path):
            self.folder = Path(folder)
            self.batches: list = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            key = "augmented" if "augmented" in batch else "frames"
            digests = [hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest()[:16] for x in batch[key]]
            self.batches.append({"step": int(trainer.global_step), "clip_index": batch["clip_index"].tolist(),
                                 "frame_index": batch["frame_index"].tolist(), "samples": digests})

        def on_train_end(self, trainer, pl_module) -> None:
            digest = hashlib.sha256()
            for name, p in sorted(pl_module.named_parameters()):
                digest.update(name.encode())
                digest.update(p.detach().cpu().float().numpy().tobytes())
            self.folder.mkdir(parents=True, exist_ok=True)
            rank = trainer.global_rank
            (self.folder / f"rank{rank}.json").write_text(json.dumps({
                "rank": rank, "world_size": trainer.world_size, "global_step": int(trainer.global_step),
                "batches": self.batches, "params_sha256": digest.hexdigest()}))

    return EpochTimeBudget, RecordBatches


# ---------------------------------------------------------------------------------------------
# one stage
# ---------------------------------------------------------------------------------------------
def _strategy(name: Any, accelerator: str):
    if isinstance(name, str) and name in ("ddp", "ddp_spawn"):
        from lightning.pytorch.strategies import DDPStrategy

        backend = "gloo" if accelerator == "cpu" else None
        return DDPStrategy(find_unused_parameters=True, process_group_backend=backend,
                           start_method="spawn" if name == "ddp_spawn" else "popen")
    return name


def _world_size(tcfg: dict) -> int:
    devices = tcfg["devices"]
    per_node = devices if isinstance(devices, int) and devices > 0 else (len(devices) if isinstance(devices, list) else 1)
    return int(per_node) * int(tcfg["num_nodes"] or 1)


def _stage_data(cfg: dict, stage: str) -> dict:
    """The data-module arguments of `stage`: the shared ``data`` section updated by the stage's own."""
    return deep_update(cfg["data"], cfg[stage]["data"] or {})


def _datamodule(cfg: dict, stage: str, image_size: int, world: int, seed: int):
    from talkinghead.data.datamodule import TalkingHeadDataModule

    scfg = cfg[stage]
    data = _stage_data(cfg, stage)
    batch = int(scfg["batch_size"])
    epoch_batches = int(scfg["epoch_batches"])
    return TalkingHeadDataModule(
        store=str(cfg["store"]), train_split=data.pop("train_split", "train"), image_size=image_size,
        batch_size=batch, seed=seed, samples_per_epoch=epoch_batches * batch * world, drop_last=True,
        persistent_workers=True, **data)


def _run_stage(cfg: dict, stage: str, out: Path, *, record: bool, progress: bool) -> Path | None:
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from talkinghead.methods.pcavs.module import STAGE_OUTPUTS, PCAVSModule
    from talkinghead.methods.pcavs.networks import PCAVSConfig

    scfg, tcfg = cfg[stage], cfg["trainer"]
    stage_dir = out / stage
    last = final_checkpoint(out, stage)
    done_file = stage_dir / "done.json"
    max_steps = int(scfg["max_steps"])
    if done_file.is_file():
        done = json.loads(done_file.read_text())
        if int(done.get("max_steps", 0)) >= max_steps or done.get("stopped_by") == "time":
            print(f"PC-AVS {stage}: already trained ({done.get('batches')} batches) -> {last}", flush=True)
            return last
    seed = int(cfg["seed"])
    seed_everything(seed, workers=True)
    world = _world_size(tcfg)

    from talkinghead.data.store import ClipStore

    split = _stage_data(cfg, stage).get("train_split", "train")
    num_speakers = len(ClipStore(cfg["store"]).speakers(split))
    model_cfg = model_config(cfg["model"], num_speakers)
    data_size = stage_data_size(model_cfg, stage)
    dm = _datamodule(cfg, stage, data_size, world, seed)
    module = PCAVSModule(stage=stage, model=model_cfg.to_dict(), loss=scfg["loss"], optim=scfg["optim"],
                         sample_every_n_steps=int(scfg["sample_every_n_steps"]), name=str(cfg["name"]))

    resume = last if last.is_file() else None
    saved = stage_dir / "config.yaml"
    if resume is not None and saved.is_file():
        previous = (yaml.safe_load(saved.read_text()) or {}).get("model", {}).get("resolved")
        if previous is not None and PCAVSConfig.from_dict(previous) != model_cfg:
            raise ValueError(f"{stage_dir}: holds a run of another model config; resume it with its own config "
                             f"({saved}) or train into another out folder")
    if resume is None:
        for earlier in STAGES[: STAGES.index(stage)]:
            ckpt = final_checkpoint(out, earlier)
            if ckpt.is_file():
                loaded = module.load_stage_weights(ckpt)
                print(f"PC-AVS {stage}: {', '.join(loaded)} from the {earlier} stage ({ckpt})", flush=True)
            elif stage == "full":
                print(f"PC-AVS {stage}: no {earlier} checkpoint ({ckpt}); "
                      f"{', '.join(STAGE_OUTPUTS[earlier])} start from scratch", flush=True)
        module.load_stage_weights_into_ema()
    else:
        print(f"PC-AVS {stage}: resuming from {resume}", flush=True)

    stage_dir.mkdir(parents=True, exist_ok=True)
    EpochTimeBudget, RecordBatches = _callbacks()
    callbacks = [EpochTimeBudget(scfg["max_minutes"]),
                 ModelCheckpoint(dirpath=str(stage_dir / "checkpoints"), filename="epoch{epoch:03d}",
                                 auto_insert_metric_name=False, save_last=True, save_top_k=1, monitor=None,
                                 every_n_epochs=1, save_on_train_epoch_end=True, enable_version_counter=False)]
    if record:
        callbacks.append(RecordBatches(stage_dir / "record"))
    loggers: list = [CSVLogger(str(stage_dir), name="logs")]
    if tcfg["wandb"]:
        try:
            from lightning.pytorch.loggers import WandbLogger
            import wandb  # noqa: F401

            online = bool(os.environ.get("WANDB_API_KEY"))
            loggers.append(WandbLogger(project="talkinghead", name=f"pcavs-{cfg['name']}-{stage}",
                                       save_dir=str(stage_dir), offline=not online))
        except ImportError:
            pass
    accelerator = tcfg["accelerator"]
    # epoch-based, so that a resumed run starts the epoch after its checkpoint (Lightning keeps an
    # iteration-based run in the checkpoint's epoch, which would replay that epoch's samples)
    epochs = -(-max_steps // int(scfg["epoch_batches"]))
    trainer = Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=tcfg["devices"],
        num_nodes=int(tcfg["num_nodes"] or 1),
        strategy=_strategy(tcfg["strategy"], accelerator),
        precision=tcfg["precision"],
        logger=loggers,
        callbacks=callbacks,
        log_every_n_steps=int(tcfg["log_every_n_steps"]),
        enable_progress_bar=progress,
        enable_model_summary=progress,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(stage_dir),
    )
    if trainer.is_global_zero:
        text = yaml.safe_dump({**cfg, "model": {"resolved": model_cfg.to_dict(), "spec": cfg["model"]}}, sort_keys=False)
        atomic_write_text(stage_dir / "config.yaml", text)
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    finally:
        if len(loggers) > 1:  # close this stage's W&B run, or the next stage's logger would reuse it
            import wandb

            wandb.finish()
    minutes = (time.perf_counter() - started) / 60.0
    batches = trainer.global_step // module.optimizers_per_step
    if trainer.is_global_zero:
        if not last.is_file():  # max_steps reached mid-epoch: make sure the final state is saved
            trainer.save_checkpoint(str(last))
        elif batches % int(scfg["epoch_batches"]):
            trainer.save_checkpoint(str(last))
        atomic_write_text(done_file, json.dumps({
            "stage": stage, "batches": batches, "global_step": int(trainer.global_step), "max_steps": max_steps,
            "stopped_by": "steps" if batches >= max_steps else "time", "minutes_this_run": round(minutes, 2),
            "checkpoint": str(last)}, indent=1))
        print(f"PC-AVS {stage}: {batches} batches in {minutes:.1f} min -> {last}", flush=True)
    return last


def train(config: str | Path | dict | None = None, overrides: Iterable[str] | dict | None = None, *,
          store: str | Path | None = None, out: str | Path | None = None, stages: Iterable[str] | None = None,
          max_minutes: float | None = None, record: bool = False, progress: bool | None = None) -> Path:
    """Run the configured stages in order; returns the last stage's final checkpoint.

    config:    YAML path, a config dict (merged over `DEFAULTS`) or None (experiments/pcavs/synth.yaml).
    overrides: dotted ``KEY=VALUE`` strings (or a dict), e.g. ``["full.max_steps=200"]``.
    store / out / stages: shortcuts for the config keys of the same name.
    max_minutes: scale every stage's ``max_minutes`` so that they sum to this budget.
    record:    write per-rank batch / weight records under ``<out>/<stage>/record`` (tests).
    """
    extra: dict[str, Any] = {}
    if store is not None:
        extra["store"] = str(store)
    if out is not None:
        extra["out"] = str(out)
    if stages is not None:
        extra["stages"] = list(stages)
    cfg = resolve_config(config, overrides)
    cfg = _merge(DEFAULTS, apply_overrides(cfg, extra))
    unknown = [s for s in cfg["stages"] if s not in STAGES]
    if unknown or not cfg["stages"]:
        raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {cfg['stages']}")
    if max_minutes is not None:
        budgets = [cfg[s]["max_minutes"] for s in cfg["stages"]]
        if all(b is not None for b in budgets) and sum(budgets) > 0:
            scale = float(max_minutes) / float(sum(budgets))
            for s in cfg["stages"]:
                cfg[s]["max_minutes"] = cfg[s]["max_minutes"] * scale
        else:
            for s in cfg["stages"]:
                cfg[s]["max_minutes"] = float(max_minutes) / len(cfg["stages"])
    tcfg = cfg["trainer"]
    show = bool(tcfg["progress"]) if progress is None else bool(progress)
    out_dir = Path(cfg["out"])
    ensure_store(Path(cfg["store"]), bool(cfg["make_store"]), progress=show)
    out_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    threads = torch.get_num_threads()
    if tcfg["num_threads"]:
        torch.set_num_threads(int(tcfg["num_threads"]))
    ordered = [s for s in STAGES if s in cfg["stages"]]
    result: Path | None = None
    try:
        for stage in ordered:
            result = _run_stage(cfg, stage, out_dir, record=record, progress=show)
    finally:
        torch.set_num_threads(threads)
    assert result is not None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train PC-AVS (stages identity -> sync -> full).")
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "synth.yaml")
    parser.add_argument("--store", default=None, help="clip store folder (default: the config's)")
    parser.add_argument("--out", default=None, help="run folder (default: the config's, runs/pcavs)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="total time budget over the stages")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. full.max_steps=200 trainer.devices=2")
    parser.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    path = train(args.config, args.set, store=args.store, out=args.out, stages=args.stages,
                 max_minutes=args.max_minutes, record=args.record, progress=False if args.no_progress else None)
    print(f"PC-AVS checkpoint: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
