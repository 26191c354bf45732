"""SynthTalk corpus writer: real mp4/m4a files in the VoxCeleb2, LRW and MEAD layouts.

Every clip gets `<stem>.truth.npz` beside its mp4 with per-frame ground truth:
  landmarks (T, 68, 2) px; pose (T, 6) = rotation vector (rad), tx, ty (px of the eye midpoint),
  log scale (scale = pose_reference_iod * exp(log scale) px per template unit); mouth (T, 3) = open,
  width, round in [0, 1]; blink (T,) in [0, 1]; gaze (T, 2) in [-1, 1]; viseme (T,) phone id at each
  frame centre; phone_id / phone_start / phone_end (s) and phone_names (the audio's phone timeline);
  identity, mirror, emotion, level, fps, sample_rate, pose_reference_iod.
Blinks, gaze and emotion are drawn independently of the speech; the mouth follows it. Head pose is
smooth random motion; the opt-in ``large-nods`` motion adds nods driven by the speech (`speech_head_motion`).
25 fps, 16 kHz mono audio, 224 x 224 frames. Deterministic from the seed. Identities used for the
test split never appear in train/val.
"""
from __future__ import annotations

import string
import sys
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from talkinghead.data.synthtalk import puppet, speech
from talkinghead.fileio import atomic_write, atomic_write_text
from talkinghead.progress import progress as progress_bar

FPS = speech.FPS
SAMPLE_RATE = speech.SAMPLE_RATE
LAYOUTS = ("vox2", "lrw", "mead")
LRW_FRAMES = 29
MEAD_LEVELS = {e: ([1] if e == "neutral" else [1, 2, 3]) for e in puppet.EMOTIONS}


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Identities [0, train_identities) are train, the next test_identities test."""

    layout: str = "vox2"
    train_identities: int = 48
    test_identities: int = 12
    videos_per_identity: int = 1
    clips_per_video: int = 2
    duration: float = 3.0  # seconds per clip (vox2, mead); LRW clips are 29 frames
    lrw_words: int = 10
    lrw_clips_per_word: int = 6  # per split word: train/val/test get 4/1/1 of every 6
    mead_views: tuple[str, ...] = ("front",)
    motion: str = "natural"  # head motion (MOTIONS): "large" for the large-motion variant
    seed: int = 0
    identity_candidates: int = puppet.CANDIDATES  # draws per identity to choose from (puppet.make_identity); 1: no choice


@dataclass(frozen=True)
class ClipJob:
    """One clip to render: where it goes and what drives it."""

    video: str  # output mp4 path
    audio: str | None  # separate m4a twin, or None
    identity: puppet.Identity  # chosen once by plan_jobs, so worker processes do not choose again
    background_variant: int
    seed: tuple[int, ...]
    duration: float
    emotion: str | None = None  # None: drawn at random
    level: int | None = None
    yaw_bias: float = 0.0  # radians, for MEAD side views
    motion: str = "natural"  # head motion: MOTIONS
    word: tuple[str, ...] | None = None  # LRW: the phones of the centred word
    lrw_txt: str | None = None  # LRW: metadata file to write


# ---------------------------------------------------------------------------------------------
# Motion tracks
# ---------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, n: int, amplitude: float, fmin: float = 0.08, fmax: float = 0.6) -> np.ndarray:
    """Sum of three random sinusoids (frequencies in Hz at 25 fps), std ~ amplitude."""
    t = np.arange(n) / FPS
    out = np.zeros(n)
    for _ in range(3):
        out += np.sin(2 * np.pi * rng.uniform(fmin, fmax) * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.0)
    return amplitude * out / 1.5


MOTIONS = ("natural", "large", "large-nods")
#: "large" head motion: (per-clip offset range, smooth-noise amplitude, limit) of pitch, yaw, roll
#: (radians), tx, ty (px) and log scale. Limits: +-20, +-37, +-15.5 degrees, as VoxCeleb2's range.
LARGE_MOTION = ((0.12, 0.2, 0.35), (0.3, 0.35, 0.65), (0.12, 0.16, 0.27), (12.0, 8.0, 24.0), (8.0, 5.0, 16.0),
                (0.12, 0.08, 0.25))


#: speech-driven nods of the ``large-nods`` motion: (frequency Hz, decay s, amplitude rad per unit of onset) of
#: pitch, yaw and roll; see `speech_head_motion`.
SPEECH_NODS = ((1.5, 0.3, 0.5), (1.2, 0.3, 0.5), (1.35, 0.3, 0.3))
#: the envelope's smoothing before its onsets are taken (Gaussian std, frames): bridges the closures of stops
SPEECH_SMOOTH = 1.5
#: the speech envelope's range: levels more than this many dB below the clip's loudest frame count as silence
SPEECH_RANGE_DB = 40.0


def speech_envelope(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames,) loudness of each frame's audio in [0, 1]: its RMS level in dB mapped linearly from
    `SPEECH_RANGE_DB` below the clip's loudest frame (0, and silence) to the loudest (1); all 0 for a
    silent clip (RMS at most 1e-5 everywhere)."""
    samples = SAMPLE_RATE // FPS
    wav = np.asarray(audio, np.float64).reshape(-1)
    wav = np.pad(wav, (0, max(0, num_frames * samples - len(wav))))[: num_frames * samples]
    rms = np.sqrt((wav.reshape(num_frames, samples) ** 2).mean(1))
    if rms.max() <= 1e-5:
        return np.zeros(num_frames)
    level = 20.0 * np.log10(np.maximum(rms, 1e-5))
    return np.clip((level - level.max()) / SPEECH_RANGE_DB + 1.0, 0.0, 1.0)


