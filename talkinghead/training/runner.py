"""The staged runner: a method's stages in order, each a Lightning fit, each resumable.

    from talkinghead.methods.registry import get_method
    train(get_method("pcavs"), "experiments/pcavs/synth.yaml", ["full.max_steps=200"])

Layout of the run folder ``<out>`` (`Method.out_dir`: the config's ``out``, default ``runs/<method>``)::

    <out>/config.yaml                     the resolved config of the last call
    <out>/<stage>/config.yaml             the resolved config of that stage and its module's hparams
    <out>/<stage>/checkpoints/last.ckpt   Lightning checkpoint (weights, optimisers, step, epoch,
                                          callback state), written at every epoch end
    <out>/<stage>/checkpoints/best.ckpt   best by ``validation.monitor`` (when set)
    <out>/<stage>/done.json               written when the stage reached its ``max_steps``
    <out>/<stage>/logs/version_<n>/       CSV logs (metrics.csv, hparams.yaml), samples/*.png|mp4
    <out>/<stage>/wandb/                  W&B run files (offline unless WANDB_API_KEY is set)

Stages: a stage with ``done.json`` (its ``max_steps`` reached) is skipped; an unfinished one with
a ``last.ckpt`` resumes from it (optimisers, global step, epoch and data position: an "epoch" is
``epoch_batches`` batches and checkpoints / time stops happen at epoch ends, so the next batch
after a resume is the one an uninterrupted run would have drawn); a stage stopped by
``max_minutes`` is unfinished, and the next run continues it to ``max_steps``. A new stage starts
from the weights the earlier stages trained (`StagedModule.load_stage_weights`). ``--stage S``
starts at S (the earlier stages' checkpoints are still read).

Scale-out is Trainer configuration: ``trainer.devices``, ``num_nodes``, ``strategy`` (``ddp`` is
``DDPStrategy(find_unused_parameters=True)``, gloo on CPU: a GAN's generator and discriminator
steps each leave the other's parameters without gradients). Under torchrun or SLURM Lightning
reads the cluster environment itself. The data module reads LitData shards when the method's
data config points at them.

Loggers: CSV always; W&B (``logger.wandb``; off with ``WANDB_MODE=disabled``) in the project
`talkinghead.training.tracking.wandb_project` (``$WANDB_PROJECT``, else ``logger.project``,
"talkinghead": the bench runs' project too), one run per stage named ``<method>-<config name>-<stage>``,
grouped by method and config (``group = <method>-<config name>``), ``job_type`` = stage, the
resolved config attached, tags = [method, store, stage, *logger.tags]; the sample grids and
validation videos (with audio) go to it as ``samples/<stage>`` and ``videos/<stage>``. At the end
of each stage run (rank zero) its ``last.ckpt`` is logged as a reference artifact of type "model"
named ``<run folder>-<stage>`` with aliases latest, <stage> (and "finished" once ``max_steps`` is
reached): the artifact a bench run of that checkpoint declares as its input
(`talkinghead.training.tracking`). A resumed stage continues its W&B run (its id is kept in
``<stage>/wandb_id``).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterable

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from talkinghead.config import to_dict, to_yaml
from talkinghead.fileio import atomic_write, atomic_write_text
from talkinghead.training.method import Method

__all__ = ["ensure_store", "final_checkpoint", "resolve", "stage_loggers", "stage_plan", "train"]


def final_checkpoint(out: str | Path, stage: str) -> Path:
    """Where a stage's final checkpoint lies: ``<out>/<stage>/checkpoints/last.ckpt``."""
    return Path(out) / stage / "checkpoints" / "last.ckpt"


