"""`StagedModule`: the LightningModule base every method trains with, one stage at a time.

A subclass declares:

* ``STAGES``: its stage names in training order;
* ``STAGE_OUTPUTS``: {stage: dotted submodule paths that stage trains and hands on}, e.g. PC-AVS
  ``{"identity": ("model.netV",), ...}``; a later stage starts from them (`load_stage_weights`);
* `stage_parameters(stage)`: {optimiser: {group: parameters}} of what `stage` trains, e.g.
  ``{"generator": {"netV": [...], "netG": [...]}, "discriminator": {"netD": [...]}}`` (one
  optimiser per key, stepped in that order in every training batch);
* `optimizer_settings(name)`: Adam settings of optimiser `name` (lr, betas, amsgrad, weight_decay);
* ``training_step``: computes the losses and calls `guarded_step(optimizer, loss, what)` for each
  optimiser (optimisation is manual in every stage and every method: ``automatic_optimization``
  is off, so GAN stages and plain stages go through the same guard);
* optionally ``VALIDATION_STAGES`` (the stages that can generate) and `validation_generator()`: a
  `talkinghead.generation.Generator` of the current weights, built once per validation run of
  such a stage (validation then scores held-out clips; see `talkinghead.training.validation`).

The base provides, written once:

* freezing: every parameter the stage's optimisers do not hold gets ``requires_grad=False``
  (what DDP needs too); ``freeze`` (group names) drops groups from this stage;
* learning rates: one Adam param group per group; ``lr_mult`` {group: factor} scales the lr of
  the parameters an *earlier* stage trained (parameters new in this stage keep the base lr: a
  group then splits into ``<group>`` and ``<group>.new``);
* the non-finite guard: a step whose loss or gradient norm is not finite (on any rank) is skipped,
  counted (``train/skipped``) and logged as a warning; after ``max_nonfinite_in_a_row`` skips in a
  row *of one optimiser* (another optimiser's good steps in between do not reset its count, so a
  generator whose every step is skipped stops the run while its discriminator still steps) training
  stops with `FloatingPointError`; a checkpoint with a non-finite value is refused;
* gradient clipping (``gradient_clip``: max total norm per optimiser step);
* an exponential moving average of one submodule (``EMA_OF``, kept as ``<EMA_OF>_ema``;
  ``ema`` = decay, 0 = off; short warm-up ``min(decay, (1 + n) / (10 + n))``);
* sample grids: `remember_samples(columns)` in a training step keeps the latest images; a grid is
  written every ``sample_every_n_steps`` batches and at the end of every stage (`write_samples`).

Step counting: Lightning's ``global_step`` counts optimiser steps; `batches` = training batches =
``global_step // optimizers_per_step`` (what ``max_steps`` of a stage counts).
"""
from __future__ import annotations

import abc
import copy
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["StagedModule", "config_section", "resize_images", "sample_grid", "unique_parameters"]

log = logging.getLogger(__name__)