def speech_head_motion(envelope: np.ndarray, rng: np.random.Generator, energy: float) -> np.ndarray:
    """(n, 3) rotation (rad; pitch, yaw, roll) of nods driven by the speech, as speakers move the head
    with the stress of what they say (Yehia et al. 2002; the premise of Rhythmic Head): every rise of
    the loudness envelope (its onsets, after a Gaussian smoothing of `SPEECH_SMOOTH` frames) starts a
    damped swing, exp(-t / decay) sin(2 pi f t) less its mean over its 3 s (so that nods do not add up
    to a drift against the pose limits), x amplitude (`SPEECH_NODS`) x `energy` (the identity's motion
    factor), summed over the onsets; pitch swings the same way first at every onset (a nod), yaw and
    roll to a side drawn per clip. So the nods are a function of the audio (but for the sides), and
    a still pause adds none. ``envelope``: (n,) in [0, 1], `speech_envelope`."""
    taps = np.exp(-0.5 * (np.arange(-6, 7) / SPEECH_SMOOTH) ** 2)
    smooth = np.convolve(np.pad(envelope, 6, mode="edge"), taps / taps.sum(), mode="valid")
    onset = np.maximum(0.0, np.diff(smooth, prepend=smooth[0]))
    t = np.arange(int(3 * FPS)) / FPS
    out = np.zeros((len(envelope), 3))
    for k, (frequency, decay, amplitude) in enumerate(SPEECH_NODS):
        side = 1.0 if k == 0 else float(rng.choice([-1.0, 1.0]))
        swing = np.exp(-t / decay) * np.sin(2 * np.pi * frequency * t)
        swing -= swing.mean()
        out[:, k] = side * amplitude * energy * np.convolve(onset, swing)[: len(envelope)]
    return out


