"""Faces: detection + 68 landmarks (one interface, several backends), PC-AVS alignment, head pose.

Conventions
- Images are uint8 RGB arrays (H, W, 3). Landmarks are float32 (68, 2) pixel coordinates (x, y)
  in dlib's 68-point indexing (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67).
- Head pose is 6-d: a rotation vector (radians, camera frame: x right, y down, z into the scene)
  and a translation (tx, ty in pixels of the image, tz = log of the scale relative to the template
  at its reference size), from a rigid (similarity) fit of the canonical 3D landmark template.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from talkinghead import weights

# ---------------------------------------------------------------------------------------------
# Landmark detection backends
# ---------------------------------------------------------------------------------------------


class FrontalFaceDetector:
    """dlib's HOG frontal face detector, one instance per thread, detections remembered by image.

    Threads: dlib's Python binding releases the GIL while it scans (so threads run in parallel,
    `map_frames`), and a detector keeps its scan state in itself, so threads must not share one.
    Memory: the boxes of the last `CACHE_SIZE` (image content, upsample) pairs are kept for every
    instance in the process, so metrics that look at the same frames (LMD's landmarks and CSIM's
    face chips on the generated frames, the factor estimators) run the detector once per frame.
    Call: (image (H, W, 3) uint8, upsample) -> dlib rectangles (do not modify them)."""

    CACHE_SIZE = 2048
    _cache: "OrderedDict[tuple, object]" = OrderedDict()
    _cache_lock = threading.Lock()

    def __init__(self):
        self._local = threading.local()

    def __call__(self, image: np.ndarray, upsample: int = 1):
        image = np.ascontiguousarray(image)
        key = (hashlib.blake2b(memoryview(image).cast("B"), digest_size=16).digest(), image.shape, upsample)
        with self._cache_lock:
            rects = self._cache.get(key)
            if rects is not None:
                self._cache.move_to_end(key)
                return rects
        detector = getattr(self._local, "detector", None)
        if detector is None:
            import dlib

            detector = self._local.detector = dlib.get_frontal_face_detector()
        rects = detector(image, upsample)
        with self._cache_lock:
            self._cache[key] = rects
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return rects


class DlibLandmarks:
    """dlib HOG face detector + 68-point shape predictor (offline, the default backend).

    `upsample` is the HOG pyramid upsampling; 1 is needed for faces in 224-256 px frames.
    When several faces are found the largest is used.
    """

    name = "dlib"

    def __init__(self, upsample: int = 1):
        import dlib

        self.upsample = upsample
        self._detector = FrontalFaceDetector()
        self._predictor = dlib.shape_predictor(str(weights.resolve("dlib_landmarks68")))
        self._dlib = dlib

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """(68, 2) float32 landmarks of the largest face in `image`, or None when no face is found."""
        image = np.ascontiguousarray(image)
        rects = self._detector(image, self.upsample)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self._predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def fit(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(68, 2) float32 landmarks of the shape predictor in `box` (left, top, right, bottom), no
        detection: for tracking a face the detector misses (`track_missing`)."""
        left, top, right, bottom = (int(round(v)) for v in box)
        shape = self._predictor(np.ascontiguousarray(image), self._dlib.rectangle(left, top, right, bottom))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


class FaceAlignmentLandmarks:
    """The `face-alignment` package (FAN + S3FD), used only when its weights are already on disk.

    face-alignment downloads its weights on first use; that is not allowed here, so this backend
    refuses to start unless the files are in torch hub's checkpoint folder.
    """

    name = "face_alignment"

    def __init__(self, device: str = "cpu"):
        try:
            import face_alignment
        except ImportError as err:
            raise ImportError(
                "backend 'face_alignment' needs the package: pip install face-alignment"
            ) from err
        import torch

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        present = sorted(p.name for p in hub.glob("*.zip")) + sorted(p.name for p in hub.glob("*.pth"))
        if not any("2DFAN" in n for n in present) or not any("s3fd" in n for n in present):
            raise FileNotFoundError(
                f"face-alignment weights (2DFAN4-*.zip and s3fd-*.pth) not found in {hub}; "
                "copy them there (nothing is downloaded at run time) or use the 'dlib' backend"
            )
        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=device, flip_input=False
        )

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        found = self._fa.get_landmarks_from_image(image)
        if not found:
            return None
        largest = max(found, key=lambda p: np.ptp(p[:, 0]) * np.ptp(p[:, 1]))
        return largest[:, :2].astype(np.float32)


