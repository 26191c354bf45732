"""The factor-control matrix (PD-FGC's supplementary table): change one driver, see what moves.

For each clip of a run's selection (at most ``clips``) and each method, the clip is generated
self-driven (the *base*), then once per driving factor with only that driver taken from another
clip of the selection (the next one, cyclically), played frame by frame:

    lip      the audio              (the other clip's, cut or looped to the clip's length)
    pose     ``request.pose_source``
    eye      ``request.eye_source``
    emotion  ``request.emotion_source``

Every estimated factor group of `talkinghead.metrics.factors` (mouth, pose, blink, gaze,
expression) is measured on the base and on each changed output (dlib landmarks, frame by
frame). Entry ``[driver, group]`` is the RMS over frames of the change of the group's features
between the changed output and the base, divided by the features' natural spread (the std over
time, around each clip's mean, of the same estimates on the selected clips' real frames), averaged
over the group's features and the clips. 0: the group did not move; about 1: it moved as much as it
does in real video. A disentangled method has a large diagonal (lip -> mouth, pose -> pose,
eye -> blink and gaze, emotion -> expression) and small entries elsewhere; a method that ignores a
driver has a row of zeros. The ``ground_truth``, ``static`` and ``mouth_only`` baselines ignore
every driver, so their matrices are zero: they are listed for completeness.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from talkinghead.bench.protocol import ClipData, Selection, fit_length, load_clip

if TYPE_CHECKING:
    import torch

__all__ = ["DRIVERS", "GROUPS", "ControlClips", "ControlMatrix", "control_clips", "control_matrix", "markdown_matrices",
           "plot_matrices"]

DRIVERS = ("lip", "pose", "eye", "emotion")
#: the estimated factor groups (`talkinghead.metrics.factors.FACTOR_GROUPS`), in table order
GROUPS = ("mouth", "pose", "blink", "gaze", "expression")


@dataclass
class ControlMatrix:
    """One method's matrix: values[d][g] for driver d in DRIVERS and group g in GROUPS (None: not
    measured), and the clips it averages."""

    method: str
    values: list[list[float | None]]
    clips: int
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"method": self.method, "drivers": list(DRIVERS), "groups": list(GROUPS), "values": self.values,
                "clips": self.clips, "errors": self.errors}


def _estimates(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] -> (T, F) estimates, columns `FACTOR_NAMES` (NaN rows: no face)."""
    from talkinghead.data.faces import detect_landmarks
    from talkinghead.metrics.factors import FACTOR_NAMES, estimate_factors
    from talkinghead.metrics.image import frames_to_uint8

    images = frames_to_uint8(frames)
    landmarks, _ = detect_landmarks(images)
    estimate = estimate_factors(images, landmarks)
    return np.stack([estimate[name] for name in FACTOR_NAMES], axis=1)


def _columns(group: str) -> list[int]:
    from talkinghead.metrics.factors import FACTOR_GROUPS, FACTOR_NAMES

    return [FACTOR_NAMES.index(name) for name in FACTOR_GROUPS[group]]


