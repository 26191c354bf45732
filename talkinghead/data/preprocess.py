"""Preprocessing: a raw corpus -> the clip store (see `talkinghead.data.store`).

Per clip: decode the video (converted to 25 fps) and its audio (16 kHz mono), detect 68 landmarks
on every frame (missing frames interpolated), align to 224 as PC-AVS / PD-FGC do, estimate the head
pose from the aligned landmarks, compute the mel spectrogram, and store the aligned frames as JPEG
with everything else. SynthTalk ground truth (a `.truth.npz` beside the clip) is carried along,
mapped into aligned coordinates (landmarks, and the head pose in the store's ``pose`` convention).

Parallel across processes; resumable (a clip whose store file exists is skipped; store files are
written atomically, so a killed run leaves no partial clip); a bad input is skipped and listed with
its file and reason in `<store>/report.json`, and the run goes on.

Inputs at another frame rate, another sample rate or with stereo audio are converted and noted in
the report (`converted`); with `strict=True` they are skipped as bad inputs instead.

Every input is accounted for in the report: stored clips with a caveat are listed under `flagged`
with their notes (conversions; silent audio, RMS below `SILENT_RMS`; audio and video durations that
differ by more than `DURATION_TOLERANCE_S`, trimmed to the shorter, or rejected when less than
`MIN_KEPT_FRACTION` of the longer would be kept; frames the detector missed whose landmarks were
tracked from their neighbours (`faces.track_missing`); frames without a face whose landmarks were
interpolated); clips not stored are under `failed` with the reason; media-named entries under the
root that no clip reads (directories, dangling symlinks, stray files) under `not_read`. `flagged`
and `converted` are rebuilt from the store's clip metadata, so a resumed run reports the same as an
uninterrupted one.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from talkinghead.data import audio as audio_lib
from talkinghead.data import faces, store, video
from talkinghead.data.corpora import FPS, SAMPLE_RATE, Clip, read_corpus
from talkinghead.errors import InputError
from talkinghead.fileio import atomic_write_text
from talkinghead.progress import progress as progress_bar

VERSION = 1
TRUTH_KEYS = ("pose", "mouth", "blink", "gaze", "viseme")
SILENT_RMS = 1e-3  # audio RMS (full scale 1.0) below this, about -60 dBFS, is flagged as silent
DURATION_TOLERANCE_S = 0.2  # audio and video lengths may differ by this much without a note
MIN_KEPT_FRACTION = 0.5  # trimming to the shorter stream must keep this much of the longer one
MEDIA_SUFFIXES = (".mp4", ".m4a", ".aac", ".wav", ".avi", ".mov", ".mkv", ".webm", ".mp3", ".flac")


@dataclass(frozen=True)
class PreprocessOptions:
    """min_frames: shorter clips are bad inputs; min_face_fraction: clips where a face is found in
    fewer frames are bad inputs; detect_size: frames are downscaled so their shorter side is at
    most this for detection (landmarks are mapped back); jpeg_quality of stored frames."""

    backend: str = "dlib"
    strict: bool = False
    min_frames: int = 10
    min_face_fraction: float = 0.5
    detect_size: int = 320
    jpeg_quality: int = 95


def detect_clip_landmarks(frames: np.ndarray, options: PreprocessOptions = PreprocessOptions()
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Landmarks of raw RGB uint8 frames (T, H, W, 3) as the clip store detects them: the
    `options.backend` detector on frames downscaled so their shorter side is <= `options.detect_size`
    (INTER_AREA), frames it misses tracked from their neighbours (`faces.track_missing`; dlib only),
    mapped back to the frames' pixels. Returns (landmarks (T, 68, 2) float32, NaN where no face was
    found or tracked; found (T,) bool: detected; tracked (T,) bool)."""
    factor = min(1.0, options.detect_size / min(frames.shape[1:3]))
    small = frames
    if factor < 1.0:
        size = (round(frames.shape[2] * factor), round(frames.shape[1] * factor))
        small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    landmarks, found = faces.detect_landmarks(small, options.backend)
    landmarks, tracked = faces.track_missing(small, landmarks, found, options.backend)
    return landmarks / factor, found, tracked


