"""Train a SyncNet expert on a clip store, save it, and load it back for LSE scoring.

    python -m talkinghead.methods.syncnet.train --store data/store/synth-vox2
    python -m talkinghead.methods.syncnet.train --config experiments/syncnet/vox2.yaml --store S --out runs/x

`train(config, store, out_dir)` runs a Lightning Trainer (CSV logger, W&B offline optional) and
writes ``<out_dir>/syncnet_expert.pt``: a plain dict {format, version, name, config (SyncNetConfig
fields), state_dict, step, store} that `load_expert` reads with ``torch.load(weights_only=True)``.
The default place of a store's expert is `default_checkpoint(store)` =
``<store>/experts/syncnet/syncnet_expert.pt`` (beside the data it was trained on; `ClipStore` only
reads ``clips/`` and ``index.json``, so the store is unaffected).
"""
from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from talkinghead.config import merge_config, read_yaml_mapping
from talkinghead.fileio import atomic_write
from talkinghead.nn.syncnet import SyncNet, SyncNetConfig

__all__ = ["DEFAULTS", "EXPERT_FILE", "EXPERT_FORMAT", "default_checkpoint", "load_config", "load_expert",
           "save_expert", "train"]

EXPERT_FILE = "syncnet_expert.pt"
EXPERT_FORMAT = "talkinghead-syncnet-expert"
CONFIG_DIR = Path(__file__).resolve().parents[3] / "experiments" / "syncnet"

#: Every key a config may set, with its default (experiments/syncnet/*.yaml override these).
DEFAULTS: dict[str, Any] = {
    "name": "custom",
    "seed": 0,
    "model": {},  # SyncNetConfig fields; {} = the official sizes
    "loss": {"margin": 10.0, "other_clip_weight": 0.5},
    "optim": {"lr": 1.0e-3, "weight_decay": 0.0, "betas": [0.9, 0.999]},
    "data": {"split": "train", "windows_per_clip": 4, "min_shift": 2, "max_shift": 15, "cache": True,
             "num_workers": 0, "samples_per_epoch": None},
    "trainer": {"batch_size": 16, "num_threads": None, "max_steps": 1000, "max_minutes": None, "accelerator": "auto", "devices": 1,
                "precision": "32-true", "log_every_n_steps": 20, "checkpoint_every_n_steps": 500,
                "gradient_clip_val": None},
}


def _merge(base: dict, override: dict | None, where: str = "config") -> dict:
    return merge_config(base, override, where, free_form=("model",))  # model: SyncNetConfig fields


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """A YAML config merged over `DEFAULTS` (default file: experiments/syncnet/synth.yaml)."""
    path = Path(path) if path is not None else CONFIG_DIR / "synth.yaml"
    raw = read_yaml_mapping(path, "SyncNet config")
    return _merge(DEFAULTS, raw, str(path))


def default_checkpoint(store: str | Path) -> Path:
    """Where the expert trained on `store` lives: ``<store>/experts/syncnet/syncnet_expert.pt``."""
    return Path(store) / "experts" / "syncnet" / EXPERT_FILE


def _description(name: str, store_name: str, step: int) -> str:
    return f"SyncNet expert ({name}, trained on {store_name}, step {step})"


