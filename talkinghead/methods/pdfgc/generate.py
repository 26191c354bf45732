"""PD-FGC generation: a reference face + driving audio (+ independent pose, eye and emotion sources)
-> talking-head frames / mp4.

`PDFGCGenerator` is a `talkinghead.generation.Generator`: it implements only `synthesize` (model
inputs -> frames); the generation base gives both entry points:

* `generate(checkpoint, reference, audio, out, ...)` (and ``talkinghead generate --method pdfgc``,
  `talkinghead.generation.main` over the registry): files in, an mp4 with the audio out, through
  `Generator.generate_file`. A driving source is a video or a folder of frames (images sorted by
  name, 25 fps), aligned as training data were preprocessed; one shorter than the audio loops (the
  official convention), a longer one is cut. Any audio length works:
  T = round(samples / 640) frames at 25 fps (at least 1).
* `PDFGCGenerator.generate(request)`: the benchmark harness's and training validation's entry
  (`bench.py`): the request's ``pose_source`` / ``eye_source`` / ``emotion_source`` drive the
  three factors (the clip's own frames when self-driven, another clip's when cross-driven).

Factors (each from its own source, independently; the official inference conventions of
`networks.PDFGC.forward`):

* lip: the audio lip code ``net_audio`` x ``lip_scale`` (official 1.5), then the official 3-tap
  Gaussian over time;
* pose (``--pose-source``): the pose code of each source frame, averaged over 3 frames (2 at the
  ends); ``--frontal``: a zero pose code (the canonical, frontal head);
* eyes (``--eye-source``): the eye code of each source frame x ``eye_scale`` (official 1.2);
  ``--no-blink`` zeroes its blink dimensions (0, 1, 4, 5), ``--no-gaze`` its gaze dimensions (2, 3);
* emotion (``--emotion-source``): the emotion code of each source frame x ``emo_scale`` (official
  1.2); ``--neutral``: a zero emotion code.

A factor without a source (and not disabled) takes the reference's own code for every frame (the
reference's pose, eyes and expression), so that the reference alone gives a plausible head; a
disabled factor's code is zero, as the official inference's missing source.

Official checkpoints (a folder with the four official files) also get the official loader crop
(rows 0:192, cols 16:208 of the aligned face, resized to 224; `talkinghead.generation.loader_crop`):
their output covers that crop and is pasted back into the reference frame. The official demo also
drops the first 2 frames of each driving folder to centre the audio window; we keep frame t of a
source for frame t (the clip store's mel windows are already centred on their frame).

Model frames: the networks run at the config's sizes (``image_size`` for G, ``reference_size`` for
E_app, ``motion_input_size`` for E_mot; 224 for the paper configs); frames are resized to them and
the outputs resized back to the reference's size (bicubic). Noise: the generator's fixed noise
buffers (``noise_mode="const"``), so that generation is deterministic and does not flicker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.generation import (Control, Generator, audio_and_length, load_lightning_weights, loader_crop,
                                    num_frames_for, paste_loader_crop)
from talkinghead.methods.pdfgc.networks import BLINK_DIMS, GAZE_DIMS, PDFGC, PDFGCConfig, smooth_lip, smooth_pose

__all__ = ["CONTROLS", "FACTOR_SOURCES", "PDFGCGenerator", "generate", "load_model", "num_frames_for"]

#: the driven factors and the request source that drives each
FACTOR_SOURCES = {"pose": "pose_source", "eye": "eye_source", "emotion": "emotion_source"}
#: the driving signals besides reference + audio
CONTROLS = (
    Control("pose_source", "video", "video whose head pose drives the output (default: the reference's pose)",
            group="pose"),
    Control("frontal", "flag", "zero pose code: a frontal head", default=False, group="pose"),
    Control("eye_source", "video", "video whose blinks and gaze drive the output (default: the reference's eyes)"),
    Control("no_blink", "flag", "zero the blink dimensions of the eye code (eyes open)", default=False),
    Control("no_gaze", "flag", "zero the gaze dimensions of the eye code (gaze ahead)", default=False),
    Control("emotion_source", "video", "video whose expression drives the output (default: the reference's)",
            group="emotion"),
    Control("neutral", "flag", "zero emotion code: a neutral expression", default=False, group="emotion"),
)


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[PDFGC, dict]:
    """A `PDFGC` (eval mode, on `device`) and a description dict from a checkpoint.

    Accepts a Lightning checkpoint of `PDFGCModule` (any stage; the ``model`` hyper-parameter and
    the ``model.*`` weights) or a folder holding the official ``appearance_model.pth``,
    ``motion_model.pth``, ``audio_model.pth``, ``generator_model.pth`` (see `official.load_official`).
    """
    path = Path(checkpoint)
    if path.is_dir():
        from talkinghead.methods.pdfgc.official import load_official

        model = load_official(path)
        return model.to(device).eval(), {"kind": "official", "crop": "loader", "path": str(path)}
    model, info = load_lightning_weights(path, "pdfgc", "PD-FGC", lambda values: PDFGC(PDFGCConfig.from_dict(values)),
                                         ("model.",))
    return model.to(device).eval(), info


class PDFGCGenerator(Generator):
    """PD-FGC: reference face + audio (+ pose, eye and emotion sources) -> talking-head video.

    A PD-FGC model ready to generate (see the module docstring).

    model:      a `PDFGC`.
    fixed:      factors ("pose", "eye", "emotion") that `generate(request)` keeps at the reference's
                own code, ignoring the request's source for them (the bench's ``pdfgc_fixed_*``
                rows: the same model with one factor's driver cut off); the others follow the request.
    smooth:     the official lip / pose smoothing over time.
    batch_size: frames per network call.
    noise_mode: the generator's noise ("const": its fixed buffers).
    crop:       None, or "loader" for the official loader crop (official checkpoints).
    """

    name = "pdfgc"
    controls = CONTROLS
    loop_sources = True

    def __init__(self, model: PDFGC, *, device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
                 description: str = "", fixed: tuple[str, ...] = (), smooth: bool = True, batch_size: int = 16,
                 noise_mode: str = "const", crop: str | None = None):
        if crop not in (None, "loader"):
            raise ValueError(f"crop must be None or 'loader', got {crop!r}")
        unknown = sorted(set(fixed) - set(FACTOR_SOURCES))
        if unknown:
            raise ValueError(f"fixed factors must be among {tuple(FACTOR_SOURCES)}, got {unknown}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(device=device, checkpoint=checkpoint, description=description)
        self.model = model.to(self.device).eval()
        self.fixed = tuple(f for f in FACTOR_SOURCES if f in set(fixed))
        self.smooth = bool(smooth)
        self.batch_size = int(batch_size)
        self.noise_mode = noise_mode
        self.crop = crop

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | torch.device = "cpu", **kwargs) -> "PDFGCGenerator":
        if checkpoint is None:
            raise FileNotFoundError("PD-FGC needs a checkpoint: run `make train METHOD=pdfgc` or pass --checkpoint")
        model, info = load_model(checkpoint, device)
        if info["kind"] == "official":
            description = "PD-FGC official checkpoint (appearance/motion/audio/generator_model.pth)"
        else:
            description = (f"PD-FGC ({info.get('name')}, {info.get('stage')} stage, step {info.get('global_step')}, "
                           f"{model.config.image_size} px)")
        kwargs.setdefault("crop", info["crop"])
        return cls(model, device=device, checkpoint=checkpoint, description=description, **kwargs)

    # ----------------------------------------------------------------------------- images
    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    def prepare(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """Aligned frames (N, 3, H, W) in [0, 1] -> the model's input (N, 3, size, size) in [-1, 1]
        (the official loader crop first, for official checkpoints)."""
        x = images.to(self.device, torch.float32)
        if self.crop == "loader":
            x = loader_crop(x)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
        return x * 2.0 - 1.0

    def restore(self, images: torch.Tensor, size: tuple[int, int], background: torch.Tensor) -> torch.Tensor:
        """Model outputs (N, 3, S, S) in (-1, 1) -> frames (N, 3, H, W) in [0, 1] (pasted back onto
        `background` (3, H, W) for the loader crop; bicubic resize)."""
        x = ((images.float() + 1.0) * 0.5).clamp(0.0, 1.0)
        if self.crop == "loader":
            x = paste_loader_crop(x, background)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False,
                              antialias=x.shape[-1] > size[-1])
        return x.clamp(0.0, 1.0)

    # ----------------------------------------------------------------------------- codes
    def _codes(self, frames: torch.Tensor, t_total: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pose, eye, emo) codes (T, *) of driving frames (T', 3, H, W): frame t % T' drives frame t
        (a short source loops, the official convention)."""
        m = self.model
        size = m.config.motion_input_size
        poses, eyes, emos = [], [], []
        for start in range(0, t_total, self.batch_size):
            idx = torch.arange(start, min(t_total, start + self.batch_size)) % len(frames)
            codes = m.motion_codes(self.prepare(frames[idx], size))
            poses.append(codes.pose)
            eyes.append(codes.eye)
            emos.append(codes.emo)
        return torch.cat(poses), torch.cat(eyes), torch.cat(emos)

    # ----------------------------------------------------------------------------- generation
    @torch.no_grad()
    def synthesize(self, reference: torch.Tensor, audio: torch.Tensor | np.ndarray, num_frames: int | None = None,
                   pose_source: torch.Tensor | None = None, eye_source: torch.Tensor | None = None,
                   emotion_source: torch.Tensor | None = None, *, frontal: bool = False, no_blink: bool = False,
                   no_gaze: bool = False, neutral: bool = False) -> Iterator[torch.Tensor]:
        """Yield generated frames in chunks of (n, 3, H, W), in [0, 1], on the CPU.

        reference: (3, H, W) aligned face in [0, 1]; audio: (N,) 16 kHz in [-1, 1];
        num_frames: T (None: `num_frames_for(N)`); pose_source / eye_source / emotion_source:
        (T', 3, H, W) aligned frames (frame t % T' drives frame t), None = the reference's
        code; frontal / neutral: zero pose / emotion code; no_blink / no_gaze: zero those eye
        dimensions.
        """
        from talkinghead.data.audio import mel_spectrogram, mel_windows

        audio, t_total = audio_and_length(audio, num_frames)
        size = tuple(reference.shape[-2:])
        m, cfg = self.model, self.model.config

        app = m.appearance(self.prepare(reference[None], cfg.reference_size))
        ref_codes = m.motion_codes(self.prepare(reference[None], cfg.motion_input_size))

        encoded: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

        def driven(source: torch.Tensor | None, pick: int) -> torch.Tensor | None:
            if source is None or len(source) == 0:
                return None
            if id(source) not in encoded:  # one source driving several factors is encoded once
                encoded[id(source)] = self._codes(source, t_total)
            return encoded[id(source)][pick]

        # pose: the source's codes (smoothed), the reference's, or zero
        pose_codes = None if frontal else driven(pose_source, 0)
        if pose_codes is not None:
            if self.smooth:
                pose_codes = smooth_pose(pose_codes)
        elif frontal:
            pose_codes = torch.zeros(t_total, cfg.pose_dim, device=self.device)
        else:
            pose_codes = ref_codes.pose.expand(t_total, -1)
        # eyes: the source's codes or the reference's, x eye_scale; blink / gaze dims zeroed on request
        eye_codes = driven(eye_source, 1)
        eye_codes = (ref_codes.eye.expand(t_total, -1) if eye_codes is None else eye_codes) * cfg.eye_scale
        if no_blink or no_gaze:
            eye_codes = eye_codes.clone()
            if no_blink:
                eye_codes[:, list(BLINK_DIMS)] = 0.0
            if no_gaze:
                eye_codes[:, list(GAZE_DIMS)] = 0.0
        # emotion: the source's codes or the reference's, x emo_scale; zero when neutral
        if neutral:
            emo_codes = torch.zeros(t_total, cfg.emo_dim, device=self.device)
        else:
            emo_codes = driven(emotion_source, 2)
            emo_codes = (ref_codes.emo.expand(t_total, -1) if emo_codes is None else emo_codes) * cfg.emo_scale
        # lip: the audio lip code x lip_scale, smoothed over the whole clip
        mel = mel_windows(mel_spectrogram(audio), t_total)  # (T, 1, 80, 20)
        lip = torch.cat([m.lip_code(mel[s:s + self.batch_size].to(self.device), cfg.lip_scale)
                         for s in range(0, t_total, self.batch_size)])
        if self.smooth:
            lip = smooth_lip(lip)

        for start in range(0, t_total, self.batch_size):
            stop = min(t_total, start + self.batch_size)
            n = stop - start
            out = m.generate(app.feature.expand(n, -1), app.feature_map.expand(n, -1, -1, -1), lip[start:stop],
                             emo_codes[start:stop], eye_codes[start:stop], pose_codes[start:stop],
                             noise_mode=self.noise_mode)
            yield self.restore(out, size, reference).cpu()

    def request_sources(self, request) -> dict:
        """`generate(request)`'s controls: the request's pose / eye / emotion sources, except those of
        the `fixed` factors (None: the reference's code)."""
        sources = super().request_sources(request)
        for factor in self.fixed:
            sources[FACTOR_SOURCES[factor]] = None
        return sources


