"""SynthTalk speech: formant-synthesised syllables and the mouth shapes (visemes) they imply.

A voice is a glottal pulse train (fundamental f0 with intonation and jitter) through a cascade of
formant resonators for vowels; consonants are closures (silence, bursts), frication noise or
nasal murmur. Each phone has a viseme: (open, width, round) in [0, 1], so the mouth follows the
audio with realistic timing: lips close for /p b m/, open wide for /a/, round for /o u/.

Conventions: 16 kHz mono float32 audio in [-1, 1]; times in seconds; per-frame mouth parameters
at 25 fps, sampled at each frame's centre time (f + 0.5) / 25, smoothed over +-2 frames with a
symmetric (zero-lag) window for coarticulation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

SAMPLE_RATE = 16_000
FPS = 25

# vowel: (F1, F2, F3) Hz (adult averages), viseme (open, width, round)
VOWELS = {
    "a": ((730, 1090, 2440), (1.00, 0.55, 0.0)),
    "e": ((530, 1840, 2480), (0.55, 0.85, 0.0)),
    "i": ((300, 2250, 3000), (0.22, 1.00, 0.0)),
    "o": ((570, 850, 2400), (0.65, 0.15, 0.9)),
    "u": ((320, 870, 2250), (0.25, 0.00, 1.0)),
}
# consonant: (kind, viseme (open, width, round))
CONSONANTS = {
    "p": ("stop", (0.0, 0.45, 0.0)),
    "b": ("stop", (0.0, 0.45, 0.0)),
    "m": ("nasal", (0.0, 0.45, 0.0)),
    "f": ("fricative_low", (0.08, 0.50, 0.0)),
    "v": ("fricative_low", (0.08, 0.50, 0.0)),
    "s": ("fricative_high", (0.10, 0.80, 0.0)),
    "t": ("stop", (0.18, 0.60, 0.0)),
    "d": ("stop", (0.18, 0.60, 0.0)),
    "n": ("nasal", (0.18, 0.60, 0.0)),
    "k": ("stop", (0.25, 0.55, 0.0)),
    "l": ("liquid", (0.30, 0.55, 0.0)),
}
SILENCE_VISEME = (0.0, 0.45, 0.0)
PHONES = ["sil", *CONSONANTS, *VOWELS]  # index = phone id in the saved timeline


@dataclass(frozen=True)
class Voice:
    """Speaker-specific voice parameters."""

    f0: float = 140.0  # mean fundamental, Hz
    formant_scale: float = 1.0  # vocal tract length factor (formants multiplied)
    rate: float = 4.5  # syllables per second
    breathiness: float = 0.05  # aspiration noise level


@dataclass
class Utterance:
    """Synthesised speech and its phone timeline."""

    audio: np.ndarray  # (N,) float32, 16 kHz
    phones: list[tuple[str, float, float]]  # (phone, start s, end s), contiguous, covering the audio

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def random_word(rng: np.random.Generator, syllables: int) -> list[str]:
    """A pseudo-word as a list of phones: (C)V syllables with an optional final consonant."""
    cons, vows = list(CONSONANTS), list(VOWELS)
    phones: list[str] = []
    for _ in range(syllables):
        if rng.random() < 0.85:
            phones.append(cons[rng.integers(len(cons))])
        phones.append(vows[rng.integers(len(vows))])
    if rng.random() < 0.3:
        phones.append(cons[rng.integers(len(cons))])
    return phones


def plan_utterance(rng: np.random.Generator, duration: float, voice: Voice,
                   words: list[list[str]] | None = None, lead: float | None = None) -> list[tuple[str, float]]:
    """Phone durations for speech filling `duration` seconds: words separated by short pauses.

    `words` fixes the words to say (else random words); `lead` the silence before the first word.
    Returns [(phone, seconds)], summing to exactly `duration`.
    """
    syllable = 1.0 / voice.rate
    plan: list[tuple[str, float]] = [("sil", lead if lead is not None else rng.uniform(0.05, 0.25))]
    t = plan[0][1]
    word_iter = iter(words) if words is not None else None
    while True:
        word = next(word_iter, None) if word_iter is not None else random_word(rng, int(rng.integers(1, 4)))
        if word is None:
            break
        for ph in word:
            base = syllable * (0.62 if ph in VOWELS else 0.38)
            d = base * rng.uniform(0.75, 1.3)
            plan.append((ph, d))
            t += d
        pause = rng.uniform(0.06, 0.3) if rng.random() < 0.6 else rng.uniform(0.01, 0.04)
        plan.append(("sil", pause))
        t += pause
        if word_iter is None and t >= duration:
            break
    # fit to the requested length: trim or pad with silence at the end
    out, t = [], 0.0
    for ph, d in plan:
        if t + d >= duration:
            out.append((ph, duration - t))
            t = duration
            break
        out.append((ph, d))
        t += d
    if t < duration:
        out.append(("sil", duration - t))
    return [(ph, d) for ph, d in out if d > 1e-4]


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    """Second-order (Klatt) resonator with unit gain at DC."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    c = -(r**2)
    b = 2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE)
    a = 1 - b - c
    return lfilter([a], [1, -b, -c], x)


