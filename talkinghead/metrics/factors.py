"""Per-factor motion estimators and the factor-control score: did the output move as it was told?

PD-FGC claims control of lip, head pose, blink, gaze and expression one at a time. These
estimators measure each factor on any frames (generated or real) from dlib's 68 landmarks and,
for gaze, the pixels inside the eyes; `benchmarks/factors.py` and `tests/metrics/test_factors.py`
validate them against SynthTalk's exact ground truth on real renders.

Conventions
-----------
* Inputs: frames (T, H, W, 3) uint8 RGB and their landmarks (T, 68, 2) float pixels, NaN rows
  where no face was found. Every estimate is NaN on those rows.
* Head pose: `talkinghead.data.faces.estimate_head_pose`, the rigid weak-perspective fit to the
  canonical 3D template that the data layer uses; ``pitch, yaw, roll`` are the components of its
  rotation vector in radians (SynthTalk's ``truth_pose[:, :3]`` convention).
* Frontalisation: each landmark is moved back to the frontal template frame with the fitted pose,
  taking its depth from the template (two equations, two unknowns per point). Mouth, blink and
  expression are measured on these frontal points, in units of the inter-ocular distance (IOD),
  so they do not change with head pose to first order.
* mouth: ``mouth_open`` the jaw drop, nose base (33) to chin (8), and ``mouth_width`` the corner
  distance 48-54, both in IOD. (dlib's inner-lip points follow rendered mouths poorly: on the
  validation renders their gap correlates with the true opening at r 0.27-0.88, the jaw drop at
  0.84-0.94.)
* blink: ``eye_closure`` = 1 - EAR / 0.3, EAR the eye aspect ratio of Soukupova and Cech (2016),
  mean of both eyes; 0 is a typical open eye, larger is more closed.
* gaze: ``gaze_x, gaze_y``: the iris centre (the centroid of the pixels inside the eye contour
  36-41 / 42-47, weighted by their squared darkness below the eye's `IRIS_PERCENTILE`) relative to the midpoint of the eye corners, in the eye's own
  axes, divided by the eye width (corner distance); mean of both eyes. Positive x is image right,
  positive y is down.
* expression (frontal, IOD): ``brow_raise`` eye centre y minus brow y (17-26), ``brow_gap`` inner
  brow distance 21-22, ``corner_lift`` upper-lip-centre y minus the mean corner y (48, 54),
  ``corner_asym`` y48 - y54, ``lip_raise`` nose-base (33) to upper-lip (51) distance. They depend
  on the face's shape as well as on its expression: compare them within one identity.

The factor-control score (`FactorControl`, columns ``ctl-*``, higher is better) compares each
estimated factor of the generated clip with the *ground truth of its driver*: the Pearson
correlation over time between the estimate on the output and the driver's true track (SynthTalk
``truth_*``): the clip's own mouth track (the mouth is driven by the clip's audio), the pose
source's pose, the eye source's blink and horizontal gaze. Vertical gaze is estimated but not
scored: SynthTalk moves the iris by 0.035 IOD per unit of vertical gaze (under 1 px at 224 px),
which no estimator here resolves (r about 0 on the validation renders). Correlation is unit-free, so the estimators need
no calibration, and it ignores the constant offsets that identity shape puts on landmark-based
measures. A clip whose driver track is (nearly) constant has no defined correlation for that
factor and is skipped for it. ``err-pose`` adds the mean absolute pitch/yaw/roll error in
degrees against the pose source's truth. Emotion is constant within a clip, so it is scored by
identification instead (``acc-emotion``, MEAD layout with an emotion source only): the output's
mean expression features must be nearest to those of the real clip of the same identity showing the
driver's emotion, among that identity's clips of every emotion (`talkinghead.bench.protocol`).
"""
from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import torch
from torch import Tensor

from talkinghead.data.faces import POSE_REFERENCE_IOD, estimate_head_pose, face_template, rotation_matrix
from talkinghead.metrics.base import register_metric
from talkinghead.metrics.image import frames_to_uint8
from talkinghead.metrics.lmd import LandmarkMetric, as_landmarks

__all__ = ["FACTOR_GROUPS", "FACTOR_NAMES", "DRIVER_TRUTH_COLUMNS", "FactorControl", "correlation",
           "emotion_accuracy", "estimate_factors", "expression_features", "eye_state", "frontalise", "gaze_offsets",
           "mean_expression", "sweep_correlations"]