def _fit_audio(audio: torch.Tensor, length: int) -> torch.Tensor:
    import torch

    if len(audio) >= length:
        return audio[:length].clone()
    repeats = -(-length // max(1, len(audio)))
    return torch.cat([audio] * repeats)[:length]


def changed_request(data: ClipData, other: ClipData, driver: str) -> Any:
    """The clip's self-driven request with `driver` (DRIVERS) taken from `other`."""
    import dataclasses

    request = data.request
    count = request.num_frames
    if driver == "lip":
        return dataclasses.replace(request, audio=_fit_audio(other.request.audio, len(request.audio)))
    source = fit_length(other.real_frames, count)
    return dataclasses.replace(request, **{f"{driver}_source": source})


def natural_spread(estimates: list[np.ndarray]) -> np.ndarray:
    """(F,) std over time of real-frame estimates around each clip's mean, pooled over clips."""
    centred = [e - np.nanmean(e, axis=0) for e in estimates if np.isfinite(e).any()]
    spread = np.nanstd(np.concatenate(centred), axis=0)
    return np.where(np.isfinite(spread) & (spread > 1e-9), spread, np.nan)


def _rms_over_measured_frames(delta: np.ndarray) -> np.ndarray:
    """RMS over time of (T, F) changes, per feature, over the frames where it was measured (finite);
    features never measured (no face found, or no natural spread) are left out."""
    finite = np.isfinite(delta)
    frames = finite.sum(axis=0)
    squares = np.where(finite, delta, 0.0) ** 2
    return np.sqrt(squares.sum(axis=0)[frames > 0] / frames[frames > 0])


@dataclass
class ControlClips:
    """What every method's matrix shares: the clips, loaded self-driven, and the natural spread
    (`natural_spread`) of the factors estimated on their real frames."""

    loaded: list[ClipData]
    spread: np.ndarray


def control_clips(store: Any, selections: list[Selection], clips: int = 10) -> ControlClips:
    """The first `clips` (at least 2) selections, loaded once for every method's matrix."""
    chosen = selections[: max(2, clips)]
    if len(chosen) < 2:
        raise ValueError("the control matrix needs at least two clips (one lends its drivers to the other)")
    loaded = [load_clip(store, Selection(s.entry, "self", s.entry)) for s in chosen]
    return ControlClips(loaded, natural_spread([_estimates(d.real_frames) for d in loaded]))


def control_matrix(generator: Any, shared: ControlClips, log: Callable[[str], None] = print) -> ControlMatrix:
    """The matrix of `generator` on the clips of `shared` (module docstring)."""
    import torch

    loaded, spread = shared.loaded, shared.spread
    give_truth = bool(getattr(generator, "needs_ground_truth", False))
    sums = np.zeros((len(DRIVERS), len(GROUPS)))
    counts = np.zeros((len(DRIVERS), len(GROUPS)))
    errors: list[str] = []
    name = getattr(generator, "name", type(generator).__name__)
    for i, data in enumerate(loaded):
        other = loaded[(i + 1) % len(loaded)]
        try:
            with torch.no_grad():
                data.request.ground_truth = data.real_frames if give_truth else None
                base = _estimates(torch.as_tensor(generator.generate(data.request)).float().cpu())
                for d, driver in enumerate(DRIVERS):
                    request = changed_request(data, other, driver)
                    request.ground_truth = data.real_frames if give_truth else None
                    changed = _estimates(torch.as_tensor(generator.generate(request)).float().cpu())
                    n = min(len(base), len(changed))
                    for g, group in enumerate(GROUPS):
                        cols = _columns(group)
                        delta = (changed[:n, cols] - base[:n, cols]) / spread[cols]
                        rms = _rms_over_measured_frames(delta)
                        if rms.size:
                            sums[d, g] += float(rms.mean())
                            counts[d, g] += 1
        except Exception as error:  # noqa: BLE001 - the other clips still count
            errors.append(f"{data.selection.clip_id}: {type(error).__name__}: {error}")
            log(f"[{name}] control matrix: {errors[-1]}")
    values = [[float(sums[d, g] / counts[d, g]) if counts[d, g] else None for g in range(len(GROUPS))]
              for d in range(len(DRIVERS))]
    return ControlMatrix(name, values, int(counts.max()) if counts.size else 0, errors)


def markdown_matrices(matrices: list[ControlMatrix], protocol: str) -> str:
    """One markdown table per method: rows the driver changed, columns the estimated groups."""
    lines = [f"## Factor-control matrix — {protocol}", "",
             "Change one driver (row), RMS change of each estimated factor group (column) in units of its "
             "natural spread in real video; a disentangled method moves only its diagonal "
             "(lip-mouth, pose-pose, eye-blink/gaze, emotion-expression).", ""]
    for matrix in matrices:
        lines += [f"**{matrix.method}** ({matrix.clips} clips)", "",
                  "| driver changed | " + " | ".join(GROUPS) + " |", "|:---|" + "---:|" * len(GROUPS)]
        for driver, row in zip(DRIVERS, matrix.values):
            lines.append(f"| {driver} | " + " | ".join("n/a" if v is None else f"{v:.2f}" for v in row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_matrices(matrices: list[ControlMatrix], path: Path, protocol: str) -> Path:
    """A heat map per method, side by side, in one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from talkinghead.fileio import atomic_write

    fig = Figure(figsize=(3.4 * len(matrices) + 0.8, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    top = max([v for m in matrices for row in m.values for v in row if v is not None] + [1.0])
    for k, matrix in enumerate(matrices):
        ax = fig.add_subplot(1, len(matrices), k + 1)
        grid = np.array([[np.nan if v is None else v for v in row] for row in matrix.values])
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=top)
        ax.set_xticks(range(len(GROUPS)), GROUPS, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(DRIVERS)), DRIVERS if k == 0 else [""] * len(DRIVERS), fontsize=8)
        for (r, c), value in np.ndenumerate(grid):
            ax.text(c, r, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="#555555" if np.isnan(value) else "white" if value < 0.6 * top else "black")
        ax.set_title(matrix.method, fontsize=9)
    fig.colorbar(image, ax=fig.axes, shrink=0.8, label="RMS change / natural spread")
    fig.suptitle(f"factor control — {protocol} (row: driver changed)", fontsize=10)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    return Path(path)