def ensure_store(store: Path, make: bool, progress: bool = True, workers: int = 2) -> Path:
    """`store`; when it has no index.json and `make`, generate + preprocess SynthTalk vox2 into it
    (as ``talkinghead data``; raw corpus in ``<store>/../../synthtalk/vox2``)."""
    if (store / "index.json").is_file():
        return store
    if not make:
        raise FileNotFoundError(f"{store}: not a clip store (no index.json); run `make data` (SynthTalk) or "
                                f"`talkinghead preprocess` first, or set make_store=true")
    from talkinghead.data.preprocess import preprocess_corpus
    from talkinghead.data.synthtalk.generate import SynthConfig, generate

    raw = (store.parent.parent if store.parent.name == "store" else store.parent) / "synthtalk" / "vox2"
    started = time.perf_counter()
    print(f"clip store {store} missing: generating SynthTalk vox2 in {raw} and preprocessing it", flush=True)
    result = generate(raw, SynthConfig(layout="vox2"), workers=workers, progress=progress)
    if result["failed"]:
        print(f"  {len(result['failed'])} SynthTalk clips failed: {result['failed'][:3]}", flush=True)
    report = preprocess_corpus("vox2", raw, store, workers=workers, progress=progress)
    print(f"store ready ({report['clips']} clips, {len(report['failed'])} bad inputs) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return store


def resolve(method: Method, config: str | Path | None = None, overrides: Iterable[str] = ()):
    """The method's resolved config (`Method.load_config`), its stage list checked."""
    cfg = method.load_config(config, list(overrides))
    unknown = [s for s in cfg.stages if s not in method.stages]
    if unknown:
        raise ValueError(f"stages: {unknown} are not stages of {method.name} ({', '.join(method.stages)})")
    return cfg


def stage_plan(method: Method, cfg, start: str | None = None) -> list[str]:
    """The stages to run, in the method's order, from `start` on."""
    stages = [s for s in method.stages if s in (list(cfg.stages) or method.stages)]
    if start is not None:
        if start not in stages:
            raise ValueError(f"--stage {start!r}: not among this run's stages ({', '.join(stages)})")
        stages = stages[stages.index(start):]
    return stages


def _is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def _strategy(name: str, accelerator: str):
    if name in ("ddp", "ddp_spawn"):
        from lightning.pytorch.strategies import DDPStrategy

        backend = "gloo" if accelerator == "cpu" else None
        return DDPStrategy(find_unused_parameters=True, process_group_backend=backend,
                           start_method="spawn" if name == "ddp_spawn" else "popen")
    return name


def _world_size(trainer_cfg) -> int:
    devices = trainer_cfg.devices
    if isinstance(devices, int) and devices > 0:
        per_node = devices
    elif isinstance(devices, (list, tuple)) or type(devices).__name__ == "ListConfig":
        per_node = len(devices)
    else:
        per_node = 1
    return int(per_node) * int(trainer_cfg.num_nodes or 1)


def stage_loggers(method: Method, cfg, stage: str, stage_dir: Path) -> list:
    """CSV always; W&B when ``logger.wandb`` (see the module docstring). The W&B run id is kept in
    ``<stage>/wandb_id``, so a resumed stage continues its run."""
    from lightning.pytorch.loggers import CSVLogger

    loggers: list = [CSVLogger(str(stage_dir), name="logs")]
    if not cfg.logger.wandb:
        return loggers
    try:
        import wandb  # noqa: F401
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:
        print("W&B logging is on but wandb is not installed: CSV logs only", flush=True)
        return loggers
    if os.environ.get("WANDB_MODE") == "disabled":
        return loggers
    from talkinghead.training.tracking import wandb_project

    mode = cfg.logger.mode
    offline = not os.environ.get("WANDB_API_KEY") if mode == "auto" else mode == "offline"
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        offline = True
    id_file = stage_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    if _is_rank_zero():
        atomic_write_text(id_file, run_id)
    dataset = Path(cfg.store).name
    loggers.append(WandbLogger(
        project=wandb_project(cfg.logger.project), name=f"{method.name}-{cfg.name}-{stage}",
        group=f"{method.name}-{cfg.name}",
        job_type=stage, tags=[method.name, dataset, stage, *cfg.logger.tags], config=to_dict(cfg),
        save_dir=str(stage_dir), offline=offline, id=run_id, resume="allow",
        # explicit, not only Lightning's WANDB_MODE=dryrun: wandb reads the environment once per
        # process, so an earlier online init in the same process would otherwise win
        mode="offline" if offline else "online"))
    return loggers


class StageData(LightningDataModule):
    """The Lightning data module of one stage: the method's training data plus the validation clips."""

    def __init__(self, train_data, validation):
        super().__init__()
        self.train_data, self.validation = train_data, validation

    def setup(self, stage: str) -> None:
        self.train_data.trainer = self.trainer
        self.train_data.setup("fit")

    def train_dataloader(self):
        return self.train_data.train_dataloader()

    def val_dataloader(self):
        if self.validation is None:
            return []
        return DataLoader(self.validation, batch_size=None, shuffle=False, num_workers=0)


def _atomic_checkpoint_io():
    """Lightning's torch checkpoint writer, made atomic: each file is written beside its target
    and renamed over it, so a run killed mid-save leaves the previous checkpoint intact."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            write = super().save_checkpoint
            atomic_write(path, lambda partial: write(checkpoint, partial, storage_options))

    return AtomicCheckpointIO()


def _log_stage_checkpoint(logger, method: Method, cfg, stage: str, out: Path, last: Path, module,
                          finished: bool) -> None:
    """Log the stage's ``last.ckpt`` to its W&B run as a reference "model" artifact (runner docstring);
    a W&B failure is a warning, never a failed stage."""
    from talkinghead.training.tracking import log_checkpoint

    if not last.is_file():
        return
    aliases = ["latest", stage] + (["finished"] if finished else [])
    metadata = {"method": method.name, "config": cfg.name, "stage": stage, "run_dir": str(out.resolve()),
                "batches": int(module.batches), "finished": bool(finished), "store": str(cfg.store)}
    try:
        log_checkpoint(logger.experiment, last, out, stage, aliases=aliases, metadata=metadata)
    except Exception as error:  # noqa: BLE001 - W&B is a convenience, never a failure
        print(f"{method.name} {stage}: checkpoint not logged to W&B: {type(error).__name__}: {error}", flush=True)


def _run_stage(method: Method, cfg, stage: str, out: Path, *, record: bool) -> tuple[Path, bool]:
    """Train one stage; returns (its last checkpoint, whether it reached max_steps)."""
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from talkinghead.progress import use_bar
    from talkinghead.training.callbacks import ProgressLines, RecordBatches, StageBudget, StageEndSamples, Throughput
    from talkinghead.training.validation import ValidationClips

    scfg, tcfg, vcfg = cfg[stage], cfg.trainer, cfg.validation
    stage_dir = out / stage
    last = final_checkpoint(out, stage)
    done_file = stage_dir / "done.json"
    max_steps = int(scfg.max_steps)
    label = f"{method.name} {stage}"
    if done_file.is_file():
        done = json.loads(done_file.read_text())
        if int(done.get("batches", 0)) >= max_steps:
            print(f"{label}: already trained ({done.get('batches')} batches) -> {last}", flush=True)
            return last, True
    seed = int(cfg.seed)
    seed_everything(seed, workers=True)
    world = _world_size(tcfg)
    data = method.build_data(cfg, stage, world)
    module = method.build_module(cfg, stage)

    resume = last if last.is_file() else None
    saved = stage_dir / "config.yaml"
    hparams = json.loads(json.dumps(dict(module.hparams), default=str))
    if resume is not None and saved.is_file():
        import yaml

        previous = (yaml.safe_load(saved.read_text()) or {}).get("module", {}).get("model")
        if previous is not None and previous != hparams.get("model"):
            raise ValueError(f"{stage_dir}: holds a run of another model config; resume it with its own config "
                             f"({saved}) or train into another out folder")
    if resume is None:
        for earlier in method.stages[: method.stages.index(stage)]:
            ckpt = final_checkpoint(out, earlier)
            if ckpt.is_file():
                loaded = module.load_stage_weights(ckpt)
                print(f"{label}: {', '.join(loaded)} from the {earlier} stage ({ckpt})", flush=True)
            else:
                print(f"{label}: no {earlier} checkpoint ({ckpt}); what it trains starts from scratch", flush=True)
        module.start_ema_from_weights()
    else:
        print(f"{label}: resuming from {resume}", flush=True)

    validates = module.validates and vcfg.num_clips > 0
    clips = ValidationClips(cfg.store, vcfg.split, vcfg.num_clips, vcfg.num_frames) if validates else None
    validates = validates and len(clips) > 0
    if validates:
        module.configure_validation(list(vcfg.metrics), cfg.store, bool(vcfg.video))

    stage_dir.mkdir(parents=True, exist_ok=True)
    epoch_batches = int(scfg.epoch_batches)
    budget = StageBudget(max_steps, scfg.max_minutes, epoch_batches)
    callbacks = [budget, Throughput(int(tcfg.log_every_n_steps)), StageEndSamples(),
                 LearningRateMonitor(logging_interval="step"),
                 ModelCheckpoint(dirpath=str(stage_dir / "checkpoints"), filename="epoch{epoch:03d}",
                                 auto_insert_metric_name=False, save_last=True, save_top_k=1, monitor=None,
                                 every_n_epochs=1, save_on_train_epoch_end=True, enable_version_counter=False)]
    if validates and vcfg.monitor:
        callbacks.append(ModelCheckpoint(dirpath=str(stage_dir / "checkpoints"), filename="best",
                                         monitor=vcfg.monitor, mode=vcfg.mode, save_top_k=1, save_last=False,
                                         auto_insert_metric_name=False, enable_version_counter=False))
    if record:
        callbacks.append(RecordBatches(stage_dir / "record"))
    bar = bool(tcfg.progress) and use_bar(sys.stdout)  # a TQDM bar on a terminal only
    if tcfg.progress and not bar:
        callbacks.append(ProgressLines(label, max_steps))
    loggers = stage_loggers(method, cfg, stage, stage_dir)
    accelerator = tcfg.accelerator
    every = int(vcfg.every_n_steps) or max_steps
    trainer = Trainer(
        # epoch-based, so that a resumed run starts the epoch after its checkpoint (Lightning keeps an
        # iteration-based run in the checkpoint's epoch, which would replay that epoch's samples)
        max_epochs=math.ceil(max_steps / epoch_batches),
        accelerator=accelerator,
        devices=tcfg.devices,
        num_nodes=int(tcfg.num_nodes or 1),
        strategy=_strategy(tcfg.strategy, accelerator),
        precision=tcfg.precision,
        logger=loggers,
        callbacks=callbacks,
        log_every_n_steps=int(tcfg.log_every_n_steps),
        enable_progress_bar=bar,
        enable_model_summary=bool(tcfg.progress),
        num_sanity_val_steps=0,
        limit_val_batches=None if validates else 0,
        val_check_interval=every if validates else None,
        check_val_every_n_epoch=None if validates else 1,
        default_root_dir=str(stage_dir),
        plugins=[_atomic_checkpoint_io()],
    )
    if trainer.is_global_zero:
        atomic_write_text(saved, to_yaml(cfg) + "\n" + to_yaml({"module": hparams}))
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():  # the EMA copy and frozen networks are in eval mode on purpose
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            trainer.fit(module, datamodule=StageData(data, clips), ckpt_path=str(resume) if resume else None)
        batches = module.batches
        finished = batches >= max_steps
        if trainer.is_global_zero:
            if not last.is_file() or batches % epoch_batches:  # stopped mid-epoch: keep the final state too
                trainer.save_checkpoint(str(last))
            if len(loggers) > 1:
                _log_stage_checkpoint(loggers[1], method, cfg, stage, out, last, module, finished)
    finally:
        if len(loggers) > 1:  # close this stage's W&B run, or the next stage's logger would reuse it
            import wandb

            wandb.finish()
    minutes = (time.perf_counter() - started) / 60.0
    if trainer.is_global_zero:
        if finished:
            atomic_write_text(done_file, json.dumps({
                "stage": stage, "batches": batches, "global_step": int(trainer.global_step), "max_steps": max_steps,
                "skipped_steps": module.skipped, "minutes_this_run": round(minutes, 2), "checkpoint": str(last)},
                indent=1))
            print(f"{label}: {batches} batches ({minutes:.1f} min this run) -> {last}", flush=True)
        else:
            print(f"{label}: stopped by its time budget (max_minutes={scfg.max_minutes}) at {batches} of "
                  f"{max_steps} batches; the same command continues it -> {last}", flush=True)
    if finished and method.after_stage is not None and trainer.is_global_zero:
        method.after_stage(cfg, stage, last, out)
    return last, finished


def train(method: Method, config: str | Path | None = None, overrides: Iterable[str] = (), *,
          stage: str | None = None, record: bool = False) -> Path:
    """Run the method's configured stages in order (from `stage` on); returns the final checkpoint
    of the last stage run (when a stage stops on its time budget, the run ends there).

    config:    YAML path or a name under ``experiments/<method>/`` (None: the method's default).
    overrides: dotted ``KEY=VALUE`` strings, e.g. ``["full.max_steps=200", "trainer.devices=2"]``.
    record:    write per-rank batch / weight records under ``<out>/<stage>/record`` (tests).
    """
    cfg = resolve(method, config, overrides)
    stages = stage_plan(method, cfg, stage)
    out = method.out_dir(cfg)
    ensure_store(Path(cfg.store), bool(cfg.make_store), progress=bool(cfg.trainer.progress))
    out.mkdir(parents=True, exist_ok=True)
    if _is_rank_zero():
        atomic_write_text(out / "config.yaml", to_yaml(cfg))
    threads = torch.get_num_threads()
    if cfg.trainer.num_threads:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    result: Path | None = None
    try:
        for name in stages:
            result, finished = _run_stage(method, cfg, name, out, record=record)
            if not finished:  # a later stage must not start from an unfinished one
                break
    finally:
        torch.set_num_threads(threads)
    assert result is not None
    return result