FACTOR_GROUPS: dict[str, tuple[str, ...]] = {
    "mouth": ("mouth_open", "mouth_width"),
    "pose": ("pitch", "yaw", "roll"),
    "blink": ("eye_closure",),
    "gaze": ("gaze_x", "gaze_y"),
    "expression": ("brow_raise", "brow_gap", "corner_lift", "corner_asym", "lip_raise"),
}
FACTOR_NAMES: tuple[str, ...] = tuple(name for names in FACTOR_GROUPS.values() for name in names)
#: the columns of a driver-truth track (T, 7): SynthTalk truth of the driver of each factor
DRIVER_TRUTH_COLUMNS = ("mouth_open", "pitch", "yaw", "roll", "blink", "gaze_x", "gaze_y")
IRIS_PERCENTILE = 40  # eye pixels darker than this percentile weigh in the iris centre
OPEN_EAR = 0.3  # eye aspect ratio of a typical open eye
EYES = (np.arange(36, 42), np.arange(42, 48))


def frontalise(landmarks: np.ndarray, pose: np.ndarray, reference_scale: float = POSE_REFERENCE_IOD) -> np.ndarray:
    """(T, 68, 2) image landmarks and their fitted pose (T, 6) -> (T, 68, 2) frontal template
    coordinates (IOD 1, y down), each point's depth taken from `face_template()`."""
    template_z = face_template()[:, 2].astype(np.float64)
    out = np.full(landmarks.shape, np.nan)
    for t, (lm, p) in enumerate(zip(landmarks.astype(np.float64), pose.astype(np.float64))):
        if not np.isfinite(lm).all():
            continue
        rot = rotation_matrix(p[:3])
        scale = reference_scale * np.exp(p[5])
        rhs = (lm - p[3:5]) / scale - np.outer(template_z, rot[:2, 2])  # (68, 2)
        out[t] = np.linalg.solve(rot[:2, :2], rhs.T).T
    return out


def _eye_aspect_ratio(points: np.ndarray) -> np.ndarray:
    """(T, 6, 2) eye contour (corner, two upper, corner, two lower) -> (T,) EAR."""
    vertical = (np.linalg.norm(points[:, 1] - points[:, 5], axis=-1)
                + np.linalg.norm(points[:, 2] - points[:, 4], axis=-1))
    return vertical / (2 * np.linalg.norm(points[:, 0] - points[:, 3], axis=-1))


