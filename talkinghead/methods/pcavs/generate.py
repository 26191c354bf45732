"""PC-AVS generation: a reference face + driving audio (+ a pose source) -> talking-head frames / mp4.

`PCAVSGenerator` is a `talkinghead.generation.Generator`: it implements only `synthesize` (model
inputs -> frames); the generation base gives both entry points:

* `generate(checkpoint, reference, audio, out, ...)` (and ``talkinghead generate --method pcavs``,
  `talkinghead.generation.main` over the registry): files in, an mp4 with the audio out, through
  `Generator.generate_file`. The
  reference image (or a video's first frame) and the pose-source video are aligned exactly as
  training data were preprocessed (`talkinghead.generation.read_reference` /
  `read_driving_video`: `talkinghead.data.preprocess.align_frames`). Any audio length works: T =
  round(samples / 640) frames at 25 fps (at least 1), generated in chunks and streamed to the
  encoder; a pose source shorter than the audio holds its last frame, a longer one is cut.
* `PCAVSGenerator.generate(request)`: the benchmark harness's and training validation's entry
  (`bench.py`); requests carry already aligned 224 px frames (the clip store's).

Pose modes: ``source`` (pose code of each pose-source frame: ``--pose-source``), ``fixed``
(the reference's own pose code for every frame: ``--fixed-pose``, the official "reference pose"
output) and ``frontal`` (a zero pose code: ``--frontal``, PC-AVS's frontalisation).

Model frames: the networks run at the config's ``image_size`` (224 for the paper configs, 64 for
the tiny SynthTalk config); frames are resized to it and the outputs resized back to the input
size (bilinear). The official checkpoints additionally use the official loader crop (rows
0:192, cols 16:208 of the aligned face, resized to 224): their output covers that crop and is
pasted back into the reference frame (`official.py` sets ``crop="loader"``). Noise: the
generator's fixed noise buffers (``noise_mode="const"``) so that generation is deterministic
and does not flicker (the official inference draws fresh noise per frame).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.generation import (Control, Generator, audio_and_length, load_lightning_weights, loader_crop,
                                    num_frames_for, paste_loader_crop)
from talkinghead.methods.pcavs.networks import PCAVS, PCAVSConfig

__all__ = ["CONTROLS", "POSE_MODES", "PCAVSGenerator", "generate", "load_model", "num_frames_for"]

POSE_MODES = ("source", "fixed", "frontal")
#: the driving signals besides reference + audio (at most one: they all decide the pose)
CONTROLS = (
    Control("pose_source", "video", "video whose head pose drives the output", group="pose"),
    Control("fixed_pose", "flag", "keep the reference's pose (default)", default=False, group="pose"),
    Control("frontal", "flag", "zero pose code: a frontal face", default=False, group="pose"),
)


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[PCAVS, dict]:
    """A `PCAVS` (eval mode, on `device`) and a description dict from a checkpoint.

    Accepts a Lightning checkpoint of `PCAVSModule` (any stage; the ``model`` hyper-parameter and
    the ``model_ema.*`` weights when the run kept a moving average, else ``model.*``) or a folder
    holding the official ``latest_net_{G,V,E,A_sync}.pth`` (see `official.load_official`).
    """
    path = Path(checkpoint)
    if path.is_dir():
        from talkinghead.methods.pcavs.official import load_official

        model = load_official(path)
        return model.to(device).eval(), {"kind": "official", "crop": "loader", "path": str(path)}
    model, info = load_lightning_weights(path, "pcavs", "PC-AVS", lambda values: PCAVS(PCAVSConfig.from_dict(values)),
                                         ("model_ema.", "model."))
    return model.to(device).eval(), info


class PCAVSGenerator(Generator):
    """PC-AVS: reference face + audio (+ a pose source) -> talking-head video.

    A PC-AVS model ready to generate (see the module docstring).

    model:       a `PCAVS`.
    crop:        None, or "loader" for the official loader crop (official checkpoints).
    audio_scale: factor on the audio content feature (None: ``model.config.audio_scale``).
    pose_mode:   what `generate(request)` uses: "source" (the request's pose_source; fixed when
                 absent), "fixed" or "frontal".
    batch_size:  frames per generator call.
    """

    name = "pcavs"
    controls = CONTROLS

    def __init__(self, model: PCAVS, *, device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
                 description: str = "", crop: str | None = None, audio_scale: float | None = None,
                 pose_mode: str = "source", batch_size: int = 16, noise_mode: str = "const"):
        if crop not in (None, "loader"):
            raise ValueError(f"crop must be None or 'loader', got {crop!r}")
        if pose_mode not in POSE_MODES:
            raise ValueError(f"pose_mode must be one of {POSE_MODES}, got {pose_mode!r}")
        super().__init__(device=device, checkpoint=checkpoint, description=description)
        self.model = model.to(self.device).eval()
        self.crop = crop
        self.audio_scale = audio_scale
        self.pose_mode = pose_mode
        self.batch_size = int(batch_size)
        self.noise_mode = noise_mode

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | torch.device = "cpu", **kwargs) -> "PCAVSGenerator":
        model, info = load_model(checkpoint, device)
        if info["kind"] == "official":
            description = "PC-AVS official checkpoint (latest_net_*.pth)"
        else:
            description = (f"PC-AVS ({info.get('name')}, {info.get('stage')} stage, step {info.get('global_step')}, "
                           f"{model.config.image_size} px)")
        kwargs.setdefault("crop", info["crop"])
        return cls(model, device=device, checkpoint=checkpoint, description=description, **kwargs)

    # ----------------------------------------------------------------------------- images
    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    def prepare(self, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Aligned frames (N, 3, H, W) in [0, 1] -> the model's input (N, 3, S, S) in [-1, 1]
        (S = `size`, default the model's ``image_size``)."""
        size = int(size or self.image_size)
        x = images.to(self.device, torch.float32)
        if self.crop == "loader":
            x = loader_crop(x)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
        return x * 2.0 - 1.0

    def restore(self, images: torch.Tensor, size: tuple[int, int], background: torch.Tensor) -> torch.Tensor:
        """Model outputs (N, 3, S, S) in (-1, 1) -> frames (N, 3, H, W) in [0, 1] (un-cropped onto
        `background` (3, H, W) for the loader crop; resized to H x W bicubically)."""
        x = ((images.float() + 1.0) * 0.5).clamp(0.0, 1.0)
        if self.crop == "loader":
            x = paste_loader_crop(x, background)
        if tuple(x.shape[-2:]) != tuple(size):  # bicubic: sharper than bilinear, so landmarks sit closer
            x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False,
                              antialias=x.shape[-1] > size[-1])
        return x.clamp(0.0, 1.0)

    # ----------------------------------------------------------------------------- generation
    @torch.no_grad()
    def synthesize(self, reference: torch.Tensor, audio: torch.Tensor | np.ndarray, num_frames: int | None = None,
                   pose_source: torch.Tensor | None = None, pose: str | None = None, *, fixed_pose: bool = False,
                   frontal: bool = False) -> Iterator[torch.Tensor]:
        """Yield generated frames in chunks of (n, 3, H, W), in [0, 1], on the CPU.

        reference: (3, H, W) aligned face in [0, 1]; audio: (N,) 16 kHz in [-1, 1];
        num_frames: T (None: `num_frames_for(N)`); pose_source: (T', 3, H, W) aligned frames
        (frame min(t, T'-1) drives frame t); pose: "source" | "fixed" | "frontal" ("source" without
        a pose_source is "fixed"); None: from the controls' flags (`frontal`, `fixed_pose`, else
        "source").
        """
        from talkinghead.data.audio import mel_spectrogram, mel_windows

        if pose is None:
            pose = "frontal" if frontal else "fixed" if fixed_pose else "source"
        if pose not in POSE_MODES:
            raise ValueError(f"pose must be one of {POSE_MODES}, got {pose!r}")
        audio, t_total = audio_and_length(audio, num_frames)
        size = tuple(reference.shape[-2:])
        m = self.model
        scale = m.config.audio_scale if self.audio_scale is None else float(self.audio_scale)
        ident = m.netV(self.prepare(reference[None], m.config.reference_size))
        if pose == "frontal":
            fixed = torch.zeros(1, m.config.pose_dim, device=self.device)
        else:
            fixed = m.pose_code(self.prepare(reference[None], m.config.content_input_size))
        use_source = pose == "source" and pose_source is not None and len(pose_source) > 0
        mel = mel_windows(mel_spectrogram(audio), t_total)  # (T, 1, 80, 20)
        for start in range(0, t_total, self.batch_size):
            stop = min(t_total, start + self.batch_size)
            n = stop - start
            if use_source:
                idx = torch.clamp(torch.arange(start, stop), max=len(pose_source) - 1)
                codes = m.pose_code(self.prepare(pose_source[idx], m.config.content_input_size))
            else:
                codes = fixed.expand(n, -1)
            content = m.audio_content(mel[start:stop].to(self.device))
            mouth = m.mouth_style(content, scale)
            out = m.render(ident.feature.expand(n, -1), ident.feature_map.expand(n, -1, -1, -1), mouth, codes,
                           noise_mode=self.noise_mode)
            yield self.restore(out, size, reference).cpu()

    def request_sources(self, request) -> dict:
        """`generate(request)`'s controls by `pose_mode`: the request's pose source ("source"),
        the reference's pose ("fixed") or a frontal face ("frontal")."""
        if self.pose_mode == "source":
            return {"pose_source": request.pose_source, "fixed_pose": False, "frontal": False}
        return {"pose_source": None, "fixed_pose": self.pose_mode == "fixed", "frontal": self.pose_mode == "frontal"}