def random_states() -> dict:
    """The torch (CPU and CUDA), numpy and Python random states, as tensors and lists (they load
    with ``torch.load(weights_only=True)``)."""
    import random

    import numpy as np

    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    states = {"torch": torch.get_rng_state(),
              "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)},
              "python": {"version": version, "state": list(python_state), "gauss": python_gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict) -> None:
    """Undo `random_states`: set every generator it saved."""
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _optimiser_key(opt) -> int:
    """Identity of an optimiser for the per-optimiser skip count: the optimiser Lightning wraps, if wrapped."""
    return id(getattr(opt, "optimizer", opt))


class StagedModule(LightningModule, abc.ABC):
    """Base of a method's LightningModule (see the module docstring).

    Args:
        stage: one of ``STAGES``.
        freeze: group names this stage keeps fixed.
        lr_mult: {group: factor} on the lr of the parameters an earlier stage trained.
        ema: decay of the moving average of ``EMA_OF`` (0: off).
        gradient_clip: max gradient norm per optimiser step (None: no clipping).
        sample_every_n_steps: image grid every so many batches (0: at the stage end only).
        max_nonfinite_in_a_row: stop after this many skipped steps in a row of one optimiser.
    """

    STAGES: ClassVar[tuple[str, ...]] = ()
    STAGE_OUTPUTS: ClassVar[dict[str, tuple[str, ...]]] = {}
    EMA_OF: ClassVar[str | None] = None
    VALIDATION_STAGES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, stage: str, *, freeze: list[str] | tuple[str, ...] = (), lr_mult: dict | None = None,
                 ema: float = 0.0, gradient_clip: float | None = None, sample_every_n_steps: int = 0,
                 max_nonfinite_in_a_row: int = 20):
        super().__init__()
        if stage not in self.STAGES:
            raise ValueError(f"{type(self).__name__}: stage must be one of {self.STAGES}, got {stage!r}")
        self.stage = stage
        self.automatic_optimization = False
        self.freeze_groups = tuple(freeze or ())
        self.lr_mult = dict(lr_mult or {})
        self.ema_decay = float(ema or 0.0)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema_decay}")
        self.gradient_clip = float(gradient_clip) if gradient_clip else None
        self.sample_every_n_steps = int(sample_every_n_steps)
        self.max_nonfinite_in_a_row = int(max_nonfinite_in_a_row)
        self.skipped = 0
        self._skipped_in_a_row: dict[int, int] = {}  # id(optimiser) -> its skips since its last step
        self._samples: dict[str, torch.Tensor] | None = None
        self._last_sample = -1

    def setup_ema(self) -> None:
        """Create the moving-average copy (call at the end of the subclass ``__init__``, after the
        networks exist); no-op when ``ema`` is 0."""
        if self.ema_decay > 0:
            if self.EMA_OF is None:
                raise ValueError(f"{type(self).__name__}: ema > 0 but the class names no EMA_OF submodule")
            live = getattr(self, self.EMA_OF)
            setattr(self, f"{self.EMA_OF}_ema", copy.deepcopy(live).requires_grad_(False).eval())

    # ------------------------------------------------------------------ subclass API
    @abc.abstractmethod
    def stage_parameters(self, stage: str) -> dict[str, dict[str, list[torch.nn.Parameter]]]:
        """{optimiser name: {group: parameters}} that `stage` trains (each parameter once)."""

    @abc.abstractmethod
    def optimizer_settings(self, name: str) -> dict[str, Any]:
        """Adam settings of optimiser `name`: {lr, betas, amsgrad, weight_decay}."""

    @property
    def validates(self) -> bool:
        """Whether this stage generates, so that validation can score it (``VALIDATION_STAGES``)."""
        return self.stage in self.VALIDATION_STAGES

    def validation_generator(self):
        """A `talkinghead.generation.Generator` of the current weights; called (once per validation
        run, inside Lightning's validation loop) only for ``VALIDATION_STAGES``."""
        raise TypeError(f"{type(self).__name__} lists VALIDATION_STAGES but has no validation_generator")

    # ------------------------------------------------------------------ parameters
    def trained_groups(self) -> dict[str, dict[str, list[torch.nn.Parameter]]]:
        """`stage_parameters(self.stage)` without the ``freeze`` groups."""
        groups = {opt: dict(g) for opt, g in self.stage_parameters(self.stage).items()}
        known = {name for g in groups.values() for name in g}
        unknown = set(self.freeze_groups) - known
        if unknown:
            raise ValueError(f"freeze: unknown groups {sorted(unknown)} for stage {self.stage!r}; "
                             f"valid: {sorted(known)}")
        for g in groups.values():
            for name in self.freeze_groups:
                g.pop(name, None)
        return groups

    def pretrained_ids(self) -> set[int]:
        """ids of the parameters an earlier stage trained (``lr_mult`` applies to these only)."""
        earlier = self.STAGES[: self.STAGES.index(self.stage)]
        return {id(p) for stage in earlier for g in self.stage_parameters(stage).values()
                for params in g.values() for p in params}

    def freeze_for_stage(self) -> None:
        """requires_grad only for what this stage's optimisers train (call after building the nets)."""
        keep = {id(p) for g in self.trained_groups().values() for params in g.values() for p in params}
        for p in self.parameters():
            p.requires_grad_(id(p) in keep)

    @property
    def optimizers_per_step(self) -> int:
        """Optimiser steps per training batch (Lightning's ``global_step`` counts each)."""
        if getattr(self, "_optimizers_per_step", None) is None:
            self._optimizers_per_step = len(self.stage_parameters(self.stage))
        return self._optimizers_per_step

    @property
    def batches(self) -> int:
        """Training batches done (``global_step // optimizers_per_step``)."""
        return int(self.global_step) // self.optimizers_per_step

    def configure_optimizers(self):
        all_groups = {name for stage in self.STAGES for g in self.stage_parameters(stage).values() for name in g}
        unknown = set(self.lr_mult) - all_groups
        if unknown:
            raise ValueError(f"lr_mult: unknown groups {sorted(unknown)}; valid: {sorted(all_groups)}")
        pretrained = self.pretrained_ids()
        optimizers = []
        for opt_name, groups in self.trained_groups().items():
            settings = self.optimizer_settings(opt_name)
            lr = float(settings["lr"])
            param_groups = []
            for name, params in groups.items():
                earlier = [p for p in params if id(p) in pretrained]
                new = [p for p in params if id(p) not in pretrained]
                if earlier:
                    param_groups.append({"params": earlier, "lr": lr * float(self.lr_mult.get(name, 1.0)),
                                         "name": name})
                if new:
                    param_groups.append({"params": new, "lr": lr, "name": f"{name}.new" if earlier else name})
            optimizers.append(torch.optim.Adam(param_groups, lr=lr, betas=tuple(float(b) for b in settings["betas"]),
                                               amsgrad=bool(settings.get("amsgrad", False)),
                                               weight_decay=float(settings.get("weight_decay", 0.0))))
        return optimizers[0] if len(optimizers) == 1 else optimizers

    def optimizer_list(self) -> list:
        """The Lightning-wrapped optimisers of this stage, in `stage_parameters` order."""
        opts = self.optimizers()
        return list(opts) if isinstance(opts, (list, tuple)) else [opts]

    # ------------------------------------------------------------------ the guarded step
    def _all_ranks(self, ok: bool) -> bool:
        if self._trainer is not None and self.trainer.world_size > 1:
            return bool(self.trainer.strategy.reduce_boolean_decision(ok, all=True))
        return ok

    def _skip(self, opt, params: list[torch.nn.Parameter], what: str, backward_done: bool) -> None:
        if not backward_done and self._trainer is not None and self.trainer.world_size > 1:
            self.manual_backward(sum(p.sum() for p in params) * 0.0)  # keeps the ranks' DDP reducers in step
        opt.zero_grad(set_to_none=True)
        self.skipped += 1
        key = _optimiser_key(opt)
        in_a_row = self._skipped_in_a_row[key] = self._skipped_in_a_row.get(key, 0) + 1
        log.warning("%s %s stage: non-finite %s at batch %d (global step %d); step skipped (%d so far, %d in a row)",
                    type(self).__name__, self.stage, what, self.batches, self.global_step, self.skipped, in_a_row)
        if self._trainer is not None:
            self.log("train/skipped", float(self.skipped), on_step=True, sync_dist=False)
        if in_a_row >= self.max_nonfinite_in_a_row:
            raise FloatingPointError(
                f"{type(self).__name__} {self.stage} stage: {in_a_row} non-finite steps in a row "
                f"(last: {what} at batch {self.batches}); stopping. The last checkpoint holds the weights before "
                f"the first of them; lower the learning rate or check the data")

    def guarded_step(self, opt, loss: torch.Tensor, what: str) -> bool:
        """Backward + step of `opt` unless `loss` or the gradient norm is not finite on some rank
        (then skipped, see the module docstring). Returns True when the step was taken."""
        params = [p for group in opt.param_groups for p in group["params"]]
        if not self._all_ranks(bool(torch.isfinite(loss.detach()).all())):
            self._skip(opt, params, f"{what} loss", backward_done=False)
            return False
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        with_grad = [p for p in params if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(with_grad, self.gradient_clip or float("inf")) if with_grad else None
        if norm is not None and not self._all_ranks(bool(torch.isfinite(norm))):
            self._skip(opt, params, f"{what} gradient", backward_done=True)
            return False
        opt.step()
        self._skipped_in_a_row[_optimiser_key(opt)] = 0
        return True

    # ------------------------------------------------------------------ EMA
    @torch.no_grad()
    def update_ema(self) -> None:
        """<EMA_OF>_ema <- decay * ema + (1 - decay) * live (parameters); buffers copied."""
        if self.ema_decay <= 0:
            return
        decay = min(self.ema_decay, (1.0 + self.batches) / (10.0 + self.batches))
        ema, live = getattr(self, f"{self.EMA_OF}_ema"), getattr(self, self.EMA_OF)
        for e, p in zip(ema.parameters(), live.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), live.buffers()):
            e.copy_(b)

    def start_ema_from_weights(self) -> None:
        """Restart the moving average from the current weights (after `load_stage_weights`)."""
        if self.ema_decay > 0:
            getattr(self, f"{self.EMA_OF}_ema").load_state_dict(getattr(self, self.EMA_OF).state_dict())

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.update_ema()
        every = self.sample_every_n_steps
        if every > 0 and self._samples is not None and self.batches % every == 0:
            self.write_samples()

    # ------------------------------------------------------------------ stage hand-over
    def load_stage_weights(self, checkpoint: str | Path) -> list[str]:
        """Copy what the checkpoint's stage trained (``STAGE_OUTPUTS[its stage]``) into this module.
        Keys this module lacks (e.g. a classifier head) are left out; a shape mismatch is an error.
        Returns the submodule paths loaded."""
        data = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        stage = data.get("hyper_parameters", {}).get("stage")
        if stage not in self.STAGE_OUTPUTS:
            raise ValueError(f"{checkpoint}: a checkpoint of stage {stage!r}, not one of {self.STAGES}")
        state, ours = data["state_dict"], self.state_dict()
        loaded = []
        for path in self.STAGE_OUTPUTS[stage]:
            prefix = f"{path}."
            part = {k: v for k, v in state.items() if k.startswith(prefix) and k in ours}
            if not part:
                continue
            wrong = [k for k, v in part.items() if tuple(v.shape) != tuple(ours[k].shape)]
            if wrong:
                raise ValueError(f"{checkpoint}: {path} weights do not fit this model config ({wrong[:3]} ...)")
            self.load_state_dict(part, strict=False)
            loaded.append(path)
        return loaded

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        bad = [k for k, v in checkpoint["state_dict"].items()
               if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise FloatingPointError(f"refusing to checkpoint non-finite weights: {bad[:5]}")
        checkpoint["talkinghead"] = {"skipped": self.skipped, "rng": random_states()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("talkinghead", {})
        self.skipped = int(saved.get("skipped", 0))
        if "rng" in saved:  # a resumed run draws the random numbers an uninterrupted one would have
            restore_random_states(saved["rng"])

    # ------------------------------------------------------------------ validation
    def configure_validation(self, metrics: list[str], store: str | Path | None, video: bool = True) -> None:
        """Score held-out clips with `metrics` (`training.validation.Validator`) in Lightning's
        validation loop (the runner gives it `ValidationClips`); `video`: write the first clip as
        an mp4 with its audio. A stage whose `validation_generator()` is None does not validate."""
        self._validation = {"metrics": list(metrics), "store": store, "video": bool(video)}
        self._validator = None

    def validation_step(self, clip: dict, batch_idx: int) -> None:
        from talkinghead.training.validation import Validator, request_for, write_sample_video

        setup = getattr(self, "_validation", None)
        if setup is None or not self.validates:
            return
        if getattr(self, "_validator", None) is None:
            self._validator = Validator(setup["metrics"], setup["store"], self.device)
        if batch_idx == 0:  # one generator per validation run
            self._validation_generator = self.validation_generator()
        fake = self._validation_generator.generate(request_for(clip))
        self._validator.update(fake.to(self.device), {k: v.to(self.device) if torch.is_tensor(v) else v
                                                      for k, v in clip.items()})
        if batch_idx == 0 and setup["video"] and self.trainer.is_global_zero:
            folder = self.samples_folder()
            path = write_sample_video(folder / f"{self.stage}-step{self.batches:06d}.mp4", fake, clip)
            for logger in self.trainer.loggers:
                if hasattr(logger, "log_video"):
                    try:
                        logger.log_video(key=f"videos/{self.stage}", videos=[str(path)], step=self.trainer.global_step,
                                         caption=[f"{clip['clip_id']}: generated | real"])
                    except Exception as error:  # noqa: BLE001 - a logger failure must not stop training
                        log.warning("sample video not logged to %s: %s", type(logger).__name__, error)

    def on_validation_epoch_end(self) -> None:
        self._validation_generator = None
        validator = getattr(self, "_validator", None)
        if validator is None:
            return
        for column, value in validator.compute().items():
            self.log(f"val/{column}", value, on_epoch=True, sync_dist=False)
        validator.reset()

    # ------------------------------------------------------------------ samples
    def samples_folder(self) -> Path:
        """``<first logger's log dir>/samples`` (no collective call: `Trainer.log_dir` broadcasts
        under DDP, and samples are written on rank 0 alone)."""
        trainer = self.trainer
        logger_dir = getattr(trainer.loggers[0], "log_dir", None) if trainer.loggers else None
        return Path(logger_dir or trainer.default_root_dir) / "samples"

    def remember_samples(self, columns: dict[str, torch.Tensor], rows: int = 4) -> None:
        """Keep the first `rows` images of each column ((B, 3, S, S) in [-1, 1]) for the next grid."""
        self._samples = {k: v[:rows].detach().float().cpu() for k, v in columns.items()}

    def write_samples(self) -> Path | None:
        """Write the remembered images as ``<log dir>/samples/<stage>-step<batches>.png`` and send the
        grid to every logger that takes images (rank 0; once per batch count)."""
        if self._samples is None or self._last_sample == self.batches:
            return None
        self._last_sample = self.batches
        return self._write_grid(self._samples, self.batches)

    # ------------------------------------------------------------------------------- VGG loss
    def perceptual_loss(self, enabled: bool = True, **options: Any):
        """The VGG19 perceptual loss (`talkinghead.nn.vgg.VGGPerceptualLoss` with ImageNet weights,
        `options` passed on), built on first use and kept out of the module tree (never
        checkpointed); None when not `enabled` or when the VGG19 file is missing (the run then says
        so once, with where to put it)."""
        if not enabled:
            return None
        if getattr(self, "_vgg_state", "unset") == "unset":
            from talkinghead import weights
            from talkinghead.nn.vgg import VGGPerceptualLoss

            try:
                # its random init (overwritten by the weights) must not draw from the training RNG:
                # a resumed run builds it at another step than an uninterrupted one
                with torch.random.fork_rng(devices=[]):
                    self._vgg_holder = [VGGPerceptualLoss(pretrained=True, **options).to(self.device)]
                self._vgg_state = "on"
            except weights.MissingWeightsError as error:
                self._vgg_state = "off"
                self._warn(f"{type(self).__name__}: the VGG19 perceptual loss is OFF (its weight ignored): "
                           f"{str(error).splitlines()[0]} - put it at "
                           f"{weights.home() / weights.asset('vgg19').file} to enable it")
        if self._vgg_state != "on":
            return None
        if self._vgg_holder[0].mean.device != self.device:
            self._vgg_holder = [self._vgg_holder[0].to(self.device)]
        return self._vgg_holder[0]

    @rank_zero_only
    def _warn(self, message: str) -> None:
        log.warning(message)

    @rank_zero_only
    def _write_grid(self, columns: dict[str, torch.Tensor], step: int) -> Path:
        import cv2

        grid = sample_grid(columns)
        trainer = self.trainer
        folder = self.samples_folder()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.stage}-step{step:06d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                try:
                    logger.log_image(key=f"samples/{self.stage}", images=[grid], step=trainer.global_step,
                                     caption=[" | ".join(columns)])
                except Exception as error:  # noqa: BLE001 - a logger failure must not stop training
                    log.warning("sample grid not logged to %s: %s", type(logger).__name__, error)
        return path


def sample_grid(columns: dict[str, torch.Tensor], rows: int = 4) -> np.ndarray:
    """uint8 (H, W, 3) grid: one row per sample (up to `rows`), one column per entry of `columns`
    (each (B, 3, S, S) in [-1, 1], resized to the first column's size)."""
    tiles = []
    first = next(iter(columns.values()))
    n = min(rows, first.shape[0])
    size = first.shape[-1]
    for i in range(n):
        row = []
        for images in columns.values():
            x = images[i].detach().float().cpu()
            if x.shape[-1] != size:
                x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
            row.append(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
        tiles.append(np.concatenate(row, axis=1))
    return np.ascontiguousarray(np.concatenate(tiles, axis=0))


def config_section(cls, values: dict | None, what: str) -> dict:
    """`values` over `cls`'s defaults as a dict; an unknown key is a ValueError naming it."""
    values = dict(values or {})
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; valid: {', '.join(valid)}")
    return asdict(cls(**values))


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 3, H, W) images -> (..., 3, size, size) (bilinear, antialiased when shrinking); as is when H == size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    shape = x.shape
    y = F.interpolate(x.reshape(-1, *shape[-3:]), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=size < shape[-1])
    return y.reshape(*shape[:-2], size, size)


def unique_parameters(groups: dict[str, list[torch.nn.Module]]) -> dict[str, list[torch.nn.Parameter]]:
    """{group: the parameters of its modules}, each parameter in the first group that names it only."""
    out: dict[str, list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for name, modules in groups.items():
        out[name] = []
        for module in modules:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out[name].append(p)
    return out