def gaze_offsets(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(T, 2) iris offset (x, y) in eye widths, the mean of both eyes (module docstring)."""
    out = np.full((len(images), 2), np.nan)
    for t, (image, lm) in enumerate(zip(images, landmarks)):
        if not np.isfinite(lm).all():
            continue
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float64)
        eyes = []
        for idx in EYES:
            contour = lm[idx].astype(np.float64)
            left, right = contour[0], contour[3]
            width = float(np.linalg.norm(right - left))
            if width < 2:
                continue
            mask = np.zeros(gray.shape, np.uint8)
            cv2.fillPoly(mask, [np.round(contour * 8).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=3)
            ys, xs = np.nonzero(mask)
            if len(xs) < 4:
                continue
            values = gray[ys, xs]
            # squared darkness below the eye's 40th brightness percentile: iris and pupil, not sclera
            weight = np.clip(np.percentile(values, IRIS_PERCENTILE) - values, 0, None) ** 2
            if weight.sum() <= 0:
                continue
            centre = np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()
            axis = (right - left) / width
            normal = np.array([-axis[1], axis[0]])
            offset = centre - (left + right) / 2
            eyes.append([offset @ axis / width, offset @ normal / width])
        if eyes:
            out[t] = np.mean(eyes, axis=0)
    return out


#: `lid_brightness`'s box between an eye's corners: its inner part of the corner-to-corner width, and its
#: half height, both in eye widths; and the grey-level percentile read in it
LID_BOX_INNER, LID_BOX_HALF_HEIGHT, LID_PERCENTILE = 0.7, 0.3, 5.0
#: how `eye_state` measures closure: from the landmarks' eye aspect ratio, or `lid_brightness`
EYE_CLOSURES = ("landmarks", "lid")


def lid_brightness(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(T, 2) how far each eye's lids cover it, read from the pixels: the `LID_PERCENTILE`-th percentile
    grey level (0-1) of a box between the eye's corners (landmarks 36 / 39 and 42 / 45; the inner
    `LID_BOX_INNER` of their distance, +-`LID_BOX_HALF_HEIGHT` of it about their midpoint). The box
    follows the head, not the lids; its darkest pixels are the pupil and iris while the eye is open and
    the lid (lighter) once it closes: higher = more closed. Unlike the eye aspect ratio it does not rest
    on where dlib puts the lids (on SynthTalk's training clips dlib's closure is 0.36 on blink frames
    against 0.07 on open-eyed ones, r 0.54 with the true blink); it depends on the skin and iris tones,
    so compare it within a face (changes over time), not across faces. NaN where the landmarks are
    missing or the box leaves the image."""
    landmarks = np.asarray(landmarks, np.float64)
    out = np.full((len(images), 2), np.nan)
    for t, (image, lm) in enumerate(zip(images, landmarks)):
        if not np.isfinite(lm).all():
            continue
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
        for e, (left, right) in enumerate(((36, 39), (42, 45))):
            x0, x1 = sorted((lm[left, 0], lm[right, 0]))
            width, centre_y = x1 - x0, (lm[left, 1] + lm[right, 1]) / 2
            inset = (1 - LID_BOX_INNER) / 2 * width
            rows = slice(int(centre_y - LID_BOX_HALF_HEIGHT * width), int(centre_y + LID_BOX_HALF_HEIGHT * width) + 1)
            cols = slice(int(x0 + inset), int(x1 - inset) + 1)
            if width < 2 or rows.start < 0 or cols.start < 0 or rows.stop > grey.shape[0] or cols.stop > grey.shape[1]:
                continue
            out[t, e] = np.percentile(grey[rows, cols], LID_PERCENTILE)
    return out


def eye_state(images: np.ndarray, landmarks: np.ndarray, closure: str = "landmarks") -> np.ndarray:
    """(T, 4) eye state of each frame: the closure of the left (36-41) and right (42-47) eye and the
    gaze offset (x, y) of `gaze_offsets`. ``closure``: ``landmarks``, 1 - EAR / `OPEN_EAR` on the image
    landmarks (not frontalised: cheap enough to run on training batches), or ``lid``, `lid_brightness`.
    NaN where no face / eye is measurable."""
    landmarks = np.asarray(landmarks, np.float64)
    if closure == "landmarks":
        closed = np.stack([1 - _eye_aspect_ratio(landmarks[:, idx]) / OPEN_EAR for idx in EYES], axis=1)
    elif closure == "lid":
        closed = lid_brightness(images, landmarks)
    else:
        raise ValueError(f"eye_state: closure must be one of {', '.join(EYE_CLOSURES)}, got {closure!r}")
    return np.concatenate([closed, gaze_offsets(images, landmarks)], axis=1)


def _pose_and_front(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(found (T,), fitted pose (T, 6), frontalised landmarks (T, 68, 2)); NaN rows without a face."""
    landmarks = np.asarray(landmarks, np.float64)
    found = np.isfinite(landmarks).all(axis=(1, 2))
    pose = np.full((len(landmarks), 6), np.nan)
    if found.any():
        pose[found] = estimate_head_pose(landmarks[found])
    return found, pose, frontalise(landmarks, np.nan_to_num(pose))


def _expression(front: np.ndarray) -> dict[str, np.ndarray]:
    y = front[..., 1]
    return {
        "brow_raise": y[:, 36:48].mean(1) - y[:, 17:27].mean(1),
        "brow_gap": np.linalg.norm(front[:, 22] - front[:, 21], axis=-1),
        "corner_lift": y[:, 51] - (y[:, 48] + y[:, 54]) / 2,
        "corner_asym": y[:, 48] - y[:, 54],
        "lip_raise": y[:, 51] - y[:, 33],
    }


def expression_features(landmarks: np.ndarray) -> np.ndarray:
    """(T, 68, 2) landmarks -> (T, 5) expression features (`FACTOR_GROUPS['expression']`), NaN rows
    without a face. Landmarks only: usable on a store's landmarks without the frames."""
    found, _, front = _pose_and_front(landmarks)
    features = _expression(front)
    out = np.stack([features[k] for k in FACTOR_GROUPS["expression"]], 1)
    out[~found] = np.nan
    return out


def mean_expression(landmarks: np.ndarray) -> np.ndarray:
    """(5,) mean of `expression_features` over the frames with a face."""
    return np.nanmean(expression_features(landmarks), axis=0)


def estimate_factors(images: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Every factor of `FACTOR_NAMES` per frame: name -> (T,) float64, NaN where no face."""
    landmarks = np.asarray(landmarks, np.float64)
    found, pose, front = _pose_and_front(landmarks)
    ear = np.mean([_eye_aspect_ratio(front[:, idx]) for idx in EYES], axis=0)
    gaze = gaze_offsets(images, landmarks)
    y = front[..., 1]
    out = {
        "mouth_open": y[:, 8] - y[:, 33],
        "mouth_width": np.linalg.norm(front[:, 54] - front[:, 48], axis=-1),
        "pitch": pose[:, 0], "yaw": pose[:, 1], "roll": pose[:, 2],
        "eye_closure": 1 - ear / OPEN_EAR,
        "gaze_x": gaze[:, 0], "gaze_y": gaze[:, 1],
        **_expression(front),
    }
    for value in out.values():
        value[~found] = np.nan
    return out


def correlation(estimate: np.ndarray, truth: np.ndarray, min_std: float) -> float:
    """Pearson r over the frames where both (T,) tracks are finite.

    NaN (not measurable) when fewer than 5 such frames or when the truth's std is below
    `min_std` (a constant driver); 0 when the estimate does not move at all (it does not follow)."""
    ok = np.isfinite(estimate) & np.isfinite(truth)
    if ok.sum() < 5 or np.std(truth[ok]) < min_std:
        return float("nan")
    if np.std(estimate[ok]) < 1e-9:
        return 0.0
    return float(np.corrcoef(estimate[ok], truth[ok])[0, 1])


def sweep_correlations(frames: np.ndarray, landmarks: np.ndarray, truth: dict[str, np.ndarray]) -> dict[str, float]:
    """Estimators against a factor sweep's truth (`generate.factor_sweep`, raw frames): Pearson r
    per factor (``r mouth_open``, ``r pitch`` ...) and ``error pose`` (mean |pitch, yaw, roll| error,
    degrees, in the raw frames: SynthTalk's rotation convention is the estimator's)."""
    estimate = estimate_factors(frames, landmarks)
    targets = {"mouth_open": truth["mouth"][:, 0], "pitch": truth["pose"][:, 0], "yaw": truth["pose"][:, 1],
               "roll": truth["pose"][:, 2], "eye_closure": truth["blink"], "gaze_x": truth["gaze"][:, 0],
               "gaze_y": truth["gaze"][:, 1]}
    out = {f"r {name}": correlation(estimate[name], target, 1e-6) for name, target in targets.items()}
    angles = np.stack([estimate[k] for k in ("pitch", "yaw", "roll")], 1)
    ok = np.isfinite(angles).all(1)
    out["error pose"] = float(np.degrees(np.abs(angles[ok] - truth["pose"][ok, :3])).mean()) if ok.any() else float("nan")
    return out


def emotion_accuracy(renders: dict[int, dict[str, np.ndarray]]) -> tuple[float, dict[tuple[str, str], int]]:
    """Leave-one-identity-out nearest-centroid emotion classification from expression features.

    `renders`: identity -> emotion -> landmarks (T, 68, 2), every identity with a "neutral" entry.
    Each identity's features are taken relative to its own neutral mean; the non-neutral emotions
    of one identity are classified by the nearest centroid of the other identities'. Returns
    (accuracy, {(true, predicted): count} of the errors)."""
    deltas = {ident: {e: mean_expression(lm) - mean_expression(by["neutral"])
                      for e, lm in by.items() if e != "neutral"} for ident, by in renders.items()}
    correct = total = 0
    confusions: dict[tuple[str, str], int] = {}
    for ident, by in deltas.items():
        others = [d for i, d in deltas.items() if i != ident]
        centroids = {e: np.mean([o[e] for o in others], axis=0) for e in by}
        for emotion, delta in by.items():
            guess = min(centroids, key=lambda e: float(np.linalg.norm(delta - centroids[e])))
            correct += guess == emotion
            total += 1
            if guess != emotion:
                confusions[(emotion, guess)] = confusions.get((emotion, guess), 0) + 1
    return correct / max(1, total), confusions


@register_metric("factor_control")
class FactorControl(LandmarkMetric):
    """Factor control on SynthTalk: correlation of each factor estimated on the output with the
    true track of its driver, and the pose error in degrees (module docstring).

    Inputs: ``fake`` and ``driver_truth`` (T, 7) float32, columns `DRIVER_TRUTH_COLUMNS`, NaN
    where the store has no ground truth (real datasets: every column is then n/a). Landmarks as
    in LMD (`LandmarkMetric`: ``fake_landmarks`` from the harness when it has them).
    """

    inputs = ("fake", "driver_truth")
    optional_inputs = ("fake_landmarks", "emotion_targets", "emotion_target")
    columns = {"ctl-mouth": True, "ctl-pose": True, "ctl-blink": True, "ctl-gaze": True, "err-pose": False,
               "acc-emotion": True}
    #: why a column is NaN (shown by the harness instead of "returned nan")
    nan_reasons: ClassVar[dict[str, str]] = {
        **{c: "no clip with ground truth for its driver and a driver that moves (SynthTalk stores, frames "
              "played: not a held first frame)" for c in ("ctl-mouth", "ctl-pose", "ctl-blink", "ctl-gaze")},
        "err-pose": "no clip with the pose source's ground truth (SynthTalk stores)",
        "acc-emotion": "needs an emotion source on a store labelled with emotions (synth-emotion, MEAD layout)",
    }
    #: (column, estimated factor, driver-truth column, least driver std counted)
    PAIRS: ClassVar[tuple[tuple[str, str, str, float], ...]] = (
        ("ctl-mouth", "mouth_open", "mouth_open", 0.05),
        ("ctl-pose", "pitch", "pitch", 0.01), ("ctl-pose", "yaw", "yaw", 0.01), ("ctl-pose", "roll", "roll", 0.01),
        ("ctl-blink", "eye_closure", "blink", 0.1),
        ("ctl-gaze", "gaze_x", "gaze_x", 0.05),
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        names = list(dict.fromkeys(c for c, *_ in self.PAIRS)) + ["err-pose", "acc-emotion"]
        self.column_names = names
        self.add_state("factor_sums", torch.zeros(len(names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("factor_counts", torch.zeros(len(names), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, fake: Tensor, driver_truth: Tensor | np.ndarray,
               fake_landmarks: Tensor | np.ndarray | None = None, emotion_targets: Tensor | None = None,
               emotion_target: Tensor | None = None) -> None:
        """One clip. `emotion_targets` (K, 5): the mean expression features of K real clips of the
        reference's identity, one per emotion; `emotion_target`: the row of the driver's emotion.
        ``acc-emotion`` counts the clip as right when the output's mean expression features are
        nearest (Euclidean) to that row: the output reads as its identity showing the driver's
        emotion."""
        images = frames_to_uint8(fake)
        truth = np.asarray(torch.as_tensor(driver_truth).detach().cpu(), np.float64)
        if truth.shape != (len(images), len(DRIVER_TRUTH_COLUMNS)):
            raise ValueError(f"driver_truth must be ({len(images)}, {len(DRIVER_TRUTH_COLUMNS)}), got {truth.shape}")
        if fake_landmarks is None:
            landmarks, _ = self.landmarks(images)
        else:
            landmarks, _ = as_landmarks(fake_landmarks, len(images), "fake_landmarks")
        estimate = estimate_factors(images, landmarks)
        column = {c: i for i, c in enumerate(self.column_names)}
        per_column: dict[str, list[float]] = {}
        for name, factor, truth_name, min_std in self.PAIRS:
            r = correlation(estimate[factor], truth[:, DRIVER_TRUTH_COLUMNS.index(truth_name)], min_std)
            if np.isfinite(r):
                per_column.setdefault(name, []).append(r)
        angles = np.stack([estimate[k] for k in ("pitch", "yaw", "roll")], 1)
        true_angles = truth[:, [DRIVER_TRUTH_COLUMNS.index(k) for k in ("pitch", "yaw", "roll")]]
        ok = np.isfinite(angles).all(1) & np.isfinite(true_angles).all(1)
        if ok.any():
            per_column["err-pose"] = [float(np.degrees(np.abs(angles[ok] - true_angles[ok])).mean())]
        if emotion_targets is not None and emotion_target is not None:
            targets = np.asarray(torch.as_tensor(emotion_targets).detach().cpu(), np.float64)
            features = np.stack([estimate[k] for k in FACTOR_GROUPS["expression"]], 1)
            if np.isfinite(features).all(1).any() and np.isfinite(targets).all():
                mean = features[np.isfinite(features).all(1)].mean(axis=0)
                nearest = int(np.argmin(np.linalg.norm(targets - mean, axis=1)))
                per_column["acc-emotion"] = [float(nearest == int(emotion_target))]
        for name, values in per_column.items():
            self.factor_sums[column[name]] += float(np.mean(values))
            self.factor_counts[column[name]] += 1

    def compute(self) -> dict[str, Tensor]:
        means = self.factor_sums / self.factor_counts.clamp(min=1)
        means[self.factor_counts == 0] = float("nan")
        return {name: means[i].float() for i, name in enumerate(self.column_names)}
