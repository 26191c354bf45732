"""Benchmark protocols: which clips of which store, driven by which signals.

A `Protocol` names a clip store, the split to evaluate (``test``: identities unseen in training),
how many clips, and the *setting*:

``self`` (the papers' self-driven / reconstruction setting; PC-AVS, PD-FGC and Rhythmic Head
    Table 1): the reference image is the clip's first frame, the driving audio is the clip's own
    audio, and the clip's own frames are the pose, eye and emotion sources. The generated clip
    should reproduce the real one, so every metric is defined.
``cross`` (PD-FGC's cross-video setting, its appendix A.3): the reference image and the audio
    still come from the clip, but "the first frame from another random test video clip" drives
    all non-lip motions. Here the other clip is chosen deterministically in the same split, with
    a different emotion label when the store has them (MEAD) and a different speaker when
    possible; which sources it drives (`Protocol.cross_sources`, default pose, eye and emotion)
    and whether its first frame is repeated (`cross_frames="first"`, PD-FGC) or its frames are
    played (``"all"``, frame min(t, len - 1) at t) are protocol fields. There is no recording of
    "this person saying this with that expression and pose", so **metrics that need ground truth
    (inputs ``real``: SSIM, PSNR, LMD, FID, ...) are reported n/a** in this setting; the others
    (LSE-C / LSE-D / NLSE-C, CPBD, CSIM against the reference) are computed as usual. We chose
    n/a over scoring against the source clip because that clip differs in identity, speech and
    timing, so such a number would mix up what it measures. (PD-FGC scores this setting by the
    MSE of 3D-reconstructed expression parameters against the driving frame; no such metric is in
    the suite yet.) What is defined is the pose source's own landmarks (`ClipData.pose_landmarks`),
    so pose transfer is scored: LMD-pose (`talkinghead.metrics.pose_lmd`) compares the generated
    jaw line with the pose source's, in both settings.

Clip selection is deterministic and stable: the split's clips (with at least ``min_frames``
frames) are ranked by ``sha1(f"{seed}:{clip_id}")`` and the first ``num_clips`` are taken, then
sorted by clip_id. The result depends only on the clip ids and the seed, never on the index
order, and adding clips to a store changes a selection only where a new clip ranks in.

Registered protocols (`PROTOCOLS`; the store path is the default, `get_protocol(store=...)`
overrides it):

=============  ===========================  =========  =======================================
name           store                        setting    published rows (report)
=============  ===========================  =========  =======================================
synth          data/store/synth-vox2        self       none (synthetic data)
synth-mead     data/store/synth-mead        cross      none
synth-pose     data/store/synth-vox2        cross      none (pose transfer: pose source only)
synth-eye      data/store/synth-vox2        cross      none (eye control: eye source only)
synth-emotion  data/store/synth-mead        cross      none (emotion control: emotion source only)
synth-large    data/store/synth-vox2-large  self       none (large head motion)
synth-large-   data/store/synth-vox2-large  cross      none (pose transfer under large motion)
pose
vox2           data/store/vox2              self       VoxCeleb2 (PC-AVS, PD-FGC, Rhythmic Head)
lrw            data/store/lrw               self       LRW (PC-AVS)
mead           data/store/mead              self       MEAD (PD-FGC)
mead-cross     data/store/mead              cross      none
=============  ===========================  =========  =======================================

``synth-pose`` measures pose transfer: only the pose comes from the other test clip (another
speaker when the split has one; the vox2 layout has no emotion labels, so any other clip
qualifies), played frame by frame (``cross_frames="all"``); reference, audio, eyes and expression
stay the clip's own. Its LMD-pose column compares methods, e.g. ``pcavs`` (pose from the source)
against ``pcavs_fixed_pose`` (the reference's pose): pose transfer works when the former is lower.

``synth-eye`` and ``synth-emotion`` do the same for the eyes (blinks, gaze) and the expression,
and ``synth-large-pose`` for pose on the large-motion store. Their factor-control columns
(`talkinghead.metrics.factors`: ``ctl-*``, the correlation of each factor estimated on the output
with its driver's ground truth) say whether a method follows the driver it was given.

Reference videos (`Protocol.reference_frames` = P > 0; Rhythmic Head's setting, "the first 64
frames as the reference video, scored on the rest"): the clip's first P frames are the request's
``reference_video`` (`talkinghead.generation.ReferenceVideo`: the store's aligned frames, landmarks,
poses and the audio under them; its first frame is the request's ``reference``, as in every
protocol) and everything a method gets or is scored on covers the frames P .. N-1 only: the driving
audio from sample 640 P, the pose / eye / emotion sources, the real frames and landmarks, the
pose-source landmarks and the driver truth (cross sources: the other clip's frames at the same
times, min(t, len - 1) with ``"all"``). A clip needs P + ``min_frames`` frames to be selected.
With P = 0 (every protocol but the two below) nothing changes. Registered:

================  ===========================  ====  ===========================================
synth-rhythmic    data/store/synth-vox2        24    75-frame SynthTalk clips: tau 24 (the CPU
                                                     config's, experiments/rhythmic/synth.yaml),
                                                     51 frames scored
synth-large-      data/store/synth-vox2-large  64    the paper's tau = 64 on the 6 s (150-frame)
rhythmic                                             large-motion clips, 86 frames scored
================  ===========================  ====  ===========================================

Clip counts default to the papers' where stated: 500 VoxCeleb2 and 460 MEAD test clips
(PD-FGC, appendix A.1); LRW 500 (PC-AVS does not say how many); synthetic stores 50.
The methods are trained on VoxCeleb2, so NLSE-C's reference LSE-C for the MEAD protocols is
measured on the VoxCeleb2 store's train split (`Protocol.train_store`), as in PD-FGC's Table 1.

MEAD has no official split (see `talkinghead.data.corpora.mead.mead_split`); a small MEAD store
may have no test actor, so the MEAD protocols fall back to ``val`` and then ``train`` (with a
warning, and the split used recorded in run.json).
"""
from __future__ import annotations