# ---------------------------------------------------------------------------------------------
# files in, mp4 out
# ---------------------------------------------------------------------------------------------
def generate(checkpoint: str | Path, reference: str | Path, audio: str | Path, out: str | Path, *,
             pose_source: str | Path | None = None, eye_source: str | Path | None = None,
             emotion_source: str | Path | None = None, frontal: bool = False, no_blink: bool = False,
             no_gaze: bool = False, neutral: bool = False, device: str = "cpu", batch_size: int = 16) -> Path:
    """Write `out` (mp4, 25 fps, 224 px aligned face, with the driving audio); returns its path.

    checkpoint: a PD-FGC Lightning checkpoint or a folder with the official files.
    reference:  image (jpg/png/...) or video (its first frame) of the identity.
    audio:      any audio or video file ffmpeg reads (resampled to 16 kHz mono).
    pose_source / frontal: at most one; eye_source (+ no_blink / no_gaze); emotion_source / neutral:
    at most one. A factor without a source follows the reference.
    """
    values = {"pose_source": pose_source, "eye_source": eye_source, "emotion_source": emotion_source,
              "frontal": bool(frontal), "no_blink": bool(no_blink), "no_gaze": bool(no_gaze), "neutral": bool(neutral)}
    PDFGCGenerator.check_inputs(reference, audio, **values)
    generator = PDFGCGenerator.from_checkpoint(checkpoint, device, batch_size=batch_size)
    return generator.generate_file(reference, audio, out, **values)
