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
It is made by a *factory* ``factory(checkpoint: Path | None, device: str) -> generator``. The
rows the benchmark can score are the four built-in baselines below (``ground_truth``,
``static``, ``mouth_only``, ``reference_replay``) plus every registered method's
bench rows (`talkinghead.methods.registry.bench_rows`, declared in each method's ``method.py``):
adding a method adds its rows here with no change to this file. `register_method` adds an ad-hoc
row (a generator in a notebook or a test). `build_method(name, checkpoint, device)` builds one.

When no checkpoint is given, `default_checkpoint` takes the row's own ``find_checkpoint`` (a
registered method's final-stage ``last.ckpt``) or else the newest ``*.ckpt`` under
``runs/<name>/`` (``$TALKINGHEAD_RUNS`` overrides ``runs``).

Ground truth is never given to a method: `GenerationRequest.ground_truth` is filled by the
harness only for generators whose ``needs_ground_truth`` attribute is True — the ``ground_truth``
baseline, which exists to score the real video itself (the papers' "Ground Truth" row).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

# the request types and the runs folder live in the generation base (re-exported here)
from talkinghead.generation import GenerationRequest, TalkingHeadGenerator, runs_root
from talkinghead.methods.registry import bench_rows

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


class UnknownMethodError(KeyError):
    """A method name that is neither a baseline nor a registered method's bench row."""

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


def method_names() -> list[str]:
    """Every row the benchmark can score: the baselines and every registered method's rows."""
    return sorted(METHODS)


def method_spec(name: str) -> MethodSpec:
    """The row `name`; UnknownMethodError listing the valid names otherwise."""
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}; choose from: {', '.join(method_names())}")
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


class MouthOnly:
    """The reference image with the real clip's mouth pasted in: perfect lips, nothing else moves.

    Reads the ground truth (``needs_ground_truth``), like `GroundTruth`: it is a scale marker, not a
    method. The clip stores' aligned frames keep the inner-mouth centre at
    `talkinghead.data.faces.ALIGN_ANCHORS[2]` (112, 120) in every frame, so the pasted region is a
    fixed ellipse there (semi-axes `MOUTH_AXES` px at 224, scaled with the frame), feathered over
    `FEATHER` px. Lip-sync scores read near the ground truth's, pose / eye / expression scores near
    `static`'s: the floor and ceiling of each score side by side.
    """

    name = "mouth_only"
    needs_ground_truth = True
    description = "the reference frame with the real mouth pasted in (lips only)"
    checkpoint = None
    MOUTH_AXES = (34.0, 24.0)
    FEATHER = 6.0

    def mask(self, height: int, width: int) -> torch.Tensor:
        """(1, H, W) paste weight in [0, 1]: 1 inside the mouth ellipse, 0 outside its feather."""
        import torch

        from talkinghead.data.faces import ALIGN_ANCHORS, ALIGN_SIZE

        scale_x, scale_y = width / ALIGN_SIZE, height / ALIGN_SIZE
        cx, cy = ALIGN_ANCHORS[2][0] * scale_x, ALIGN_ANCHORS[2][1] * scale_y
        ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                                indexing="ij")
        radius = torch.sqrt(((xs - cx) / (self.MOUTH_AXES[0] * scale_x)) ** 2
                            + ((ys - cy) / (self.MOUTH_AXES[1] * scale_y)) ** 2)
        feather = self.FEATHER * scale_x / self.MOUTH_AXES[0]  # in units of the normalised radius
        return ((1 + feather - radius) / feather).clamp(0, 1)[None]

    def generate(self, request: GenerationRequest) -> torch.Tensor:
        if request.ground_truth is None:
            raise ValueError(f"{request.clip_id}: no ground-truth frames in the request")
        real = request.ground_truth
        weight = self.mask(real.shape[-2], real.shape[-1]).to(real)
        return request.reference.to(real) * (1 - weight) + real * weight


class ReferenceReplay:
    """Copied reference motion: the request's reference video replayed, a head-motion baseline.

    For protocols with reference frames (`talkinghead.bench.protocol.Protocol.reference_frames`,
    e.g. ``synth-rhythmic``): the P reference frames played back and forth in a "ping-pong" loop
    that starts where the reference video ends, so the head never jumps: reference frames P-1,
    P-2, .., 0, 1, .., P-1, P-2, .. (`replay_index`). The head moves with the real
    motion statistics of the same person, and of nothing the driving audio says: a method whose
    motion follows the audio should beat it on the audio-correlation score, and on pose error only
    by chance. Lips are those of the reference video (not in sync). Without a reference video in
    the request (protocols with a reference image) it cannot run: ValueError.
    """

    name = "reference_replay"
    description = "the reference video replayed back and forth (copied reference head motion)"
    checkpoint = None

    @staticmethod
    def replay_index(count: int, length: int):
        """(count,) int64 frame indices into a P = `length` frame reference video: the ping-pong
        loop starting at its last frame, going back (P - 1, P - 2, .., 0, 1, ..)."""
        import torch

        if length == 1:
            return torch.zeros(count, dtype=torch.long)
        period = 2 * (length - 1)
        phase = (torch.arange(count) + (length - 1)) % period  # phase P-1 = the last frame
        return (length - 1) - (phase - (length - 1)).abs()

    def generate(self, request: GenerationRequest) -> torch.Tensor:
        video = request.reference_video
        if video is None:
            raise ValueError(f"{request.clip_id}: reference_replay needs a reference video (a protocol with "
                             "reference_frames, e.g. synth-rhythmic)")
        index = self.replay_index(request.num_frames, len(video))
        return video.frames[index].to(request.reference)


@register_method("ground_truth", description=GroundTruth.description)
def _ground_truth(checkpoint: Path | None, device: str) -> TalkingHeadGenerator:
    return GroundTruth()


@register_method("static", description=Static.description)
def _static(checkpoint: Path | None, device: str) -> TalkingHeadGenerator:
    return Static()


@register_method("mouth_only", description=MouthOnly.description)
def _mouth_only(checkpoint: Path | None, device: str) -> TalkingHeadGenerator:
    return MouthOnly()


@register_method("reference_replay", description=ReferenceReplay.description)
def _reference_replay(checkpoint: Path | None, device: str) -> TalkingHeadGenerator:
    return ReferenceReplay()


def _add_registered_methods() -> None:
    """One row per bench row of every registered method (`talkinghead.methods.registry`)."""
    for name, (method, row) in bench_rows().items():
        METHODS[name] = MethodSpec(name, row.factory, row.needs_checkpoint,
                                   method.default_checkpoint if row.needs_checkpoint else None, row.description)


_add_registered_methods()


def describe(generator: Any) -> dict:
    """What run.json records about a built method."""
    checkpoint = getattr(generator, "checkpoint", None)
    return {
        "name": getattr(generator, "name", type(generator).__name__),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "description": getattr(generator, "description", "") or "",
        "class": f"{type(generator).__module__}.{type(generator).__qualname__}",
    }
