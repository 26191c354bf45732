"""CSIM: identity preservation, the cosine similarity of face-recognition embeddings.

For each clip: the embedding of the identity reference image and of every generated frame; the
clip's score is the mean cosine similarity between the reference's embedding and the frames'
(higher is better, 1 = same embedding); clips are averaged.

Embeddings (pluggable, `FaceEmbedding`; the table shows `CSIM.embedding_name`):

* ``"dlib"`` (default, offline): dlib's ResNet 128-d face descriptor
  (``dlib_face_recognition_resnet_model_v1.dat``) on the 150-px face chip that dlib cuts with its
  5-point shape predictor (padding 0.25), after dlib's HOG face detector (upsample 1, largest
  face). The ResNet runs in torch (`talkinghead.nn.dlib_resnet`, the same weights read from dlib's
  file, equal outputs to float precision), batched: the descriptor was 56 % of a bench run's
  scoring when dlib computed it one frame at a time. dlib's own threshold for "same person" is a Euclidean distance of 0.6 between these
  unit-length vectors, i.e. a cosine similarity of about 0.82.
* ``"arcface"``: insightface's ArcFace IResNet-100 (``arcface_r100``, ``ms1mv3_arcface_r100``
  backbone, user-supplied weights): faces aligned to insightface's 112 x 112 five-point template
  (eye centres, nose tip and mouth corners taken from the dlib-68 landmarks of
  `talkinghead.data.faces`), RGB normalised to [-1, 1], 512-d embedding. This is what papers
  report (Rhythmic Head's CSIM); dlib's numbers are not comparable with theirs.
* ``"auto"``: ArcFace when its weights are on this machine, else dlib.

Frames where no face is found are skipped and counted (``skipped_frames``); a clip whose
reference shows no face, or with no usable frame, is skipped and counted (``skipped_clips``).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from talkinghead import weights
from talkinghead.data.faces import DlibFaceDescriptor, map_frames
from talkinghead.metrics.base import ClipMetric, register_metric
from talkinghead.metrics.image import frames_to_uint8

__all__ = [
    "ARCFACE_TEMPLATE",
    "ArcFaceEmbedding",
    "CSIM",
    "DlibFaceEmbedding",
    "FaceEmbedding",
    "IResNet",
    "build_embedding",
    "iresnet100",
]


class FaceEmbedding(Protocol):
    """Maps (N, H, W, 3) uint8 RGB images to (N, D) float32 embeddings (NaN rows where no face is
    found) and a found mask (N,)."""

    name: str

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


# ---------------------------------------------------------------------------------------------
# dlib's 128-d descriptor
# ---------------------------------------------------------------------------------------------
class DlibFaceEmbedding:
    """dlib HOG detector -> 5-point shape predictor -> 150 px face chip -> ResNet 128-d descriptor
    (the chips of `talkinghead.data.faces.DlibFaceDescriptor`).

    `network`: "torch" (default) runs dlib's ResNet as `talkinghead.nn.dlib_resnet.DlibFaceResNet`,
    read from the same ``.dat`` file, batched over the frames with torch's threads (about 10x
    faster than dlib's own CPU code, which also holds the GIL; equal descriptors to float
    precision); "dlib" calls ``dlib.face_recognition_model_v1`` frame by frame. Detection, shape
    and chip run in torch.get_num_threads() threads (`map_frames`: dlib's detector releases the
    GIL); the faces found do not depend on the thread count (the descriptors' last float bits
    may, as any torch result)."""

    name = "dlib-resnet128"
    dim = 128

    def __init__(self, upsample: int = 1, padding: float = 0.25, network: str = "torch", batch_size: int = 32):
        if network not in ("torch", "dlib"):
            raise ValueError(f"network must be 'torch' or 'dlib', got {network!r}")
        self.network = network
        self.batch_size = batch_size
        self._faces = DlibFaceDescriptor(upsample, padding)
        if network == "torch":
            from talkinghead.nn.dlib_resnet import DlibFaceResNet

            self._resnet = DlibFaceResNet.from_dlib_file(weights.resolve("dlib_face_descriptor"))

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.full((len(images), self.dim), np.nan, dtype=np.float32)
        found = np.zeros(len(images), dtype=bool)
        if self.network == "dlib":
            for i, image in enumerate(images):
                descriptor = self._faces(image)
                if descriptor is not None:
                    out[i], found[i] = descriptor, True
            return out, found
        chips = map_frames(self._faces.chip, images)
        index = [i for i, chip in enumerate(chips) if chip is not None]
        with torch.inference_mode():
            for start in range(0, len(index), self.batch_size):
                part = index[start : start + self.batch_size]
                x = torch.from_numpy(np.stack([chips[i] for i in part])).permute(0, 3, 1, 2).float()
                out[part] = self._resnet(x).numpy()
        found[index] = True
        return out, found


# ---------------------------------------------------------------------------------------------
# ArcFace IResNet-100 (insightface arcface_torch parameter names)
# ---------------------------------------------------------------------------------------------
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """insightface's pre-activation block: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, + shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """insightface's IResNet for 112 x 112 faces -> `num_features`-d embedding (state-dict names as
    in ``arcface_torch/backbones/iresnet.py``: conv1, bn1, prelu, layer1-4, bn2, fc, features)."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 13, 30, 3), num_features: int = 512, widths=(64, 128, 256, 512)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        inplanes = widths[0]
        for index, (blocks, planes) in enumerate(zip(layers, widths), start=1):
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=2, bias=False), nn.BatchNorm2d(planes, eps=1e-5)
            )
            stage = [IBasicBlock(inplanes, planes, 2, downsample)] + [IBasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(inplanes * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet100(num_features: int = 512) -> IResNet:
    """IResNet-100 (blocks 3, 13, 30, 3), the ArcFace backbone of insightface's model zoo."""
    return IResNet((3, 13, 30, 3), num_features)


#: insightface's five-point template for 112 x 112 ArcFace crops: left eye, right eye, nose tip,
#: left and right mouth corners (image left / right).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """insightface's five points from dlib-68 landmarks: eye centres (36-41, 42-47), nose tip (30),
    mouth corners (48, 54)."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


class ArcFaceEmbedding:
    """ArcFace IResNet-100: dlib-68 landmarks -> five points -> 112 px similarity-aligned crop ->
    (x / 127.5 - 1) RGB -> 512-d embedding. `network` defaults to ``iresnet100`` loaded from the
    ``arcface_r100`` weights (MissingWeightsError when absent)."""

    name = "arcface-r100"

    def __init__(self, network: nn.Module | None = None, landmark_backend: str = "dlib", device: str | torch.device = "cpu", batch_size: int = 32):
        if network is None:
            state = weights.load("arcface_r100")
            network = iresnet100()
            network.load_state_dict(state, strict=True)
        self.network = network.eval().to(device)
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.landmark_backend = landmark_backend
        self.device = torch.device(device)
        self.batch_size = batch_size

    @staticmethod
    def align(image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """The 112 x 112 ArcFace crop of `image` (uint8 RGB) given its dlib-68 landmarks: the
        least-squares similarity (rotation, scale, translation; insightface uses skimage's
        Umeyama estimate, which is the same transform) from the five points to the template."""
        import cv2

        src = five_points(landmarks68)
        src_mean, dst_mean = src.mean(0), ARCFACE_TEMPLATE.mean(0)
        s, d = src - src_mean, ARCFACE_TEMPLATE - dst_mean
        norm = (s**2).sum()
        a = (s * d).sum() / norm
        b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / norm
        rotation = np.array([[a, -b], [b, a]])
        matrix = np.hstack([rotation, (dst_mean - rotation @ src_mean)[:, None]])
        return cv2.warpAffine(np.ascontiguousarray(image), matrix, (112, 112), borderValue=0)

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from talkinghead.data.faces import detect_landmarks

        landmarks, found = detect_landmarks(images, self.landmark_backend)
        index = np.flatnonzero(found)
        chunks = []
        for start in range(0, len(index), self.batch_size):
            crops = np.stack([self.align(images[i], landmarks[i]) for i in index[start : start + self.batch_size]])
            x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(self.device)
            chunks.append(self.network(x).float().cpu().numpy())
        dim = chunks[0].shape[1] if chunks else 512
        out = np.full((len(images), dim), np.nan, dtype=np.float32)
        if chunks:
            out[index] = np.concatenate(chunks)
        return out, found


def build_embedding(name: str = "auto", dlib_network: str = "torch", **kwargs) -> FaceEmbedding:
    """The face embedding `name`: "dlib", "arcface" or "auto" (ArcFace if its weights exist);
    `dlib_network` is `DlibFaceEmbedding`'s ``network`` ("torch" or "dlib")."""
    if name == "auto":
        name = "arcface" if weights.is_available("arcface_r100") else "dlib"
    if name == "dlib":
        return DlibFaceEmbedding(network=dlib_network, **kwargs)
    if name == "arcface":
        return ArcFaceEmbedding(**kwargs)
    raise ValueError(f"unknown face embedding {name!r}; choose 'dlib', 'arcface' or 'auto'")


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) `a` with (D,) or (N, D) `b`, in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@register_metric("csim")
class CSIM(ClipMetric):
    """Mean cosine similarity between the reference image's face embedding and each generated
    frame's (higher is better), averaged over frames, then clips. See the module docstring.

    `embedding`: "auto" (default: ArcFace if its weights exist, else dlib), "dlib", "arcface", or
    a `FaceEmbedding` instance; `dlib_network`: where dlib's ResNet runs, "torch" (default) or
    "dlib" (its own code, frame by frame: the same descriptors, slower). `embedding_name` names it for the results table.
    """

    inputs = ("fake", "reference")
    columns = {"CSIM": True}

    def __init__(self, embedding: str | FaceEmbedding = "auto", dlib_network: str = "torch", **kwargs):
        super().__init__(**kwargs)
        self.embedding = build_embedding(embedding, dlib_network) if isinstance(embedding, str) else embedding
        self.embedding_name = self.embedding.name
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("measured_frames", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped_frames", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped_clips", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, fake: Tensor, reference: Tensor) -> None:
        reference_image = frames_to_uint8(reference)[:1]
        frames = frames_to_uint8(fake)
        ref_embedding, ref_found = self.embedding(reference_image)
        if not ref_found[0]:
            self.skipped_clips += 1
            self.skipped_frames += len(frames)
            return
        embeddings, found = self.embedding(frames)
        self.skipped_frames += int((~found).sum())
        if not found.any():
            self.skipped_clips += 1
            return
        similarity = cosine_similarity(embeddings[found], ref_embedding[0])
        self.total += float(similarity.mean())
        self.measured_frames += int(found.sum())
        self.clips += 1

    def compute(self) -> dict[str, Tensor]:
        if self.clips == 0:
            return {"CSIM": torch.tensor(float("nan"), device=self.total.device)}
        return {"CSIM": (self.total / self.clips).float()}