LANDMARK_BACKENDS = {"dlib": DlibLandmarks, "face_alignment": FaceAlignmentLandmarks}


class DlibFaceDescriptor:
    """dlib's face-recognition pipeline: HOG detector (largest face) -> 5-point shape predictor ->
    150 px face chip (`padding` 0.25) -> dlib's ResNet 128-d descriptor (unit length; dlib's "same
    person" threshold is a Euclidean distance of 0.6).

    `face(image)` -> (image, 5-point shape) or None; `chip(image)` -> (150, 150, 3) uint8 or None;
    `__call__(image)` -> (128,) float32 or None, computed by dlib's own CPU code one image at a
    time (the data layer's use: choosing SynthTalk identities). CSIM
    (`talkinghead.metrics.csim.DlibFaceEmbedding`) cuts the same chips here and runs the same ResNet
    batched in torch, with equal descriptors to float precision."""

    def __init__(self, upsample: int = 1, padding: float = 0.25):
        import dlib

        self.upsample, self.padding = upsample, padding
        self._dlib = dlib
        self._detector = FrontalFaceDetector()
        self._shape = dlib.shape_predictor(str(weights.resolve("dlib_landmarks5")))
        self._model = None

    def face(self, image: np.ndarray):
        image = np.ascontiguousarray(image)
        rects = self._detector(image, self.upsample)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        return image, self._shape(image, rect)

    def chip(self, image: np.ndarray) -> np.ndarray | None:
        face = self.face(image)
        return None if face is None else self._dlib.get_face_chip(face[0], face[1], size=150, padding=self.padding)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        face = self.face(image)
        if face is None:
            return None
        if self._model is None:
            self._model = self._dlib.face_recognition_model_v1(str(weights.resolve("dlib_face_descriptor")))
        return np.asarray(self._model.compute_face_descriptor(*face, 0, self.padding), dtype=np.float32)


@lru_cache(maxsize=4)
def get_landmark_detector(backend: str = "dlib"):
    """The landmark detector of `backend` (cached per process). Unknown names list the choices."""
    if backend not in LANDMARK_BACKENDS:
        raise ValueError(
            f"unknown landmark backend {backend!r}; choose one of: {', '.join(sorted(LANDMARK_BACKENDS))}"
        )
    return LANDMARK_BACKENDS[backend]()


def map_frames(function, frames) -> list:
    """[function(frame) for frame in frames], over torch.get_num_threads() threads: dlib's face
    detector releases the GIL while it scans (`FrontalFaceDetector`), so per-frame detection uses
    every core torch is allowed (`talkinghead.bench.parallel.thread_limits` sets it). Order and
    results are those of the plain loop."""
    threads = min(max(1, torch.get_num_threads()), len(frames))
    if threads <= 1:
        return [function(frame) for frame in frames]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(function, frames))


def detect_landmarks(frames: np.ndarray, backend: str = "dlib") -> tuple[np.ndarray, np.ndarray]:
    """Landmarks for each frame of (T, H, W, 3) uint8 (dlib: frames detected in parallel threads,
    `map_frames`).

    Returns (landmarks (T, 68, 2) float32, found (T,) bool); frames without a face get NaN.
    """
    detector = get_landmark_detector(backend)
    out = np.full((len(frames), 68, 2), np.nan, dtype=np.float32)
    found = np.zeros(len(frames), dtype=bool)
    found_points = map_frames(detector, frames) if backend == "dlib" else [detector(frame) for frame in frames]
    for i, lm in enumerate(found_points):
        if lm is not None:
            out[i], found[i] = lm, True
    return out, found


#: dlib's detector box relative to the bounding box of its 68 landmarks (left, top, right, bottom, in
#: units of the landmark box's width / height), measured on 80 SynthTalk detections
DETECTOR_BOX = (-0.047, -0.081, 0.056, -0.057)
TRACK_MIN_SIMILARITY = 0.6  # normalised cross-correlation of the face patch with the neighbour's
TRACK_MAX_SCALE_CHANGE = 1.25  # a tracked face's size within this factor of its neighbour's
TRACK_MAX_SHIFT = 0.25  # and its centre within this fraction of the neighbour's face width
_PATCH = np.array([[20.0, 22.0], [44.0, 22.0], [32.0, 50.0]])  # eye, eye, mouth anchors in a 64 px patch


