"""What the benchmark asks of a talking-head method, and the name -> method registry.

Conventions
-----------
* Frames are ``torch.float32`` tensors ``(T, 3, H, W)``, RGB in ``[0, 1]`` (H = W = 224 for the
  clip stores: the aligned frames of `talkinghead.data.store`). A single image is ``(3, H, W)``.
* Audio is ``torch.float32`` ``(N,)``, mono, 16 kHz, in ``[-1, 1]`` (not normalised).
* Video runs at 25 fps: frame ``t`` covers audio samples ``[640 t, 640 (t + 1))``.
* Request tensors may share memory with each other and with what the metrics see (a repeated
  frame is an expanded view): methods read them and never write into them.
* Requests arrive on the CPU; a generator moves what it needs to its own device and may return
  frames on any device (the harness moves them to the metrics' device).

A method is anything with a ``name`` and ``generate(request) -> frames`` (`TalkingHeadGenerator`).
It is made by a *factory* ``factory(checkpoint: Path | None, device: str) -> generator``
registered under a name with `register_method`. `build_method(name, checkpoint, device)` builds
one; when ``name`` is not registered yet it imports ``talkinghead.methods.<name>.bench``, so a
method package plugs in by shipping that module (which registers on import), with no change
here. A hook may register several names (``pcavs`` and ``pcavs_official``): a name with no
package of its own is found by importing every ``talkinghead.methods.*.bench`` there is (as
`method_names()` does)::

    # talkinghead/methods/pcavs/bench.py
    from talkinghead.bench.methods import register_method

    @register_method("pcavs", needs_checkpoint=True, description="PC-AVS (ours, Lightning)")
    def build(checkpoint, device):
        return PCAVSGenerator.from_checkpoint(checkpoint, device)

When no checkpoint is given, `default_checkpoint` takes the registration's own ``find_checkpoint``
or else the newest ``*.ckpt`` under ``runs/<name>/`` (``$TALKINGHEAD_RUNS`` overrides ``runs``).

Ground truth is never given to a method: `GenerationRequest.ground_truth` is filled by the
harness only for generators whose ``needs_ground_truth`` attribute is True — the ``ground_truth``
baseline, which exists to score the real video itself (the papers' "Ground Truth" row).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is imported by whoever makes tensors; `talkinghead --help` stays fast
    import torch

__all__ = [
    "METHODS",
    "GenerationRequest",
    "MethodSpec",
    "TalkingHeadGenerator",
    "UnknownMethodError",
    "build_method",
    "default_checkpoint",
    "method_names",
    "method_spec",
    "describe",
    "register_method",
    "runs_root",
]

FPS = 25
SAMPLE_RATE = 16000


@dataclass
class GenerationRequest:
    """Everything a method may use to generate one clip (see the module docstring for conventions).

    clip_id:        the clip being generated (the store's clip_id).
    reference:      (3, H, W) identity reference image (the protocol's choice: the clip's first frame).
    audio:          (N,) driving audio, 16 kHz.
    num_frames:     T, the number of frames to return (25 fps).
    pose_source:    (T, 3, H, W) frames to take head pose from, or None (method's own / frontal).
    eye_source:     (T, 3, H, W) frames to take blinks and gaze from, or None.
    emotion_source: (T, 3, H, W) frames to take the expression from, or None.
                    Self-driven: all three are the clip's own frames. Cross-driven (PD-FGC): the
                    protocol's cross sources (default all three) come from another clip
                    (`source_clip_id`), by default its first frame repeated T times.
    labels:         the clip's dataset labels (MEAD: emotion, level, view; LRW: word, ...).
    setting:        "self" or "cross" (see `talkinghead.bench.protocol`).
    source_clip_id: clip_id of the clip the cross-driven sources come from (the clip itself when
                    self-driven).
    fps, sample_rate: 25 and 16000.
    ground_truth:   (T, 3, H, W) the clip's real frames. Reserved to the ``ground_truth`` baseline:
                    the harness fills it only for generators with ``needs_ground_truth = True`` and
                    leaves it None for every other method, so no method can read it by mistake.
    """

    clip_id: str
    reference: torch.Tensor
    audio: torch.Tensor
    num_frames: int
    pose_source: torch.Tensor | None = None
    eye_source: torch.Tensor | None = None
    emotion_source: torch.Tensor | None = None
    labels: dict = field(default_factory=dict)
    setting: str = "self"
    source_clip_id: str | None = None
    fps: float = FPS
    sample_rate: int = SAMPLE_RATE
    ground_truth: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.reference.ndim != 3 or self.reference.shape[0] != 3:
            raise ValueError(f"{self.clip_id}: reference must be (3, H, W), got {tuple(self.reference.shape)}")
        if self.audio.ndim != 1:
            raise ValueError(f"{self.clip_id}: audio must be (N,), got {tuple(self.audio.shape)}")
        if self.num_frames < 1:
            raise ValueError(f"{self.clip_id}: num_frames must be >= 1, got {self.num_frames}")
        for name in ("pose_source", "eye_source", "emotion_source", "ground_truth"):
            value = getattr(self, name)
            if value is not None and (value.ndim != 4 or value.shape[1] != 3 or len(value) != self.num_frames):
                raise ValueError(f"{self.clip_id}: {name} must be ({self.num_frames}, 3, H, W), "
                                 f"got {tuple(value.shape)}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames to generate (the reference's size)."""
        return int(self.reference.shape[1]), int(self.reference.shape[2])


@runtime_checkable
class TalkingHeadGenerator(Protocol):
    """A method under benchmark.

    name:      the registry name (a row of the results table).
    generate:  request -> float (T, 3, H, W) frames in [0, 1], T = request.num_frames and (H, W) =
               request.size.

    Optional attributes the harness reads with getattr: ``checkpoint`` (Path | None, recorded in
    run.json), ``description`` (str, recorded), ``needs_ground_truth`` (bool, default False; see
    `GenerationRequest.ground_truth`).
    """

    name: str

    def generate(self, request: GenerationRequest) -> torch.Tensor: ...


Factory = Callable[[Path | None, str], TalkingHeadGenerator]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    factory:          ``factory(checkpoint, device) -> generator``.
    needs_checkpoint: True when the factory cannot work without a checkpoint (one is then looked
                      up with `default_checkpoint` when the user gives none).
    find_checkpoint:  optional ``find_checkpoint() -> Path | None`` replacing the default lookup.
    description:      one line for listings and run.json.
    """

    name: str
    factory: Factory
    needs_checkpoint: bool = False
    find_checkpoint: Callable[[], Path | None] | None = None
    description: str = ""


METHODS: dict[str, MethodSpec] = {}
_PLUGIN_ERRORS: dict[str, str] = {}


class UnknownMethodError(KeyError):
    """A method name that no registration and no `talkinghead.methods.<name>` module provides."""

    def __str__(self) -> str:  # KeyError quotes its message; show it as a sentence
        return str(self.args[0]) if self.args else ""


def register_method(
    name: str,
    *,
    needs_checkpoint: bool = False,
    find_checkpoint: Callable[[], Path | None] | None = None,
    description: str = "",
) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory(checkpoint, device) -> generator`` as method `name`."""

    def add(factory: Factory) -> Factory:
        if name in METHODS and METHODS[name].factory is not factory:
            raise ValueError(f"method {name!r} is already registered")
        doc = (factory.__doc__ or "").strip().splitlines()
        METHODS[name] = MethodSpec(name, factory, needs_checkpoint, find_checkpoint,
                                   description or (doc[0] if doc else ""))
        return factory

    return add


def runs_root() -> Path:
    """Folder of training runs: ``$TALKINGHEAD_RUNS`` or ``runs`` (relative to the working directory)."""
    return Path(os.environ.get("TALKINGHEAD_RUNS") or "runs")


def default_checkpoint(name: str) -> Path | None:
    """The checkpoint method `name` uses when none is given: its registration's ``find_checkpoint``,
    else the most recently modified ``*.ckpt`` under ``runs/<name>/`` (None when there is none)."""
    spec = method_spec(name)
    if spec.find_checkpoint is not None:
        return spec.find_checkpoint()
    folder = runs_root() / name
    if not folder.is_dir():
        return None
    found = [p for p in folder.rglob("*.ckpt") if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p))) if found else None