def _glottal_source(n: int, f0: np.ndarray, rng: np.random.Generator, breathiness: float) -> np.ndarray:
    """Pulse train with per-sample f0 (Hz), spectral tilt, plus aspiration noise."""
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # 1 at each period start
    src = lfilter([1.0], [1, -0.97], pulses)  # -6 dB/oct tilt (glottal flow derivative-ish)
    src = src - lfilter([1.0], [1, -0.995], src) * 0.005
    return src + breathiness * rng.standard_normal(n)


def synthesize(plan: list[tuple[str, float]], voice: Voice, rng: np.random.Generator) -> Utterance:
    """Render a phone plan to audio. Deterministic given `rng`'s state."""
    phones, t = [], 0.0
    for ph, d in plan:
        phones.append((ph, t, t + d))
        t += d
    n = int(round(t * SAMPLE_RATE))
    time = np.arange(n) / SAMPLE_RATE
    # intonation: slow declination + random wobble; 1.5% jitter
    f0 = voice.f0 * (1.1 - 0.2 * time / max(t, 1e-3)) * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * time
                                                                          + rng.uniform(0, 6.28)))
    f0 *= 1 + 0.015 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))
    source = _glottal_source(n, f0, rng, voice.breathiness)
    audio = np.zeros(n)
    fade = int(0.012 * SAMPLE_RATE)
    for ph, start, end in phones:
        a, b = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
        if b <= a or ph == "sil":
            continue
        seg_len = b - a
        if ph in VOWELS:
            formants = np.array(VOWELS[ph][0]) * voice.formant_scale
            seg = source[a:b]
            out = np.zeros(seg_len)
            for freq, bw, gain in zip(formants, (80, 100, 140), (1.0, 0.6, 0.3)):
                out += gain * _resonator(seg, freq, bw)
            seg = out * 0.9
        else:
            kind = CONSONANTS[ph][0]
            noise = rng.standard_normal(seg_len)
            if kind == "stop":  # closure then a short burst at the end
                seg = np.zeros(seg_len)
                burst = min(seg_len, int(0.015 * SAMPLE_RATE))
                seg[-burst:] = 0.3 * _resonator(noise[-burst:], 1500 + 1500 * rng.random(), 1500)
            elif kind == "nasal":
                seg = 0.5 * _resonator(source[a:b], 250, 100)
            elif kind == "fricative_high":
                seg = 0.25 * (noise - _resonator(noise, 3000, 3000))  # high-passed hiss
            elif kind == "fricative_low":
                seg = 0.12 * _resonator(noise, 1800, 2500)
            else:  # liquid
                seg = 0.5 * (_resonator(source[a:b], 350, 100) + 0.3 * _resonator(source[a:b], 1200, 150))
        env = np.ones(seg_len)
        k = min(fade, seg_len // 2)
        if k > 0:
            ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
            env[:k], env[-k:] = ramp, ramp[::-1]
        audio[a:b] += seg * env
    peak = np.abs(audio).max()
    if peak > 0:
        audio *= 0.7 / peak
    return Utterance(audio=audio.astype(np.float32), phones=phones)


def phone_viseme(phone: str) -> tuple[float, float, float]:
    if phone in VOWELS:
        return VOWELS[phone][1]
    if phone in CONSONANTS:
        return CONSONANTS[phone][1]
    return SILENCE_VISEME


def mouth_track(phones: list[tuple[str, float, float]], num_frames: int, fps: int = FPS) -> np.ndarray:
    """Per-frame mouth parameters (num_frames, 3) = (open, width, round) in [0, 1].

    Sampled at 1 ms resolution from the phone timeline, box-averaged over each frame's 40 ms,
    then smoothed with a symmetric [1, 4, 6, 4, 1]/16 window (coarticulation, zero lag).
    """
    ms = np.arange(int(np.ceil(num_frames * 1000 / fps))) / 1000.0 + 0.0005
    track = np.tile(np.array(SILENCE_VISEME), (len(ms), 1))
    for ph, start, end in phones:
        sel = (ms >= start) & (ms < end)
        track[sel] = phone_viseme(ph)
    per_frame = track[: num_frames * 40].reshape(num_frames, 40, 3).mean(1)
    kernel = np.array([1, 4, 6, 4, 1], dtype=float) / 16
    padded = np.pad(per_frame, ((2, 2), (0, 0)), mode="edge")
    smoothed = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(3)], axis=1)
    return smoothed.astype(np.float32)


def phone_ids(phones: list[tuple[str, float, float]]) -> np.ndarray:
    """Phone names -> integer ids (index into PHONES)."""
    return np.array([PHONES.index(p) for p, _, _ in phones], dtype=np.int16)