# ---------------------------------------------------------------------------------------------
# files in, mp4 out
# ---------------------------------------------------------------------------------------------
def generate(checkpoint: str | Path, reference: str | Path, audio: str | Path, out: str | Path, *,
             pose_source: str | Path | None = None, fixed_pose: bool = False, frontal: bool = False,
             device: str = "cpu", batch_size: int = 16, audio_scale: float | None = None) -> Path:
    """Write `out` (mp4, 25 fps, 224 px aligned face, with the driving audio); returns its path.

    checkpoint: a PC-AVS Lightning checkpoint or a folder with the official files.
    reference:  image (jpg/png/...) or video (its first frame) of the identity.
    audio:      any audio or video file ffmpeg reads (resampled to 16 kHz mono).
    pose_source / fixed_pose / frontal: at most one; none given = fixed pose (the reference's).
    """
    PCAVSGenerator.check_inputs(reference, audio, pose_source=pose_source, fixed_pose=bool(fixed_pose),
                                frontal=bool(frontal))
    generator = PCAVSGenerator.from_checkpoint(checkpoint, device, batch_size=batch_size, audio_scale=audio_scale)
    return generator.generate_file(reference, audio, out, pose_source=pose_source, fixed_pose=bool(fixed_pose),
                                   frontal=bool(frontal))