def _import_plugin(name: str) -> None:
    """Import ``talkinghead.methods.<name>.bench`` if it exists (its import registers the method).

    A hook that exists but fails to import is remembered and named by `method_spec`'s error.
    """
    if not name.isidentifier():
        return
    module = f"talkinghead.methods.{name}.bench"
    try:
        if importlib.util.find_spec(module) is None:
            return
    except ModuleNotFoundError:  # no talkinghead.methods.<name> package at all
        return
    try:
        importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - a broken plugin must not hide the others
        _PLUGIN_ERRORS[name] = f"{module}: {type(error).__name__}: {error}"


def _discover() -> None:
    """Import the bench hook of every `talkinghead.methods` subpackage (for listings)."""
    try:
        package = importlib.import_module("talkinghead.methods")
    except ModuleNotFoundError:
        return
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg and info.name not in METHODS:
            _import_plugin(info.name)


def method_names() -> list[str]:
    """Every method name available: built-ins plus those `talkinghead.methods.*` packages register."""
    _discover()
    return sorted(METHODS)


def method_spec(name: str) -> MethodSpec:
    """The registration of method `name` (importing its module when needed); UnknownMethodError
    listing the valid names otherwise."""
    if name not in METHODS:
        _import_plugin(name)
    if name not in METHODS:  # a name registered by another package's hook (pcavs_official by pcavs)
        _discover()
    if name not in METHODS:
        names = method_names()
        message = f"unknown method {name!r}; choose from: {', '.join(names)}"
        broken = [f"{n} ({why})" for n, why in sorted(_PLUGIN_ERRORS.items())]
        if broken:
            message += "; method modules that failed to import: " + "; ".join(broken)
        raise UnknownMethodError(message)
    return METHODS[name]