import dataclasses
import hashlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from talkinghead.generation import GenerationRequest, frames_tensor

__all__ = [
    "PROTOCOLS",
    "CROSS_SOURCES",
    "SETTINGS",
    "ClipData",
    "Protocol",
    "Selection",
    "fit_length",
    "get_protocol",
    "load_clip",
    "protocol_names",
    "rank_clips",
    "register_protocol",
    "select_clips",
    "split_reference",
    "train_clips",
]

SETTINGS = ("self", "cross")
#: request sources the cross-driven setting may take from another clip
CROSS_SOURCES = ("pose", "eye", "emotion")
GROUND_TRUTH_INPUTS = ("real", "real_landmarks")


@dataclass(frozen=True)
class Protocol:
    """One benchmark protocol (see the module docstring).

    name:            registry name (also in the run folder's name).
    dataset:         corpus layout of the store: vox2, lrw or mead.
    store:           default clip store folder.
    setting:         "self" or "cross".
    split:           split evaluated.
    fallback_splits: splits tried, in order, when `split` has no usable clip.
    num_clips:       clips evaluated (fewer when the split has fewer).
    seed:            selection seed.
    min_frames:      shortest usable clip (SyncNet needs 5 frames plus context).
    train_split:     split whose real clips give NLSE-C's reference LSE-C (the methods' training data).
    train_store:     store holding that training data when it is not `store` (None: `store`).
    cross_sources:   request sources taken from the other clip in the cross setting.
    cross_frames:    "first": that clip's first frame repeated (PD-FGC); "all": its frames.
    published:       key of `benchmarks/published.yaml` whose rows the report adds, or None.
    description:     one line for listings and the report.
    reference_frames: P > 0: the clip's first P frames are the request's reference video and only
                     the frames after them are generated and scored (module docstring); 0: none.
    """

    name: str
    dataset: str
    store: str
    setting: str = "self"
    split: str = "test"
    fallback_splits: tuple[str, ...] = ()
    num_clips: int = 50
    seed: int = 0
    min_frames: int = 12
    train_split: str = "train"
    train_store: str | None = None
    cross_sources: tuple[str, ...] = CROSS_SOURCES
    cross_frames: str = "first"
    published: str | None = None
    description: str = ""
    reference_frames: int = 0

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"protocol {self.name!r}: setting must be one of {SETTINGS}, got {self.setting!r}")
        unknown = [s for s in self.cross_sources if s not in CROSS_SOURCES]
        if unknown or not self.cross_sources:
            raise ValueError(f"protocol {self.name!r}: cross_sources must be a non-empty subset of {CROSS_SOURCES}, "
                             f"got {self.cross_sources}")
        if self.cross_frames not in ("first", "all"):
            raise ValueError(f"protocol {self.name!r}: cross_frames must be 'first' or 'all', got {self.cross_frames!r}")
        if self.num_clips < 1:
            raise ValueError(f"protocol {self.name!r}: num_clips must be >= 1, got {self.num_clips}")
        if self.reference_frames < 0:
            raise ValueError(f"protocol {self.name!r}: reference_frames must be >= 0, got {self.reference_frames}")

    def replace(self, **changes: Any) -> "Protocol":
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def protocol_names() -> list[str]:
    return sorted(PROTOCOLS)