def head_pose_track(rng: np.random.Generator, n: int, energy: float, yaw_bias: float = 0.0,
                    motion: str = "natural", speech_motion: np.ndarray | None = None) -> np.ndarray:
    """(n, 6) smooth head motion: rotation vector (pitch about x, yaw about y, roll about z), tx, ty, log s.

    ``natural``: small motion (yaw about +-0.14 rad of noise around a small offset), independent of the
    speech; ``large``: the ranges of `LARGE_MOTION` (yaw over +-35 degrees, pitch +-20, roll +-15,
    translation and scale); ``large-nods``: the same plus ``speech_motion`` ((n, 3) radians,
    `speech_head_motion` of the clip's audio), before the limits."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose one of: {', '.join(MOTIONS)}")
    if motion == "large-nods" and (speech_motion is None or len(speech_motion) != n):
        raise ValueError("large-nods head motion needs the speech's nods, (n, 3) radians (speech_head_motion)")
    pose = np.zeros((n, 6))
    if motion in ("large", "large-nods"):
        centre = (0.0, yaw_bias, 0.0, *puppet.FRAME_EYE_CENTRE, 0.0)
        for k, (offset, amplitude, limit) in enumerate(LARGE_MOTION):
            track = rng.uniform(-offset, offset) + _smooth_noise(rng, n, amplitude * energy)
            if motion == "large-nods" and k < 3:
                track = track + speech_motion[:, k]
            pose[:, k] = centre[k] + np.clip(track, -limit, limit)
        return pose
    pose[:, 0] = rng.uniform(-0.05, 0.05) + _smooth_noise(rng, n, 0.07 * energy)
    pose[:, 1] = yaw_bias + rng.uniform(-0.1, 0.1) + _smooth_noise(rng, n, 0.14 * energy)
    pose[:, 2] = rng.uniform(-0.04, 0.04) + _smooth_noise(rng, n, 0.05 * energy)
    pose[:, 3] = puppet.FRAME_EYE_CENTRE[0] + rng.uniform(-4, 4) + _smooth_noise(rng, n, 3.0 * energy)
    pose[:, 4] = puppet.FRAME_EYE_CENTRE[1] + rng.uniform(-3, 3) + _smooth_noise(rng, n, 2.0 * energy)
    pose[:, 5] = rng.uniform(-0.05, 0.05) + _smooth_noise(rng, n, 0.02 * energy)
    return pose


BLINK_PROFILE = np.array([0.35, 0.8, 1.0, 0.75, 0.4, 0.15])


def blink_track(rng: np.random.Generator, n: int, rate: float = 0.35) -> np.ndarray:
    """(n,) eyelid closure in [0, 1]: blinks as a Poisson process, each ~0.24 s."""
    out = np.zeros(n)
    t = rng.exponential(1 / rate) * FPS * 0.5
    while t < n:
        start = int(t)
        seg = BLINK_PROFILE[: max(0, min(len(BLINK_PROFILE), n - start))]
        out[start:start + len(seg)] = np.maximum(out[start:start + len(seg)], seg)
        t += len(BLINK_PROFILE) + rng.exponential(1 / rate) * FPS
    return out


def gaze_track(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 2) gaze: fixations held 0.4-2 s, joined by 2-frame saccades."""
    out = np.zeros((n, 2))
    target = rng.uniform([-0.6, -0.4], [0.6, 0.4])
    i = 0
    while i < n:
        hold = int(rng.uniform(0.4, 2.0) * FPS)
        out[i:i + hold] = target
        i += hold
        target = rng.uniform([-0.8, -0.5], [0.8, 0.5]) if rng.random() < 0.7 else np.zeros(2)
    # 2-frame saccades: a 3-tap average
    padded = np.pad(out, ((1, 1), (0, 0)), mode="edge")
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3


def viseme_ids(phones: list[tuple[str, float, float]], num_frames: int) -> np.ndarray:
    """Phone id sounding at each frame's centre time."""
    centres = (np.arange(num_frames) + 0.5) / FPS
    ids = np.zeros(num_frames, dtype=np.int16)
    for ph, start, end in phones:
        ids[(centres >= start) & (centres < end)] = speech.PHONES.index(ph)
    return ids