def build_method(name: str, checkpoint: str | Path | None = None, device: str = "cpu") -> TalkingHeadGenerator:
    """Build method `name` on `device`, from `checkpoint` or its default one (`default_checkpoint`).

    Raises UnknownMethodError (listing valid names) for an unknown name and FileNotFoundError when
    a method needs a checkpoint and none is given or found.
    """
    spec = method_spec(name)
    path = Path(checkpoint) if checkpoint is not None else None
    if path is None and spec.needs_checkpoint:
        path = default_checkpoint(name)
        if path is None:
            raise FileNotFoundError(
                f"method {name!r} needs a checkpoint and none was given or found under {runs_root() / name}/ "
                f"(train one first, or pass --checkpoint {name}=PATH)")
    if path is not None and not path.exists():
        raise FileNotFoundError(f"checkpoint for method {name!r} not found: {path}")
    generator = spec.factory(path, device)
    if not isinstance(generator, TalkingHeadGenerator):
        raise TypeError(f"method {name!r}: factory returned {type(generator).__name__}, which has no "
                        "`name` / `generate(request)`")
    if getattr(generator, "checkpoint", None) is None and path is not None:
        try:
            generator.checkpoint = path
        except AttributeError:
            pass
    return generator


# ---------------------------------------------------------------------------------------------
# built-in baselines
# ---------------------------------------------------------------------------------------------
class GroundTruth:
    """The real frames of the clip: the upper bound the papers list as "Ground Truth"."""

    name = "ground_truth"
    needs_ground_truth = True
    description = "the clip's real frames (upper bound)"
    checkpoint = None

    def generate(self, request: GenerationRequest) -> torch.Tensor:
        if request.ground_truth is None:
            raise ValueError(f"{request.clip_id}: no ground-truth frames in the request")
        return request.ground_truth


class Static:
    """The reference image repeated for every frame: no motion, no lip sync (a lower bound)."""

    name = "static"
    description = "the reference frame repeated (no motion)"
    checkpoint = None

    def generate(self, request: GenerationRequest) -> torch.Tensor:
        return request.reference.unsqueeze(0).expand(request.num_frames, -1, -1, -1).contiguous()


@register_method("ground_truth", description=GroundTruth.description)
def _ground_truth(checkpoint: Path | None, device: str) -> TalkingHeadGenerator:
    return GroundTruth()


@register_method("static", description=Static.description)
def _static(checkpoint: Path | None, device: str) -> TalkingHeadGenerator:
    return Static()


def describe(generator: Any) -> dict:
    """What run.json records about a built method."""
    checkpoint = getattr(generator, "checkpoint", None)
    return {
        "name": getattr(generator, "name", type(generator).__name__),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "description": getattr(generator, "description", "") or "",
        "class": f"{type(generator).__module__}.{type(generator).__qualname__}",
    }