def get_protocol(name: str, **overrides: Any) -> Protocol:
    """Protocol `name` with `overrides` (store, setting, split, num_clips, seed, ...; None ignored).

    An unknown name lists the valid ones."""
    if name not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}; choose from: {', '.join(protocol_names())}")
    protocol = PROTOCOLS[name].replace(**overrides)
    if "store" in overrides and overrides["store"] is not None:
        protocol = dataclasses.replace(protocol, store=str(overrides["store"]))
    return protocol


for _p in (
    Protocol("synth", "vox2", "data/store/synth-vox2",
             description="SynthTalk in the VoxCeleb2 layout, test identities, self-driven"),
    Protocol("synth-mead", "mead", "data/store/synth-mead", setting="cross", fallback_splits=("val", "train"),
             train_store="data/store/synth-vox2",
             description="SynthTalk in the MEAD layout, cross-driven (another clip's first frame drives pose, "
                         "eyes and expression)"),
    Protocol("synth-pose", "vox2", "data/store/synth-vox2", setting="cross", cross_sources=("pose",),
             cross_frames="all",
             description="SynthTalk in the VoxCeleb2 layout, pose transfer: the pose source is another test clip "
                         "(another speaker) played frame by frame; reference and audio from the clip (LMD-pose)"),
    Protocol("synth-eye", "vox2", "data/store/synth-vox2", setting="cross", cross_sources=("eye",),
             cross_frames="all",
             description="SynthTalk in the VoxCeleb2 layout, eye control: blinks and gaze from another test clip "
                         "played frame by frame; reference, audio, pose and expression from the clip (ctl-blink, "
                         "ctl-gaze)"),
    Protocol("synth-emotion", "mead", "data/store/synth-mead", setting="cross", cross_sources=("emotion",),
             cross_frames="all", fallback_splits=("val", "train"), train_store="data/store/synth-vox2",
             description="SynthTalk in the MEAD layout, emotion control: the expression source is a clip with "
                         "another emotion played frame by frame; reference, audio, pose and eyes from the clip"),
    Protocol("synth-large", "vox2", "data/store/synth-vox2-large",
             description="SynthTalk with large head motion (yaw +-35, pitch +-20, roll +-15 degrees, translation, "
                         "scale; 6 s clips), self-driven"),
    Protocol("synth-large-pose", "vox2", "data/store/synth-vox2-large", setting="cross", cross_sources=("pose",),
             cross_frames="all",
             description="SynthTalk with large head motion, pose transfer: the pose source is another test clip "
                         "played frame by frame (LMD-pose, ctl-pose, err-pose)"),
    Protocol("synth-rhythmic", "vox2", "data/store/synth-vox2", reference_frames=24,
             description="SynthTalk in the VoxCeleb2 layout, test identities, self-driven; the first 24 frames "
                         "are the reference video (Rhythmic Head's tau of the CPU config), the rest is scored"),
    Protocol("synth-large-rhythmic", "vox2", "data/store/synth-vox2-large", reference_frames=64,
             description="SynthTalk with large head motion, self-driven; the first 64 frames are the reference "
                         "video (the paper's tau), the rest is scored"),
    Protocol("vox2", "vox2", "data/store/vox2", num_clips=500, published="vox2",
             description="VoxCeleb2 test identities, self-driven (PC-AVS / PD-FGC / Rhythmic Head Table 1)"),
    Protocol("lrw", "lrw", "data/store/lrw", num_clips=500, published="lrw",
             description="LRW test split, self-driven (PC-AVS Table 1)"),
    Protocol("mead", "mead", "data/store/mead", num_clips=460, fallback_splits=("val", "train"),
             train_store="data/store/vox2", published="mead",
             description="MEAD held-out actors, self-driven (PD-FGC Table 1)"),
    Protocol("mead-cross", "mead", "data/store/mead", num_clips=100, setting="cross",
             fallback_splits=("val", "train"), train_store="data/store/vox2",
             description="MEAD held-out actors, cross-video driving (PD-FGC Table 2 setting)"),
):
    register_protocol(_p)