def factor_sweep(identity_index: int, seed: int, num_frames: int, motion: str = "natural", emotion: str = "neutral",
                 level: int = 1, candidates: int = puppet.CANDIDATES) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames of one identity whose factors are drawn independently per frame, for validating
    factor estimators: (frames (T, 224, 224, 3) uint8, truth) with truth keys landmarks (T, 68, 2),
    pose (T, 6) (`head_pose_track` of `motion`), mouth (T, 3) uniform (open in [0, 1], width in
    [0.2, 0.8], round in [0, 0.5]), blink (T,) (0 or uniform in [0, 1], 40 % of frames), gaze (T, 2)
    uniform in [-0.8, 0.8] x [-0.5, 0.5]. Not video: no temporal smoothness but the pose's.
    `candidates`: as `puppet.make_identity`."""
    rng = np.random.default_rng([seed, identity_index, 44])
    renderer = puppet.Renderer(puppet.make_identity(identity_index, seed, candidates))
    pose = head_pose_track(rng, num_frames, 1.0, motion=motion)
    mouth = np.stack([rng.uniform(0, 1, num_frames), rng.uniform(0.2, 0.8, num_frames),
                      rng.uniform(0, 0.5, num_frames)], 1)
    blink = rng.uniform(0, 1, num_frames) * (rng.random(num_frames) < 0.4)
    gaze = rng.uniform([-0.8, -0.5], [0.8, 0.5], (num_frames, 2))
    frames = np.empty((num_frames, puppet.FRAME_SIZE, puppet.FRAME_SIZE, 3), np.uint8)
    landmarks = np.empty((num_frames, 68, 2), np.float32)
    with threadpool_limits(1):
        for t in range(num_frames):
            frames[t], landmarks[t] = renderer.render(pose[t], mouth[t], blink[t], gaze[t], emotion, level)
    return frames, {"landmarks": landmarks, "pose": pose, "mouth": mouth, "blink": blink, "gaze": gaze}


# ---------------------------------------------------------------------------------------------
# One clip
# ---------------------------------------------------------------------------------------------


def _utterance(job: ClipJob, identity: puppet.Identity, rng: np.random.Generator
               ) -> tuple[speech.Utterance, tuple[float, float] | None]:
    """The clip's speech, and for LRW clips the (start, end) seconds of the centred word."""
    voice = speech.Voice(f0=identity.voice_f0, formant_scale=identity.voice_formant_scale, rate=identity.voice_rate)
    if job.word is None:
        return speech.synthesize(speech.plan_utterance(rng, job.duration, voice), voice, rng), None
    # LRW: context speech, the word centred, context speech
    word_plan = speech.plan_utterance(rng, 10.0, voice, words=[list(job.word)], lead=0.0)
    word_plan = [(ph, d) for ph, d in word_plan if ph != "sil"]
    word_len = sum(d for _, d in word_plan)
    start = (job.duration - word_len) / 2
    before = speech.plan_utterance(rng, start, voice, lead=rng.uniform(0.0, start))
    after = speech.plan_utterance(rng, job.duration - start - word_len, voice, lead=rng.uniform(0.02, 0.1))
    start = sum(d for _, d in before)  # exact, after plan_utterance's rounding
    return speech.synthesize(before + word_plan + after, voice, rng), (start, start + word_len)


def render_clip(job: ClipJob) -> dict:
    """Render a clip and write its files (mp4 with audio, optional m4a twin, truth npz, LRW txt).

    Returns a summary dict. Files are written atomically, the truth file last, so a clip is complete
    exactly when its truth file exists. BLAS runs single-threaded here so that the warp's float
    rounding, hence every pixel, is the same in any process.
    """
    with threadpool_limits(1):
        return _render_clip(job)