def save_expert(path: str | Path, net: SyncNet, name: str, step: int, store: str | Path) -> Path:
    """Write the expert file (atomically); see the module docstring for its content."""
    payload = {
        "format": EXPERT_FORMAT,
        "version": 1,
        "name": str(name),
        "config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "step": int(step),
        "store": str(Path(store).resolve()),
        "store_name": Path(store).resolve().name,
    }
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_expert(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> tuple[SyncNet, str]:
    """(SyncNet in eval mode, description) from an expert file or a Lightning checkpoint of `SyncNetModule`.

    The description names the net, e.g. "SyncNet expert (tiny, trained on synth-vox2, step 1500)".
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no SyncNet expert checkpoint; train one with `python -m talkinghead.methods.syncnet.train "
            f"--store STORE` (writes STORE/experts/syncnet/{EXPERT_FILE})")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: cannot load as a SyncNet expert checkpoint: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a SyncNet expert checkpoint (a {type(data).__name__})")
    if data.get("format") == EXPERT_FORMAT:
        config, state = SyncNetConfig.from_dict(data["config"]), data["state_dict"]
        name, step, store_name = data.get("name", "custom"), int(data.get("step", 0)), data.get("store_name", "?")
    elif "state_dict" in data and "hyper_parameters" in data:  # a Lightning checkpoint of SyncNetModule
        hp = data["hyper_parameters"]
        config = SyncNetConfig.from_dict(hp.get("model"))
        state = {k[len("net."):]: v for k, v in data["state_dict"].items() if k.startswith("net.")}
        name, step, store_name = hp.get("name", "custom"), int(data.get("global_step", 0)), "an unrecorded store"
    else:
        raise ValueError(f"{path}: not a SyncNet expert checkpoint (keys: {', '.join(sorted(map(str, data))[:10])})")
    net = SyncNet(config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit its SyncNet config: {error}") from error
    return net.eval(), _description(name, store_name, step)


def train(
    config: dict[str, Any],
    store: str | Path,
    out_dir: str | Path | None = None,
    *,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    seed: int | None = None,
    wandb: bool = False,
    progress: bool = True,
    accelerator: str | None = None,
) -> Path:
    """Train a SyncNet expert on `store`'s `config["data"]["split"]`; returns the expert file path.

    config: a dict as `load_config` returns (keys of `DEFAULTS`; missing keys take the defaults).
    out_dir: run folder (CSV logs under ``logs/``, Lightning checkpoints under ``checkpoints/``,
        the expert as ``syncnet_expert.pt``); None = `default_checkpoint(store)`'s folder.
    max_steps / max_minutes / seed / accelerator: override the config's trainer values.
    wandb: also log to Weights & Biases, offline (files under out_dir/wandb).
    """
    from lightning.pytorch import seed_everything

    cfg = _merge(DEFAULTS, config or {})
    store = Path(store)
    if not (store / "index.json").is_file():
        raise FileNotFoundError(f"{store}: not a clip store (no index.json); run `talkinghead data` or "
                                f"`talkinghead preprocess` first")
    out = Path(out_dir) if out_dir is not None else default_checkpoint(store).parent
    out.mkdir(parents=True, exist_ok=True)
    tcfg = cfg["trainer"]
    seed = cfg["seed"] if seed is None else seed
    seed_everything(int(seed), workers=True)

    threads = torch.get_num_threads()
    if tcfg["num_threads"]:
        torch.set_num_threads(int(tcfg["num_threads"]))
    try:
        return _fit(cfg, store, out, int(seed), max_steps, max_minutes, wandb, progress, accelerator)
    finally:
        torch.set_num_threads(threads)


def _fit(cfg: dict, store: Path, out: Path, seed: int, max_steps, max_minutes, wandb: bool, progress: bool,
         accelerator) -> Path:
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from talkinghead.data.datamodule import worker_context
    from talkinghead.methods.syncnet.data import SyncWindowDataset
    from talkinghead.methods.syncnet.module import SyncNetModule

    started = time.perf_counter()
    tcfg, dcfg = cfg["trainer"], cfg["data"]
    module = SyncNetModule(model=cfg["model"], name=cfg["name"], min_shift=int(dcfg["min_shift"]), **cfg["loss"],
                           **cfg["optim"])
    dataset = SyncWindowDataset(store, module.net.config, split=dcfg["split"],
                                windows_per_clip=dcfg["windows_per_clip"], min_shift=dcfg["min_shift"],
                                max_shift=dcfg["max_shift"],
                                length=dcfg["samples_per_epoch"], seed=seed, cache=bool(dcfg["cache"]))
    loader = DataLoader(dataset, batch_size=int(tcfg["batch_size"]), shuffle=False, drop_last=True,
                        num_workers=int(dcfg["num_workers"]), persistent_workers=False,  # set_epoch reaches new workers
                        multiprocessing_context=worker_context() if int(dcfg["num_workers"]) > 0 else None)
    if len(loader) == 0:
        raise ValueError(f"{store}: {len(dataset)} samples per epoch is less than one batch of {tcfg['batch_size']}")

    loggers: list = [CSVLogger(str(out), name="logs")]
    if wandb:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(project="talkinghead", name=f"syncnet-{cfg['name']}", save_dir=str(out),
                                   offline=True))
    every = int(tcfg["checkpoint_every_n_steps"] or 0)
    callbacks = [ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True, save_top_k=0,
                                 every_n_train_steps=every or None)]
    minutes = max_minutes if max_minutes is not None else tcfg["max_minutes"]
    trainer = Trainer(
        max_steps=int(max_steps if max_steps is not None else tcfg["max_steps"]),
        max_epochs=-1,
        max_time=timedelta(minutes=float(minutes)) if minutes else None,
        accelerator=accelerator or tcfg["accelerator"],
        devices=tcfg["devices"],
        precision=tcfg["precision"],
        logger=loggers,
        callbacks=callbacks,
        log_every_n_steps=int(tcfg["log_every_n_steps"]),
        gradient_clip_val=tcfg["gradient_clip_val"],
        enable_progress_bar=progress,
        enable_model_summary=progress,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(out),
    )
    trainer.fit(module, loader)
    module.net.eval()
    path = save_expert(out / EXPERT_FILE, module.net.cpu(), cfg["name"], trainer.global_step, store)
    if progress:
        print(f"SyncNet expert: {path} ({trainer.global_step} steps, {time.perf_counter() - started:.0f} s); "
              f"{_description(cfg['name'], store.resolve().name, trainer.global_step)}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a SyncNet expert on a clip store.")
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "synth.yaml")
    parser.add_argument("--store", type=Path, required=True, help="clip store folder (e.g. data/store/synth-vox2)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: STORE/experts/syncnet)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--accelerator", default=None)
    parser.add_argument("--wandb", action="store_true", help="also log to W&B (offline)")
    args = parser.parse_args(argv)
    train(load_config(args.config), args.store, args.out, max_steps=args.max_steps, max_minutes=args.max_minutes,
          seed=args.seed, wandb=args.wandb, accelerator=args.accelerator)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
