"""Import the published PD-FGC checkpoints into our networks.

The official release (Dorniwang/PD-FGC-inference, ``checkpoints/``) has four plain state dicts,
one per network, without prefixes; ``lib/model_builder.py`` loads them into:

=====================  ===================  ========================================  ===========================
file                   asset                official class                            ours (`PDFGC`)
=====================  ===================  ========================================  ===========================
appearance_model.pth   ``pdfgc_appearance``  ResNeXtEncoder (ResNeXt50 + conv1x1 +    ``net_appearance``
                                             fc 5995)                                 IdentityEncoder
motion_model.pth       ``pdfgc_motion``      FanEncoder (FAN_use + to_*/``*_embed``   ``net_motion`` MotionEncoder
                                             heads with BatchNorm1d)
audio_model.pth        ``pdfgc_audio``       ResSESyncEncoder (ResNetSE34 n_mel_T 1   ``net_audio`` AudioEncoder
                                             + mouth_embed 500)
generator_model.pth    ``pdfgc_generator``   ModulateGenerator (StyleGAN2, 224,       ``net_generator``
                                             style 2590)                              ModulatedGenerator
=====================  ===================  ========================================  ===========================

`KEY_MAP` is the explicit map official -> ours, as prefix rules ``<official prefix>`` ->
``<submodule>.<official prefix>`` (our blocks use the official module names). `SKIP` lists, per
file, the official key prefixes the *official loader* drops, and `map_key` returns None for
exactly those keys (a key under neither is an error, never silently dropped):

* appearance: ``fc`` (the official rule: "fc" in the key and "model" not in it);
* motion: ``mouth_fc``, ``headpose_fc``, ``classifier``, ``to_feature``, ``to_embed`` (training heads);
* audio: ``fc`` (outside ``model.``), ``model.layer4_exp``, ``model.attention_exp``, ``model.fc_exp``,
  ``exp_embed`` (an unreleased audio -> expression branch);
* generator: nothing.

Our training-only counterparts (``net_appearance.fc``, ``net_motion.classifier`` / ``mouth_fc`` /
``headpose_fc`` / ``to_feature`` / ``to_embed``) therefore keep their initialisation after
`load_official`, as the official modules do (`UNFILLED`).

`official_shapes()` enumerates the tensors of the four files, written out from the official module
definitions (names and constructor arguments; the shared tables are in `talkinghead.nn.official`).
The tensors under skipped names that the released *code* never defines (motion training heads,
audio ``fc`` and expression branch) are listed by `training_leftover_shapes()` with assumed shapes
(the PC-AVS heads they descend from; a second ResNetSE stage 4 / attention / fc for ``*_exp``):
the released files may or may not hold them, and since they are skipped by name their shapes never
matter to loading. A test checks at paper size that the map covers every other tensor with the
right shape and leaves none of ours unfilled (`check_key_map`).

BatchNorm ``num_batches_tracked`` counters may be missing (old PyTorch files); nothing else may.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from talkinghead.methods.pdfgc.networks import PDFGC, PDFGCConfig
from talkinghead.nn.official import (
    KeyMap,
    Shapes,
    bn_shapes,
    conv_shapes,
    fan_use_shapes,
    linear_shapes,
    modulate_generator_shapes,
    read_official_files,
    resnetse34_shapes,
    resnext50_shapes,
)

__all__ = ["ASSETS", "FILES", "KEYMAP", "KEY_MAP", "SKIP", "UNFILLED", "check_key_map", "load_official", "map_key",
           "map_state_dict", "official_shapes", "training_leftover_shapes"]

#: Our submodule -> the official file name.
FILES = {"net_appearance": "appearance_model.pth", "net_motion": "motion_model.pth",
         "net_audio": "audio_model.pth", "net_generator": "generator_model.pth"}
#: Our submodule -> the `talkinghead.weights` asset of the official file.
ASSETS = {"net_appearance": "pdfgc_appearance", "net_motion": "pdfgc_motion", "net_audio": "pdfgc_audio",
          "net_generator": "pdfgc_generator"}

#: The explicit key map: for each official file, (official key prefix, our key prefix) rules, first
#: match wins. Every official tensor the official loader loads sits under one of these prefixes.
KEY_MAP: dict[str, tuple[tuple[str, str], ...]] = {
    "net_appearance": (("model.", "net_appearance.model."), ("conv1x1.", "net_appearance.conv1x1.")),
    "net_motion": tuple((p, f"net_motion.{p}") for p in (
        "model.", "to_mouth.", "mouth_embed.", "to_headpose.", "headpose_embed.", "to_eye.", "eye_embed.",
        "to_emo.", "emo_embed.")),
    "net_audio": (("model.", "net_audio.model."), ("mouth_embed.", "net_audio.mouth_embed.")),
    "net_generator": tuple((p, f"net_generator.{p}") for p in (
        "style.", "input.", "conv1.", "to_rgb1.", "convs.", "to_rgbs.", "noises.")),
}

#: The official loader's skip list (``lib/model_builder.py``), as key prefixes, per file.
SKIP: dict[str, tuple[str, ...]] = {
    "net_appearance": ("fc.",),
    "net_motion": ("mouth_fc.", "headpose_fc.", "classifier.", "to_feature.", "to_embed."),
    "net_audio": ("fc.", "model.layer4_exp.", "model.attention_exp.", "model.fc_exp.", "exp_embed."),
    "net_generator": (),
}

#: Our keys no official tensor fills (training-only heads; the official loader skips theirs).
UNFILLED = ("net_appearance.fc.", "net_motion.classifier.", "net_motion.mouth_fc.", "net_motion.headpose_fc.",
            "net_motion.to_feature.", "net_motion.to_embed.", "net_audio.fc.")

#: All of the above as one `talkinghead.nn.official.KeyMap` (mapping, coverage check, loading).
KEYMAP = KeyMap("PD-FGC", FILES, KEY_MAP, SKIP, UNFILLED)


def map_key(component: str, key: str) -> str | None:
    """Official key of file `component` -> our `PDFGC` state-dict key; None exactly for the keys the
    official loader skips (`SKIP`); a key outside the map is a ValueError naming the file."""
    target = KEYMAP.map_key(component, key)
    if target is None and not KEYMAP.skipped(component, key):
        raise ValueError(f"{FILES[component]}: {key!r} is outside the PD-FGC key map")
    return target


# ---------------------------------------------------------------------------------------------
# the official tensors, written out from the official module definitions
# ---------------------------------------------------------------------------------------------
def _mapper(p: str) -> Shapes:
    """Linear(512, 512), ReLU, BatchNorm1d(512), Linear(512, 512) (official FanEncoder heads)."""
    return {**linear_shapes(f"{p}.0", 512, 512), **bn_shapes(f"{p}.2", 512), **linear_shapes(f"{p}.3", 512, 512)}


def training_leftover_shapes(num_classes: int = 5995, clip_len: int = 1, pose_dim: int = 6, emo_dim: int = 30,
                             motion_dim: int = 512) -> dict[str, Shapes]:
    """Tensors under the skipped names that the released code does not define, with assumed shapes:
    motion ``classifier`` / ``mouth_fc`` / ``headpose_fc`` as PC-AVS's FanEncoder, ``to_feature`` as
    the other mappers, ``to_embed`` ReLU-Linear(512, motion_dim); audio ``fc`` Linear(512, classes) as
    PC-AVS's ResSESyncEncoder, ``model.layer4_exp`` / ``attention_exp`` / ``fc_exp`` a second
    ResNetSE stage 4 + attention + fc off layer3, ``exp_embed`` ReLU-Linear(512, emo_dim)."""
    motion = {**linear_shapes("classifier.0", 512, 512), **linear_shapes("classifier.2", 512, num_classes),
              **linear_shapes("mouth_fc.1", 512 * clip_len, num_classes),
              **linear_shapes("headpose_fc.1", pose_dim * clip_len, num_classes),
              **_mapper("to_feature"), **linear_shapes("to_embed.1", 512, motion_dim)}
    audio = {**linear_shapes("fc", 512, num_classes),
             **resnetse34_shapes("model", layer4="layer4_exp", attention="attention_exp", fc="fc_exp", stem=False),
             **linear_shapes("exp_embed.1", 512, emo_dim)}
    return {"net_motion": motion, "net_audio": audio}


def official_shapes(num_classes: int = 5995, pose_dim: int = 6, eye_dim: int = 6, emo_dim: int = 30,
                    style_dim: int = 2590, feature_encoded_dim: int = 2590, n_mlp: int = 8,
                    leftovers: bool = True) -> dict[str, Shapes]:
    """Every tensor of the four official files: {net_appearance|net_motion|net_audio|net_generator:
    {official key: shape}}.

    Defaults: the released checkpoints as ``configs/inference.yaml`` builds them (5995 classes,
    pose 6, eye 6, emotion 30, style 2590 = 2048 + 500 + 30 + 6 + 6). leftovers: add
    `training_leftover_shapes()` (skipped by name; shapes assumed)."""
    mouth_dim = 512 - pose_dim - eye_dim
    appearance = {**resnext50_shapes("model"), **conv_shapes("conv1x1", 2048, 512, 1, True),
                  **linear_shapes("fc", 2048, num_classes)}
    motion = {**fan_use_shapes("model"),
              **_mapper("to_mouth"), **linear_shapes("mouth_embed.1", 512, mouth_dim),
              **_mapper("to_headpose"), **linear_shapes("headpose_embed.1", 512, pose_dim),
              **_mapper("to_eye"), **linear_shapes("eye_embed.1", 512, eye_dim),
              **_mapper("to_emo"), **linear_shapes("emo_embed.1", 512, emo_dim)}
    audio = {**resnetse34_shapes("model"), **linear_shapes("mouth_embed.1", 512, mouth_dim)}
    generator = modulate_generator_shapes(style_dim, feature_encoded_dim, n_mlp)
    shapes = {"net_appearance": appearance, "net_motion": motion, "net_audio": audio, "net_generator": generator}
    if leftovers:
        for component, extra in training_leftover_shapes(num_classes, pose_dim=pose_dim, emo_dim=emo_dim).items():
            shapes[component].update(extra)
    return shapes


# ---------------------------------------------------------------------------------------------
# mapping and loading
# ---------------------------------------------------------------------------------------------
def check_key_map(model: PDFGC, shapes: dict[str, Shapes] | None = None) -> dict[str, list[str]]:
    """Compare the official tensors with `model`'s state dict through `map_key`.

    Returns {"unmapped": official keys neither mapped nor skipped, "missing": mapped keys absent
    from the model, "mismatched": "key: official shape vs ours", "uncovered": model keys no
    official tensor fills (outside `UNFILLED`), "skipped": "file:key" the official loader skips};
    all but "skipped" empty means the map is complete at this size.
    """
    return KEYMAP.check(model, shapes or official_shapes())


def map_state_dict(component: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One official file's state dict -> {our PDFGC key: tensor}, skipped keys dropped; keys outside
    the map are a ValueError naming the file."""
    return KEYMAP.map_state_dict(component, state)[0]


def load_official(folder: str | Path | None = None, components: Iterable[str] = tuple(FILES),
                  config: PDFGCConfig | None = None) -> PDFGC:
    """`PDFGC(PDFGCConfig.paper())` with the official weights, in eval mode.

    folder: a directory with ``appearance_model.pth``, ``motion_model.pth``, ``audio_model.pth``,
    ``generator_model.pth``; None looks them up through `talkinghead.weights`
    (``$TALKINGHEAD_HOME/pdfgc/``; a missing file raises `MissingWeightsError` naming it and where
    to get it). A missing file, a tensor of the wrong shape, a key outside the map or a missing
    tensor is an error naming the file. Skipped keys (`SKIP`) are dropped as the official loader
    does; our training-only heads (`UNFILLED`) keep their initialisation.
    config: the networks to load into (default: the paper size, which the released files have;
    other sizes only for official-format files of other sizes, e.g. in tests).
    """
    model = PDFGC(config or PDFGCConfig.paper())
    states = read_official_files(KEYMAP, folder, components, ASSETS, "the official PD-FGC release")
    KEYMAP.load_into(model, states, hint=" (the released files are paper size)")
    return model.eval()