def _render_clip(job: ClipJob) -> dict:
    from talkinghead.data.video import write_audio, write_video

    rng = np.random.default_rng(job.seed)
    identity = job.identity
    renderer = puppet.Renderer(identity, background_variant=job.background_variant)
    utterance, word_span = _utterance(job, identity, rng)
    num_frames = int(round(job.duration * FPS))
    audio = utterance.audio[: int(round(num_frames / FPS * SAMPLE_RATE))]
    mouth = speech.mouth_track(utterance.phones, num_frames)
    nods = None
    if job.motion == "large-nods":  # its own generator, so every other track stays as with "large"
        nods = speech_head_motion(speech_envelope(audio, num_frames), np.random.default_rng([*job.seed, 1]),
                                  identity.motion_amplitude)
    pose = head_pose_track(rng, num_frames, identity.motion_amplitude, job.yaw_bias, job.motion, nods)
    blink = blink_track(rng, num_frames)
    gaze = gaze_track(rng, num_frames)
    emotion = job.emotion or (puppet.EMOTIONS[int(rng.integers(len(puppet.EMOTIONS)))] if rng.random() < 0.5 else "neutral")
    level = job.level or (1 if emotion == "neutral" else int(rng.integers(1, 4)))
    gain = rng.uniform(0.85, 1.12, 3)
    frames = np.empty((num_frames, puppet.FRAME_SIZE, puppet.FRAME_SIZE, 3), np.uint8)
    landmarks = np.empty((num_frames, 68, 2), np.float32)
    for t in range(num_frames):
        frames[t], landmarks[t] = renderer.render(pose[t], mouth[t], blink[t], gaze[t], emotion, level, gain)
    video = Path(job.video)
    video.parent.mkdir(parents=True, exist_ok=True)
    write_video(video, frames, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE)
    if job.audio:
        Path(job.audio).parent.mkdir(parents=True, exist_ok=True)
        write_audio(job.audio, audio, SAMPLE_RATE)
    if job.lrw_txt:
        atomic_write_text(Path(job.lrw_txt), lrw_text(Path(job.video).parent.parent.name, word_span, identity.index))
    names = [p for p, _, _ in utterance.phones]
    truth = dict(
        landmarks=landmarks, pose=pose.astype(np.float32), mouth=mouth, blink=blink.astype(np.float32),
        gaze=gaze.astype(np.float32), viseme=viseme_ids(utterance.phones, num_frames),
        phone_id=speech.phone_ids(utterance.phones), phone_names=np.array(names),
        phone_start=np.array([s for _, s, _ in utterance.phones], np.float32),
        phone_end=np.array([e for _, _, e in utterance.phones], np.float32),
        identity=np.int32(identity.index), mirror=np.bool_(identity.mirror), emotion=np.array(emotion),
        level=np.int32(level), fps=np.int32(FPS), sample_rate=np.int32(SAMPLE_RATE),
        pose_reference_iod=np.float32(puppet.FRAME_IOD),
    )
    truth_file = video.with_name(video.stem + ".truth.npz")
    atomic_write(truth_file, lambda tmp: np.savez_compressed(tmp, **truth))
    return {"video": job.video, "frames": num_frames}


def lrw_text(word: str, span: tuple[float, float], identity: int) -> str:
    """LRW metadata: the word, and its duration on the 5th line as in the real corpus."""
    return f"Text:  {word}\nConf:  1\nSpeaker: synthtalk identity {identity}\n\nDuration: {span[1] - span[0]:.2f} seconds\n"


# ---------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------


def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=11))