def align_frames_and_landmarks(frames: np.ndarray, what: str = "input",
                               options: PreprocessOptions = PreprocessOptions()) -> tuple[np.ndarray, np.ndarray]:
    """Raw RGB uint8 frames (T, H, W, 3) -> aligned faces (T, 224, 224, 3) uint8 and their landmarks
    (T, 68, 2) float32 in the aligned image, exactly as a clip is aligned into the store
    (`detect_clip_landmarks`, missing frames filled, `faces.align_clip`).
    ValueError "<what>: no face found" when no frame has a face."""
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"{what}: frames must be a non-empty (T, H, W, 3) array, got shape {frames.shape}")
    landmarks, found, tracked = detect_clip_landmarks(frames, options)
    if not found.any():
        raise ValueError(f"{what}: no face found")
    aligned, aligned_landmarks, _ = faces.align_clip(frames, faces.fill_missing(landmarks, found | tracked))
    return aligned, aligned_landmarks


def align_frames(frames: np.ndarray, what: str = "input", options: PreprocessOptions = PreprocessOptions()
                 ) -> np.ndarray:
    """The aligned faces of `align_frames_and_landmarks`."""
    return align_frames_and_landmarks(frames, what, options)[0]


def process_clip(clip: Clip, store_root: str | Path, options: PreprocessOptions = PreprocessOptions()) -> list[str]:
    """Process one clip into the store. Returns its notes (conversions, caveats); raises InputError."""
    info = video.probe_video(clip.video)
    audio_file = clip.audio or clip.video
    if not info.has_audio and clip.audio is None:
        raise InputError(clip.video, "no audio track")
    audio_info = audio_lib.probe_audio(audio_file)
    problems = []  # (file, what is off) for inputs that need converting
    if abs(info.fps - FPS) > 0.01:
        problems.append((clip.video, f"frame rate {info.fps:g} (expected {FPS})"))
    if audio_info["sample_rate"] != SAMPLE_RATE:
        problems.append((audio_file, f"sample rate {audio_info['sample_rate']} (expected {SAMPLE_RATE})"))
    if audio_info["channels"] != 1:
        problems.append((audio_file, f"{audio_info['channels']} audio channels (expected mono)"))
    if problems and options.strict:
        raise InputError(problems[0][0], "; ".join(what for _, what in problems))
    notes = [f"{what}: converted" for _, what in problems]
    frames, fps = video.read_video(clip.video)
    frames = video.convert_fps(frames, fps, FPS)
    wav = audio_lib.load_audio(audio_file, SAMPLE_RATE)
    samples_per_frame = SAMPLE_RATE // FPS
    num_frames = min(len(frames), len(wav) // samples_per_frame)
    if num_frames < options.min_frames:
        raise InputError(clip.video, f"too short: {num_frames} frames with audio (< {options.min_frames})")
    video_s, audio_s = len(frames) / FPS, len(wav) / SAMPLE_RATE
    if abs(video_s - audio_s) > DURATION_TOLERANCE_S:
        kept = num_frames / FPS / max(video_s, audio_s)
        what = f"audio {audio_s:.2f} s and video {video_s:.2f} s"
        if kept < MIN_KEPT_FRACTION:
            raise InputError(audio_file if audio_s < video_s else clip.video,
                             f"{what} disagree: trimming to the shorter would keep {100 * kept:.0f}% "
                             f"(< {100 * MIN_KEPT_FRACTION:.0f}%)")
        notes.append(f"{what} disagree: trimmed to the shorter, {num_frames} frames")
    frames, wav = frames[:num_frames], wav[: num_frames * samples_per_frame]
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if rms < SILENT_RMS:
        notes.append(f"silent audio: RMS {rms:.1e} (< {SILENT_RMS:g}, about -60 dBFS)")
    landmarks, found, tracked = detect_clip_landmarks(frames, options)
    face = found | tracked
    if face.mean() < options.min_face_fraction:
        raise InputError(clip.video, f"no face: found in {face.sum()} of {num_frames} frames"
                         + (f" ({tracked.sum()} of them tracked)" if tracked.any() else ""))
    if tracked.any():
        notes.append(f"face not detected in {int((~found).sum())} of {num_frames} frames: "
                     f"{int(tracked.sum())} tracked from their neighbours")
    if not face.all():
        notes.append(f"no face in {int((~face).sum())} of {num_frames} frames: landmarks interpolated")
    landmarks = faces.fill_missing(landmarks, face)
    aligned, aligned_landmarks, transforms = faces.align_clip(frames, landmarks)
    jpeg, offsets = store.encode_frames(aligned, quality=options.jpeg_quality)
    arrays = {
        "frames": jpeg,
        "frame_offsets": offsets,
        "audio": wav.astype(np.float32),
        "mel": audio_lib.mel_spectrogram(wav).numpy(),
        "landmarks": aligned_landmarks,
        "landmarks_found": found,
        "landmarks_tracked": tracked,
        "pose": faces.estimate_head_pose(aligned_landmarks),
    }
    if clip.truth is not None:
        arrays.update(_truth_arrays(clip.truth, transforms, num_frames))
    meta = {
        "dataset": clip.dataset, "clip_id": clip.clip_id, "speaker": clip.speaker, "split": clip.split,
        "labels": clip.labels, "num_frames": int(num_frames), "fps": FPS, "sample_rate": SAMPLE_RATE,
        "source_video": str(clip.video), "source_audio": str(audio_file), "landmark_backend": options.backend,
        "version": VERSION, "notes": notes,
    }
    store.write_clip(store_root, clip.clip_id, arrays, meta)
    return notes


def aligned_pose(pose: np.ndarray, transforms: np.ndarray, reference_iod: float) -> np.ndarray:
    """Raw-frame head poses (T, 6) (rotation vector, tx, ty, log scale w.r.t. `reference_iod` px)
    -> the same poses in the aligned frames that `transforms` (T, 2, 3) map to, in the store's
    ``pose`` convention (`faces.estimate_head_pose`: log scale w.r.t. an IOD of 50 px).

    A similarity A = k Rz(theta) then b composes with the weak-perspective projection as
    rotation Rz(theta) R, translation A t + b and scale k s."""
    out = np.empty_like(pose, dtype=np.float32)
    for t, (p, m) in enumerate(zip(pose.astype(np.float64), transforms.astype(np.float64))):
        k = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        theta = float(np.arctan2(m[1, 0], m[0, 0]))
        spin = faces.rotation_matrix(np.array([0.0, 0.0, theta]))
        rotation = spin @ faces.rotation_matrix(p[:3])
        out[t, :3] = cv2.Rodrigues(rotation)[0].ravel()
        out[t, 3:5] = faces.apply_affine(p[3:5], m)
        out[t, 5] = p[5] + np.log(k * reference_iod / faces.POSE_REFERENCE_IOD)
    return out


def _truth_arrays(path: Path, transforms: np.ndarray, num_frames: int) -> dict[str, np.ndarray]:
    """SynthTalk ground truth for the stored frames: landmarks and head pose mapped into aligned
    coordinates (`aligned_pose`), the other tracks as they are."""
    with np.load(path) as truth:
        if "pose_reference_iod" not in truth:
            raise InputError(path, "SynthTalk truth without pose_reference_iod (written by an older "
                                   "SynthTalk): regenerate the corpus with `talkinghead synth`")
        out = {"truth_landmarks": np.stack(
            [faces.apply_affine(lm, m) for lm, m in zip(truth["landmarks"][:num_frames], transforms)]
        ).astype(np.float32)}
        for key in TRUTH_KEYS:
            out[f"truth_{key}"] = truth[key][:num_frames]
        out["truth_pose"] = aligned_pose(truth["pose"][:num_frames], transforms[:num_frames],
                                         float(truth["pose_reference_iod"]))
    return out


def _init_worker() -> None:
    cv2.setNumThreads(1)
    import torch

    torch.set_num_threads(1)
    threadpool_limits(1)


def _run(args: tuple[Clip, str, PreprocessOptions]) -> tuple[Clip, list[str], tuple[str, str] | None]:
    clip, store_root, options = args
    try:
        return clip, process_clip(clip, store_root, options), None
    except InputError as err:
        return clip, [], (err.path, err.reason)
    except Exception as err:  # any other failure of one clip is reported, never fatal to the run
        return clip, [], (str(clip.video), f"{type(err).__name__}: {err}")


def preprocess_corpus(dataset: str, root: str | Path, store_root: str | Path, workers: int = 2,
                      backend: str = "dlib", limit: int | None = None, progress: bool = True,
                      strict: bool = False, shards: bool = False) -> dict:
    """Process every clip of corpus `dataset` under `root` into `store_root`.

    Returns the report (also written to `<store>/report.json`): processed, skipped (already in the
    store), stored, failed [{file, clip_id, reason}], flagged [{clip_id, notes}] (every stored clip
    with a note), converted [{clip_id, notes}] (those notes that are conversions), not_read
    [{file, reason}], seconds, store.
    `shards=True` also writes LitData shards to `<store>/shards` for streaming.
    """
    options = PreprocessOptions(backend=backend, strict=strict)
    faces.get_landmark_detector(backend)  # fail early (missing models) before spawning workers
    corpus = read_corpus(dataset, root)
    clips = corpus if limit is None else corpus[:limit]
    store_root = Path(store_root)
    (store_root / "clips").mkdir(parents=True, exist_ok=True)
    todo = [c for c in clips if not store.clip_exists(store_root, c.clip_id)]
    report = {"dataset": dataset, "root": str(root), "store": str(store_root), "clips": len(clips),
              "processed": 0, "skipped": len(clips) - len(todo), "failed": [], "converted": []}
    start = time.time()
    bar = progress_bar(total=len(todo), desc=f"preprocess {dataset}", unit="clip", disable=not progress)
    jobs = [(c, str(store_root), options) for c in todo]
    if workers <= 1:
        _consume(map(_run, jobs), report, bar)
    else:
        _consume(_run_parallel(jobs, workers), report, bar)
    bar.close()
    report["seconds"] = round(time.time() - start, 2)
    report["failed"].sort(key=lambda f: f["clip_id"])
    entries = {e["clip_id"]: e for e in store.build_index(store_root)}
    _notes_from_store(report, store_root, [c for c in clips if c.clip_id in entries], entries)
    report["not_read"] = unread_inputs(root, corpus)
    if shards:
        store.write_shards(store_root, store_root / "shards")
        report["shards"] = str(store_root / "shards")
    atomic_write_text(store_root / "report.json", json.dumps(report, indent=1))
    return report


#: A clip that kills its worker while running alone this many times is reported as failed.
MAX_CRASHES = 2


def _run_parallel(jobs: list, workers: int, run=_run):
    """Yield `run` (default `_run`) results of `jobs` from `workers` spawned processes, in completion order.

    At most `workers` clips are in flight, so when a worker dies (a crash in native code, the
    out-of-memory killer) the suspects are known: the pool is restarted and the clips that were in
    flight are run again one at a time, so an innocent clip beside the culprit is never blamed. A
    clip whose worker dies while it runs alone `MAX_CRASHES` times is reported as failed.
    """
    queue = deque(jobs)
    suspects: deque = deque()
    crashes: dict[str, int] = {}
    while queue or suspects:
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)
        running: dict = {}
        try:
            while queue or suspects or running:
                while suspects and not running:
                    job = suspects.popleft()
                    running[pool.submit(run, job)] = job
                while queue and not suspects and len(running) < workers:
                    job = queue.popleft()
                    running[pool.submit(run, job)] = job
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()  # raises BrokenProcessPool when a worker died
                    del running[future]
                    yield result
        except BrokenProcessPool:
            if len(running) == 1:
                (job,) = running.values()
                clip = job[0]
                crashes[clip.clip_id] = crashes.get(clip.clip_id, 0) + 1
                if crashes[clip.clip_id] >= MAX_CRASHES:
                    yield clip, [], (str(clip.video), "the worker process died while processing this clip")
                else:
                    suspects.appendleft(job)
            else:
                suspects.extend(running.values())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _notes_from_store(report: dict, store_root: Path, stored: list[Clip], entries: dict) -> None:
    """Fill report['stored'], ['flagged'] and ['converted'] from the stored clips' metadata."""
    report["stored"], report["flagged"], report["converted"] = len(stored), [], []
    for clip in stored:
        notes = store.read_clip_meta(store_root / entries[clip.clip_id]["file"]).get("notes") or []
        if notes:
            report["flagged"].append({"clip_id": clip.clip_id, "notes": notes})
        conversions = [n for n in notes if n.endswith(": converted")]
        if conversions:
            report["converted"].append({"clip_id": clip.clip_id, "notes": conversions})


def unread_inputs(root: str | Path, clips: list[Clip]) -> list[dict]:
    """Entries under `root` named like media files (`MEDIA_SUFFIXES`) that no clip reads:
    directories, dangling symlinks, and files outside the corpus layout. [{file, reason}], sorted."""
    used = {str(Path(p)) for c in clips for p in (c.video, c.audio) if p is not None}
    out = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            if name.startswith(".") or not name.lower().endswith(MEDIA_SUFFIXES):
                continue
            path = Path(folder) / name
            if path.is_symlink() and not path.exists():
                reason = f"dangling symlink (to {os.readlink(path)})"
            elif path.is_dir():
                reason = "a directory, not a media file"
            elif str(path) in used:
                continue
            else:
                reason = "not part of any clip of this corpus layout"
            out.append({"file": str(path), "reason": reason})
    return sorted(out, key=lambda e: e["file"])


def _consume(results, report: dict, bar) -> None:
    for clip, notes, failure in results:
        if failure is None:
            report["processed"] += 1
        else:
            report["failed"].append({"clip_id": clip.clip_id, "file": failure[0], "reason": failure[1]})
            bar.write(f"skipped {failure[0]}: {failure[1]}")
        bar.update()