# ---------------------------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """One clip to evaluate and where its driving signals come from.

    entry:          the store's index entry of the clip (clip_id, file, split, labels, ...).
    setting:        "self" or "cross".
    source:         index entry of the clip driving the cross sources (the clip itself when self-driven).
    cross_sources:  which request sources `source` drives (empty when self-driven).
    cross_frames:   "first" (source's first frame repeated) or "all" (its frames).
    reference_frames: P > 0: the clip's first P frames are the reference video, frames P.. are
                    generated and scored (`Protocol.reference_frames`).
    """

    entry: dict
    setting: str
    source: dict
    cross_sources: tuple[str, ...] = ()
    cross_frames: str = "first"
    reference_frames: int = 0

    @property
    def clip_id(self) -> str:
        return self.entry["clip_id"]

    def to_dict(self) -> dict:
        return {"clip_id": self.clip_id, "split": self.entry.get("split"), "speaker": self.entry.get("speaker"),
                "num_frames": self.entry.get("num_frames"), "labels": self.entry.get("labels") or {},
                "setting": self.setting, "source": self.source["clip_id"], "cross_sources": list(self.cross_sources),
                "cross_frames": self.cross_frames,
                **({"reference_frames": self.reference_frames} if self.reference_frames else {})}


def _rank(seed: int, clip_id: str) -> str:
    return hashlib.sha1(f"{seed}:{clip_id}".encode("utf-8")).hexdigest()


def rank_clips(entries: list[dict], count: int, seed: int = 0) -> list[dict]:
    """The `count` entries ranked first by sha1(f"{seed}:{clip_id}"), sorted by clip_id."""
    chosen = sorted(entries, key=lambda e: _rank(seed, e["clip_id"]))[: max(0, int(count))]
    return sorted(chosen, key=lambda e: e["clip_id"])


def _usable(store: Any, split: str, min_frames: int) -> list[dict]:
    return [e for e in store.clips(split) if int(e.get("num_frames") or 0) >= min_frames]


def _cross_source(entry: dict, pool: list[dict], seed: int) -> dict:
    """Another clip for the cross-driven setting: different emotion (when labelled) and speaker if
    possible, ties broken by the seeded hash; deterministic."""
    others = [e for e in pool if e["clip_id"] != entry["clip_id"]]
    if not others:
        raise ValueError(f"{entry['clip_id']}: the cross-driven setting needs another clip in the split")
    emotion = (entry.get("labels") or {}).get("emotion")

    def preference(e: dict) -> tuple:
        other_emotion = (e.get("labels") or {}).get("emotion")
        same_emotion = emotion is not None and other_emotion == emotion
        return (same_emotion, e.get("speaker") == entry.get("speaker"), _rank(seed, entry["clip_id"] + "|" + e["clip_id"]))

    return min(others, key=preference)


def select_clips(store: Any, protocol: Protocol) -> tuple[list[Selection], str]:
    """The protocol's clips of `store` (a ClipStore) and the split they came from.

    Raises ValueError (naming the splits the store has) when no split has a usable clip.
    """
    tried = (protocol.split, *protocol.fallback_splits)
    min_frames = protocol.min_frames + protocol.reference_frames
    for split in tried:
        pool = _usable(store, split, min_frames)
        if pool:
            break
    else:
        have = sorted({str(e.get("split")) for e in store.clips()})
        raise ValueError(f"{getattr(store, 'root', store)}: no clip with >= {min_frames} frames in split(s) "
                         f"{', '.join(tried)} (the store has splits: {', '.join(have) or 'none'})")
    if split != protocol.split:
        warnings.warn(f"protocol {protocol.name!r}: no usable clip in split {protocol.split!r}; "
                      f"evaluating split {split!r} instead", stacklevel=2)
    chosen = rank_clips(pool, protocol.num_clips, protocol.seed)
    selections = []
    for entry in chosen:
        if protocol.setting == "cross":
            selections.append(Selection(entry, "cross", _cross_source(entry, pool, protocol.seed),
                                        tuple(protocol.cross_sources), protocol.cross_frames,
                                        protocol.reference_frames))
        else:
            selections.append(Selection(entry, "self", entry, reference_frames=protocol.reference_frames))
    return selections, split


def train_clips(store: Any, protocol: Protocol, count: int) -> list[dict]:
    """Real training clips for NLSE-C's reference LSE-C: `count` clips of `protocol.train_split`
    of `store` (the protocol's training store) chosen like the test clips (seeded hash, stable)."""
    return rank_clips(_usable(store, protocol.train_split, protocol.min_frames), count, protocol.seed)


# ---------------------------------------------------------------------------------------------
# loading a clip into a request
# ---------------------------------------------------------------------------------------------
def fit_length(frames: torch.Tensor, length: int) -> torch.Tensor:
    """Frame min(t, len - 1) at position t, for t < length."""
    import torch

    idx = torch.clamp(torch.arange(length), max=len(frames) - 1)
    return frames[idx]


@dataclass
class ClipData:
    """A loaded clip: the request for the methods and the metrics' ground-truth inputs.

    real / real_landmarks are None in the cross-driven setting (ground truth undefined).
    real_landmarks: the store's dlib-68 landmarks of the real frames (T, 68, 2) in the frames'
    pixels, NaN rows where the detector found no face.
    pose_landmarks: the store's landmarks of the pose-source frames (T, 68, 2), same units, defined
    in both settings: row t belongs to frame ``pose_frame_index[t]`` of clip ``pose_clip_id``,
    the frame ``request.pose_source[t]`` shows (self-driven, or pose not among the cross sources:
    the clip itself, index t; cross ``"all"``: the other clip, min(t, len - 1); ``"first"``: 0).
    driver_truth: (T, 7) float32, the SynthTalk ground truth of each factor's driver at each t,
    columns `talkinghead.metrics.factors.DRIVER_TRUTH_COLUMNS`: mouth opening of the clip itself
    (its audio drives the mouth), pitch / yaw / roll of the pose source (``truth_pose``, aligned
    frames), blink and gaze of the eye source; NaN columns where the store has no such truth.
    emotion_targets / emotion_target: when the emotion comes from another clip and the store is
    labelled with emotions (MEAD layout), the mean expression features (from the store's landmarks)
    of one real clip of the clip's own speaker per emotion (same view, the driver's level when there
    is one), and the row of the driver's emotion; None otherwise.
    """

    selection: Selection
    request: GenerationRequest
    real_frames: torch.Tensor  # the clip's own frames (for the ground_truth baseline)
    real: torch.Tensor | None
    real_landmarks: torch.Tensor | None
    file: str
    pose_landmarks: torch.Tensor | None = None
    pose_clip_id: str | None = None
    pose_frame_index: torch.Tensor | None = None  # (T,) int64
    driver_truth: torch.Tensor | None = None  # (T, 7) `driver_truth` (load_clip), NaN without ground truth
    emotion_targets: torch.Tensor | None = None  # (K, 5) `emotion_targets` (load_clip)
    emotion_target: torch.Tensor | None = None  # () int64: the row of the driver's emotion

    def metric_inputs(self, fake: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Every clip input a metric may ask for (see `talkinghead.metrics.base`)."""
        return {"fake": fake, "real": self.real, "audio": self.request.audio,
                "reference": self.request.reference, "real_landmarks": self.real_landmarks,
                "pose_landmarks": self.pose_landmarks, "driver_truth": self.driver_truth,
                "emotion_targets": self.emotion_targets, "emotion_target": self.emotion_target}


def _fit_index(count: int, length: int) -> torch.Tensor:
    """Frame index min(t, length - 1) for t < count, int64 (T,)."""
    import torch

    return torch.clamp(torch.arange(count), max=length - 1)


def _store_landmarks(store: Any, entry: dict, num_frames: int) -> np.ndarray:
    """The store's landmarks of a clip of `num_frames` frames: float32 (N >= num_frames, 68, 2) in
    the aligned frames' pixels, NaN rows where the detector found no face (the store interpolates
    those; its ``landmarks_found`` array marks them)."""
    has_found = hasattr(store, "has") and store.has(entry, "landmarks_found")
    arrays = store.load(entry, ["landmarks"] + (["landmarks_found"] if has_found else []))
    landmarks = np.asarray(arrays["landmarks"], np.float32).copy()
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"{entry['clip_id']}: store landmarks must be (N, 68, 2), got {landmarks.shape}")
    if len(landmarks) < num_frames:
        raise ValueError(f"{entry['clip_id']}: the store has landmarks for {len(landmarks)} of its "
                         f"{num_frames} frames")
    if has_found:
        landmarks[~np.asarray(arrays["landmarks_found"], bool)] = np.nan
    return landmarks


#: `DRIVER_TRUTH_COLUMNS` entry -> (driver, store truth array, its column; None: the array is (T,))
_DRIVER_TRUTH = {"mouth_open": ("mouth", "truth_mouth", 0), "pitch": ("pose", "truth_pose", 0),
                 "yaw": ("pose", "truth_pose", 1), "roll": ("pose", "truth_pose", 2),
                 "blink": ("eye", "truth_blink", None), "gaze_x": ("eye", "truth_gaze", 0),
                 "gaze_y": ("eye", "truth_gaze", 1)}


def driver_truth(store: Any, drivers: dict[str, tuple[dict, np.ndarray]]) -> np.ndarray:
    """(T, 7) float32 ground truth of each factor's driver (`ClipData.driver_truth`).

    `drivers`: "mouth" / "pose" / "eye" -> (store entry of the driving clip, (T,) frame index into
    it). NaN columns where the driving clip has no such ``truth_*`` array."""
    from talkinghead.metrics.factors import DRIVER_TRUTH_COLUMNS

    count = len(next(iter(drivers.values()))[1])
    out = np.full((count, len(DRIVER_TRUTH_COLUMNS)), np.nan, np.float32)
    loaded: dict[tuple[str, str], np.ndarray | None] = {}
    for column, name in enumerate(DRIVER_TRUTH_COLUMNS):
        driver, key, index = _DRIVER_TRUTH[name]
        entry, frames = drivers[driver]
        if (entry["clip_id"], key) not in loaded:
            has = hasattr(store, "has") and store.has(entry, key)
            loaded[(entry["clip_id"], key)] = np.asarray(store.load(entry, [key])[key], np.float32) if has else None
        values = loaded[(entry["clip_id"], key)]
        if values is None or len(values) <= int(frames.max()):
            continue
        values = values[frames]
        out[:, column] = values if index is None else values[:, index]
    return out


_EXPRESSIONS: dict[tuple[str, str], np.ndarray] = {}  # (store root, clip_id) -> (5,) mean features


def _mean_expression(store: Any, entry: dict) -> np.ndarray:
    from talkinghead.metrics.factors import mean_expression

    key = (str(getattr(store, "root", id(store))), entry["clip_id"])
    if key not in _EXPRESSIONS:
        _EXPRESSIONS[key] = mean_expression(np.asarray(store.load(entry, ["landmarks"])["landmarks"], np.float64))
    return _EXPRESSIONS[key]


def emotion_targets(store: Any, entry: dict, driver: dict) -> tuple[np.ndarray, int] | None:
    """(K, 5) mean expression features of one clip per emotion of `entry`'s speaker and the row of
    `driver`'s emotion (`ClipData.emotion_targets`); None when the clips carry no emotion labels or
    the speaker has no clip of the driver's emotion."""
    labels, wanted = entry.get("labels") or {}, (driver.get("labels") or {})
    if "emotion" not in labels or "emotion" not in wanted:
        return None
    level = wanted.get("level")
    per_emotion: dict[str, dict] = {}
    for other in store.clips():
        other_labels = other.get("labels") or {}
        if other.get("speaker") != entry.get("speaker") or other_labels.get("view") != labels.get("view"):
            continue
        emotion = other_labels.get("emotion")
        best = per_emotion.get(emotion)
        distance = abs(int(other_labels.get("level") or 0) - int(level or 0))
        if best is None or distance < abs(int((best.get("labels") or {}).get("level") or 0) - int(level or 0)):
            per_emotion[emotion] = other
    if wanted["emotion"] not in per_emotion or len(per_emotion) < 2:
        return None
    names = sorted(per_emotion)
    return np.stack([_mean_expression(store, per_emotion[n]) for n in names]), names.index(wanted["emotion"])


def load_clip(store: Any, selection: Selection) -> ClipData:
    """Read a selected clip from `store` and build its request (see the module docstring)."""
    import torch

    entry = selection.entry
    arrays = store.load(entry, ["audio", "frame_offsets"])
    count = len(arrays["frame_offsets"]) - 1
    frames = frames_tensor(store.load_frames(entry, range(count)))
    if count < 1:
        raise ValueError(f"{entry['clip_id']}: no frames")
    landmarks = _store_landmarks(store, entry, count)
    # the pose source's frames, as (clip, frame index per t) and their landmarks (ClipData)
    pose_clip, pose_index, pose_landmarks = entry, torch.arange(count), landmarks
    audio = torch.from_numpy(np.asarray(arrays["audio"], np.float32).copy())
    sources = {"pose": frames, "eye": frames, "emotion": frames}
    own = (entry, np.arange(count))
    drivers = {"mouth": own, "pose": own, "eye": own}
    if selection.cross_sources:
        source = selection.source
        if selection.cross_frames == "first":
            driving = frames_tensor(store.load_frames(source, [0])).expand(count, -1, -1, -1)
            source_index = torch.zeros(count, dtype=torch.long)
        else:
            n = int(len(store.load(source, ["frame_offsets"])["frame_offsets"]) - 1)
            driving = fit_length(frames_tensor(store.load_frames(source, range(n))), count)
            source_index = _fit_index(count, n)
        if tuple(driving.shape[1:]) != tuple(frames.shape[1:]):
            raise ValueError(f"{entry['clip_id']}: frames of the driving clip {source['clip_id']} are "
                             f"{tuple(driving.shape[1:])}, the clip's {tuple(frames.shape[1:])}")
        for name in selection.cross_sources:
            sources[name] = driving
            if name in drivers:
                drivers[name] = (source, source_index.numpy())
        if "pose" in selection.cross_sources:
            pose_clip, pose_index = source, source_index
            pose_landmarks = _store_landmarks(store, source, int(source_index.max()) + 1)
    request = GenerationRequest(
        clip_id=entry["clip_id"], reference=frames[0].clone(), audio=audio, num_frames=count,
        pose_source=sources["pose"], eye_source=sources["eye"], emotion_source=sources["emotion"],
        labels=dict(entry.get("labels") or {}), setting=selection.setting, source_clip_id=selection.source["clip_id"],
    )
    pose_landmarks = torch.from_numpy(pose_landmarks[pose_index.numpy()])
    landmarks = torch.from_numpy(landmarks)
    self_driven = selection.setting == "self"
    path = store.path(entry) if hasattr(store, "path") else entry.get("file")
    # the metrics' copy of the real frames is separate from the request's sources, so a method
    # that writes into its inputs cannot change the ground truth it is scored against
    targets = emotion_targets(store, entry, selection.source) if "emotion" in selection.cross_sources else None
    data = ClipData(selection, request, frames, frames.clone() if self_driven else None,
                    landmarks if self_driven else None, str(path), pose_landmarks=pose_landmarks,
                    pose_clip_id=pose_clip["clip_id"], pose_frame_index=pose_index,
                    driver_truth=torch.from_numpy(driver_truth(store, drivers)),
                    emotion_targets=None if targets is None else torch.from_numpy(targets[0].astype(np.float32)),
                    emotion_target=None if targets is None else torch.tensor(targets[1]))
    return split_reference(store, data, selection.reference_frames) if selection.reference_frames else data


def split_reference(store: Any, data: ClipData, count: int) -> ClipData:
    """`data` with its first `count` frames made the request's ``reference_video`` and everything
    else (request audio and sources, real frames and landmarks, pose-source landmarks and frame
    indices, driver truth) cut to the frames after them (`Protocol.reference_frames`). The
    reference video carries the store's landmarks (frames without a face interpolated, as stored),
    poses and the audio under its frames; its first frame is the request's reference."""
    import torch

    from talkinghead.generation import SAMPLES_PER_FRAME, ReferenceVideo

    entry, request, p = data.selection.entry, data.request, int(count)
    total = request.num_frames
    if not 0 < p < total:
        raise ValueError(f"{entry['clip_id']}: {total} frames cannot give {p} reference frames and frames to score")
    arrays = store.load(entry, ["landmarks", "pose"])
    hop = SAMPLES_PER_FRAME
    audio = request.audio[: p * hop]
    audio = torch.cat([audio, audio.new_zeros(p * hop - len(audio))])
    video = ReferenceVideo(data.real_frames[:p].clone(),
                           torch.from_numpy(np.asarray(arrays["landmarks"][:p], np.float32).copy()),
                           torch.from_numpy(np.asarray(arrays["pose"][:p], np.float32).copy()), audio)

    def cut(x):
        return None if x is None else x[p:]

    new_request = GenerationRequest(
        clip_id=request.clip_id, reference=request.reference, audio=request.audio[p * hop:].clone(),
        num_frames=total - p, pose_source=cut(request.pose_source), eye_source=cut(request.eye_source),
        emotion_source=cut(request.emotion_source), labels=request.labels, setting=request.setting,
        source_clip_id=request.source_clip_id, reference_video=video)
    return dataclasses.replace(data, request=new_request, real_frames=data.real_frames[p:], real=cut(data.real),
                               real_landmarks=cut(data.real_landmarks), pose_landmarks=cut(data.pose_landmarks),
                               pose_frame_index=cut(data.pose_frame_index), driver_truth=cut(data.driver_truth))


def ground_truth_available(setting: str) -> bool:
    """Whether metrics with ground-truth inputs (`GROUND_TRUTH_INPUTS`) are defined in `setting`."""
    return setting == "self"