def plan_jobs(root: str | Path, config: SynthConfig) -> list[ClipJob]:
    """Every clip of the corpus, in a deterministic order. Chooses the corpus's identities
    (`puppet.make_identity`: about 70 s per group of 12 the first time in a process)."""
    if config.identity_candidates < 1:
        raise ValueError(f"identity_candidates must be at least 1, got {config.identity_candidates}")
    if config.layout not in LAYOUTS:
        raise ValueError(f"unknown layout {config.layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if config.motion not in MOTIONS:
        raise ValueError(f"unknown motion {config.motion!r}; choose one of: {', '.join(MOTIONS)}")
    root = Path(root)
    seed = config.seed
    n_train, n_test = config.train_identities, config.test_identities
    people = {i: puppet.make_identity(i, seed, config.identity_candidates) for i in range(n_train + n_test)}
    jobs: list[ClipJob] = []
    if config.layout == "vox2":
        for ident in range(n_train + n_test):
            part = "dev" if ident < n_train else "test"
            rng = np.random.default_rng([seed, ident, 1])
            speaker = f"id{ident + 1:05d}"
            for v in range(config.videos_per_identity):
                yt = _youtube_id(rng)
                for c in range(config.clips_per_video):
                    name = f"{c + 1:05d}"
                    jobs.append(ClipJob(
                        video=str(root / part / "mp4" / speaker / yt / f"{name}.mp4"),
                        audio=str(root / part / "aac" / speaker / yt / f"{name}.m4a"),
                        identity=people[ident], background_variant=v, seed=(seed, ident, v, c, 11),
                        duration=config.duration, motion=config.motion))
    elif config.layout == "lrw":
        word_rng = np.random.default_rng([seed, 2])
        words: dict[str, list[str]] = {}
        while len(words) < config.lrw_words:
            phones = speech.random_word(word_rng, int(word_rng.integers(2, 4)))
            words.setdefault("".join(phones).upper(), phones)
        for w, (name, phones) in enumerate(sorted(words.items())):
            for k in range(config.lrw_clips_per_word):
                split = ("train", "train", "train", "train", "val", "test")[k % 6]
                pool = range(n_train) if split == "train" else range(n_train, n_train + n_test)
                ident = pool[(w * 7 + k * 3) % len(pool)]
                stem = root / "lipread_mp4" / name / split / f"{name}_{k + 1:05d}"
                jobs.append(ClipJob(
                    video=str(stem) + ".mp4", audio=None, identity=people[ident], background_variant=k,
                    seed=(seed, ident, w, k, 22), duration=LRW_FRAMES / FPS, word=tuple(phones),
                    lrw_txt=str(stem) + ".txt", motion=config.motion))
    else:  # mead: one actor per identity; male/female prefix from the voice
        view_yaw = {"front": 0.0, "left_30": 0.3, "right_30": -0.3, "left_60": 0.45, "right_60": -0.45,
                    "down": 0.0, "top": 0.0}
        for ident in range(n_train + n_test):
            identity = people[ident]
            actor = f"{'W' if identity.voice_f0 >= 160 else 'M'}{ident + 1:03d}"
            for emotion, levels in MEAD_LEVELS.items():
                for level in levels:
                    for c in range(config.clips_per_video):
                        name = f"{c + 1:03d}"
                        clip_seed = (seed, ident, puppet.EMOTIONS.index(emotion), level, c, 33)
                        for view in config.mead_views:
                            if view not in view_yaw:
                                raise ValueError(f"unknown MEAD view {view!r}; choose from {', '.join(view_yaw)}")
                            jobs.append(ClipJob(
                                video=str(root / actor / "video" / view / emotion / f"level_{level}" / f"{name}.mp4"),
                                audio=str(root / actor / "audio" / emotion / f"level_{level}" / f"{name}.m4a"),
                                identity=identity, background_variant=0, seed=clip_seed,
                                duration=config.duration, emotion=emotion, level=level,
                                yaw_bias=view_yaw[view], motion=config.motion))
    return jobs


def _init_worker() -> None:
    """One BLAS / OpenCV thread per worker process: the workers are the parallelism."""
    import cv2

    cv2.setNumThreads(1)
    threadpool_limits(1)


def _run(job: ClipJob) -> tuple[str, str | None]:
    try:
        render_clip(job)
        return job.video, None
    except Exception as err:  # reported by the caller, never fatal to the corpus
        return job.video, f"{type(err).__name__}: {err}"


def generate(root: str | Path, config: SynthConfig = SynthConfig(), workers: int = 2,
             progress: bool = True) -> dict:
    """Write a SynthTalk corpus under `root`. Resumable: clips whose truth file exists are skipped.

    Returns {'root', 'clips', 'written', 'skipped', 'failed': [(path, reason)]}.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if progress and config.identity_candidates > 1:
        groups = -(-(config.train_identities + config.test_identities) // puppet.IDENTITY_GROUP)
        print(f"synthtalk {config.layout}: choosing {groups} groups of {puppet.IDENTITY_GROUP} identities from "
              f"{config.identity_candidates} draws each (about 70 s per group, once per process)", file=sys.stderr, flush=True)
    jobs = plan_jobs(root, config)
    todo = [j for j in jobs if not Path(j.video).with_name(Path(j.video).stem + ".truth.npz").exists()]
    failed: list[tuple[str, str]] = []
    bar = progress_bar(total=len(todo), desc=f"synthtalk {config.layout}", unit="clip", disable=not progress)
    if workers <= 1:
        _init_worker()
        results = map(_run, todo)
        for video, error in results:
            if error:
                failed.append((video, error))
            bar.update()
    else:
        with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for video, error in pool.imap_unordered(_run, todo, chunksize=1):
                if error:
                    failed.append((video, error))
                bar.update()
    bar.close()
    (root / "synthtalk.json").write_text(__import__("json").dumps(asdict(config), indent=1))
    return {"root": str(root), "clips": len(jobs), "written": len(todo) - len(failed),
            "skipped": len(jobs) - len(todo), "failed": failed}