def detector_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """The detector box (left, top, right, bottom) that would have given these (68, 2) landmarks."""
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    w, h = x1 - x0, y1 - y0
    dl, dt, dr, db = DETECTOR_BOX
    return x0 + dl * w, y0 + dt * h, x1 + dr * w, y1 + db * h


def face_patch(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(64, 64) float grey patch of the face, aligned by the eye and mouth anchors."""
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    transform = _similarity(anchor_points(landmarks.astype(np.float64)), _PATCH)
    return cv2.warpAffine(grey, transform, (64, 64), flags=cv2.INTER_LINEAR).astype(np.float64)


def _patch_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def track_missing(frames: np.ndarray, landmarks: np.ndarray, found: np.ndarray, backend: str = "dlib"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Fill frames where the detector found no face by tracking from their neighbours.

    For the dlib backend: in a frame next to one with landmarks (detected or tracked), the shape
    predictor is run in the detector box of the neighbour's landmarks, then once more in the box of
    its own result. The fit is kept only when it looks like the same face (its aligned 64 px grey
    patch correlates with the neighbour's at >= `TRACK_MIN_SIMILARITY`) at about the same size and
    place (`TRACK_MAX_SCALE_CHANGE`, `TRACK_MAX_SHIFT`): a frame with no face is left missing.
    Passes run forwards, then backwards. Other backends are returned unchanged.

    Returns (landmarks (T, 68, 2) float32, NaN where still missing; tracked (T,) bool).
    """
    out = np.array(landmarks, dtype=np.float32, copy=True)
    have = np.array(found, dtype=bool, copy=True)
    tracked = np.zeros(len(out), dtype=bool)
    detector = get_landmark_detector(backend)
    if not callable(getattr(detector, "fit", None)) or have.all() or not have.any():
        return out, tracked
    for step in (1, -1):
        order = range(1, len(out)) if step == 1 else range(len(out) - 2, -1, -1)
        for t in order:
            n = t - step
            if have[t] or not have[n]:
                continue
            guess = detector.fit(frames[t], detector_box(out[n]))
            guess = detector.fit(frames[t], detector_box(guess))
            width_n, width_t = np.ptp(out[n][:, 0]), np.ptp(guess[:, 0])
            if not (1 / TRACK_MAX_SCALE_CHANGE <= width_t / max(width_n, 1e-6) <= TRACK_MAX_SCALE_CHANGE):
                continue
            if np.linalg.norm(guess.mean(0) - out[n].mean(0)) > TRACK_MAX_SHIFT * width_n:
                continue
            if _patch_similarity(face_patch(frames[t], guess), face_patch(frames[n], out[n])) < TRACK_MIN_SIMILARITY:
                continue
            out[t], have[t], tracked[t] = guess, True, True
    return out, tracked


def fill_missing(landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linearly interpolate landmarks of frames where no face was found (edges: nearest found)."""
    if found.all():
        return landmarks
    if not found.any():
        raise ValueError("no face found in any frame")
    t = np.arange(len(landmarks))
    flat = landmarks.reshape(len(landmarks), -1).copy()
    for j in range(flat.shape[1]):
        flat[~found, j] = np.interp(t[~found], t[found], flat[found, j])
    return flat.reshape(landmarks.shape)


# ---------------------------------------------------------------------------------------------
# PC-AVS / PD-FGC alignment (reference-facts "Image preprocessing")
# ---------------------------------------------------------------------------------------------

ALIGN_SIZE = 224
# Left eye, right eye, inner mouth anchors in the 224 x 224 aligned image.
ALIGN_ANCHORS = np.array([[87.0, 59.0], [137.0, 59.0], [112.0, 120.0]], dtype=np.float64)
ALIGN_SMOOTHING = 0.2  # weight of the previous frame's mouth translation
# Crop the loader applies after alignment (rows 0:192, cols 16:208), resized back to 224.
LOADER_CROP = (slice(0, 192), slice(16, 208))


def anchor_points(landmarks: np.ndarray) -> np.ndarray:
    """(..., 3, 2) anchors: mean of 36-41 (left eye), 42-47 (right eye), 60-67 (inner mouth)."""
    return np.stack(
        [landmarks[..., 36:42, :].mean(-2), landmarks[..., 42:48, :].mean(-2), landmarks[..., 60:68, :].mean(-2)],
        axis=-2,
    )


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst; (2, 3)."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    a = (s * d).sum() / (s**2).sum()
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / (s**2).sum()
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (dst_mean - rot @ src_mean)[:, None]])


def alignment_transforms(landmarks: np.ndarray) -> np.ndarray:
    """Per-frame (T, 2, 3) affine maps from raw frames to the aligned 224 image.

    One similarity maps the clip-average anchors to ALIGN_ANCHORS; then per frame a translation
    keeps the mouth anchor at (112, 120), smoothed as 0.2 * previous + 0.8 * current.
    """
    anchors = anchor_points(landmarks.astype(np.float64))  # (T, 3, 2)
    base = _similarity(anchors.mean(0), ALIGN_ANCHORS)
    mouth = anchors[:, 2] @ base[:, :2].T + base[:, 2]  # mouth anchor of each frame after `base`
    transforms = np.repeat(base[None], len(landmarks), axis=0)
    shift = None
    for t in range(len(landmarks)):
        current = ALIGN_ANCHORS[2] - mouth[t]
        shift = current if shift is None else ALIGN_SMOOTHING * shift + (1 - ALIGN_SMOOTHING) * current
        transforms[t, :, 2] += shift
    return transforms


def apply_affine(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Map (..., 2) points with a (2, 3) affine."""
    return points @ transform[:, :2].T + transform[:, 2]


def rescale_points(points, size: int, source_size: int):
    """Points (..., 2) in the pixels of `source_size`-px frames -> the pixels of the same frames
    resized to `size` px (pixel centres at integers, the store's convention); numpy or torch."""
    k = size / source_size
    return (points + 0.5) * k - 0.5


def align_clip(frames: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align a clip as PC-AVS / PD-FGC do.

    frames (T, H, W, 3) uint8, landmarks (T, 68, 2) without NaNs.
    Returns aligned frames (T, 224, 224, 3) uint8 (border 0), aligned landmarks (T, 68, 2)
    float32, and the (T, 2, 3) transforms used.
    """
    transforms = alignment_transforms(landmarks)
    aligned = np.stack(
        [
            cv2.warpAffine(f, m, (ALIGN_SIZE, ALIGN_SIZE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            for f, m in zip(frames, transforms)
        ]
    )
    aligned_lm = np.stack([apply_affine(lm, m) for lm, m in zip(landmarks, transforms)]).astype(np.float32)
    return aligned, aligned_lm, transforms


def loader_crop(frames: np.ndarray) -> np.ndarray:
    """The official loader's crop of aligned frames: rows 0:192, cols 16:208, resized to 224.

    (T, 224, 224, 3) uint8 -> (T, 224, 224, 3) uint8.
    """
    rows, cols = LOADER_CROP
    return np.stack(
        [cv2.resize(f[rows, cols], (ALIGN_SIZE, ALIGN_SIZE), interpolation=cv2.INTER_LINEAR) for f in frames]
    )


def loader_crop_points(points: np.ndarray) -> np.ndarray:
    """Landmark coordinates after `loader_crop`."""
    rows, cols = LOADER_CROP
    scale = ALIGN_SIZE / (rows.stop - rows.start)
    return (points - np.array([cols.start, rows.start], dtype=np.float32)) * scale


# ---------------------------------------------------------------------------------------------
# Head pose from landmarks
# ---------------------------------------------------------------------------------------------

TEMPLATE_FILE = Path(__file__).with_name("assets") / "face_template_3d.npy"
# dlib index of each point's mirror image (left <-> right).
MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)


def build_face_template(landmarks_2d: np.ndarray) -> np.ndarray:
    """A symmetric canonical 3D landmark template (68, 3) from one frontal 2D landmark set.

    x, y: the landmarks symmetrised (averaged with their mirror image), centred on the eye/mouth
    centroid and scaled to an inter-ocular distance of 1. z (towards the camera): a head-shaped
    depth: an ellipsoid over the face plus a protruding nose and slightly recessed eyes.
    The result is what `face_template_3d.npy` holds (see `tests/data/test_faces.py`).
    """
    lm = landmarks_2d.astype(np.float64)
    # pair each point with its mirror twin (reflected about the mean x) and average
    sym = np.empty_like(lm)
    sym[:, 0] = 0.5 * ((lm[:, 0] - lm[:, 0].mean()) - (lm[MIRROR, 0] - lm[:, 0].mean()))
    sym[:, 1] = 0.5 * (lm[:, 1] + lm[MIRROR, 1])
    eyes = anchor_points(sym)
    iod = np.linalg.norm(eyes[1] - eyes[0])
    centre = eyes.mean(0)
    xy = (sym - centre) / iod
    half_width = np.abs(xy[0:17, 0]).max() * 1.05
    half_height = (xy[8, 1] - xy[19, 1]) * 0.75
    r2 = (xy[:, 0] / half_width) ** 2 + ((xy[:, 1] - 0.15) / half_height) ** 2
    z = 0.9 * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    nose_bump = {27: 0.10, 28: 0.20, 29: 0.32, 30: 0.45, 31: 0.12, 32: 0.18, 33: 0.22, 34: 0.18, 35: 0.12}
    for i, dz in nose_bump.items():
        z[i] += dz
    z[36:48] -= 0.06
    z[48:68] += 0.05
    return np.column_stack([xy, z - z.mean()]).astype(np.float32)


@lru_cache(maxsize=1)
def face_template() -> np.ndarray:
    """The canonical 3D landmark template (68, 3), inter-ocular distance 1, y down, z to camera."""
    return np.load(TEMPLATE_FILE)


def rotation_matrix(rotvec: np.ndarray) -> np.ndarray:
    """(3, 3) rotation from a rotation vector (radians)."""
    return cv2.Rodrigues(np.asarray(rotvec, dtype=np.float64).reshape(3, 1))[0]


def project(points_3d: np.ndarray, pose: np.ndarray, reference_scale: float) -> np.ndarray:
    """Weak-perspective projection of (N, 3) template points with a 6-d pose -> (N, 2) pixels.

    x_img = s * (R p)_xy + (tx, ty), s = reference_scale * exp(tz).
    """
    rot = rotation_matrix(pose[:3])
    scale = reference_scale * np.exp(pose[5])
    return scale * (points_3d @ rot.T)[:, :2] + pose[3:5]


POSE_REFERENCE_IOD = 50.0  # IOD (px) of tz = 0 in the store's poses: the aligned 224 image


def estimate_head_pose(landmarks: np.ndarray, reference_scale: float = POSE_REFERENCE_IOD, iterations: int = 15) -> np.ndarray:
    """6-d head pose per frame from (T, 68, 2) landmarks by a rigid fit to `face_template()`.

    Weak-perspective (scaled orthographic) model, fit by alternating an orthogonal Procrustes
    rotation (3D, from the 2x3 projection) with the scale and translation. Only rigid points are
    used (jaw, brows, nose, eye corners). Returns (T, 6) float32: rotation vector (radians),
    tx, ty (pixels), tz = log(scale / reference_scale); `reference_scale` is the inter-ocular
    distance in pixels that counts as tz = 0 (50 = the aligned 224 image).
    """
    rigid = np.r_[0:27, 27:36, 36, 39, 42, 45]
    template = face_template()[rigid].astype(np.float64)
    template_centred = template - template.mean(0)
    poses = np.zeros((len(landmarks), 6), dtype=np.float32)
    for t, lm in enumerate(landmarks.astype(np.float64)):
        pts = lm[rigid]
        mean2 = pts.mean(0)
        y = pts - mean2
        rot = np.eye(3)
        for _ in range(iterations):
            proj = template_centred @ rot[:2].T
            scale = (proj * y).sum() / (proj**2).sum()
            # best 2x3 projection, then nearest rotation whose first two rows match it
            m = np.linalg.lstsq(template_centred, y / scale, rcond=None)[0].T  # (2, 3)
            u, _, vt = np.linalg.svd(m, full_matrices=False)
            r12 = u @ vt
            rot = np.vstack([r12, np.cross(r12[0], r12[1])])
        proj = template_centred @ rot[:2].T
        scale = (proj * y).sum() / (proj**2).sum()
        translation = mean2 - scale * (template.mean(0) @ rot.T)[:2]
        rotvec = cv2.Rodrigues(rot)[0].ravel()
        poses[t] = [*rotvec, *translation, np.log(scale / reference_scale)]
    return poses


def landmark_error(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean per-point Euclidean distance (pixels) per frame: (T, 68, 2) x2 -> (T,)."""
    return np.linalg.norm(predicted - truth, axis=-1).mean(-1)

