"""Import the published PC-AVS checkpoints into our networks, with the official preprocessing.

The official release (Hangz-nju-cuhk/Talking-Face_PC-AVS, ``checkpoints/demo/``) has four plain
state dicts, one per network, without prefixes:

=====================  =============  ===================================  =====================
file                   asset          official class                        ours (`PCAVS`)
=====================  =============  ===================================  =====================
latest_net_V.pth       ``pcavs_V``     ResNeXtEncoder (ResNeXt50 +          ``netV`` IdentityEncoder
                                       conv1x1 + fc 5830)
latest_net_E.pth       ``pcavs_E``     FanEncoder (FAN_use + heads)         ``netE`` NonIdentityEncoder
latest_net_A_sync.pth  ``pcavs_A_sync``  ResSESyncEncoder (ResNetSE34 + fc)   ``netA_sync`` AudioEncoder
latest_net_G.pth       ``pcavs_G``     ModulateGenerator (StyleGAN2, 224)   ``netG`` ModulatedGenerator
=====================  =============  ===================================  =====================

`official_shapes()` enumerates every tensor those official classes register (names and shapes
written out from the official module definitions, independently of our modules), and
`map_key()` is the explicit key map official -> ours. Our blocks were written with the official
module names, so every rule is a prefix rule ``<official key>`` -> ``<submodule>.<official key>``
(`KEY_MAP`); `map_key` returns None for nothing. A test checks at paper size that the map covers
every official tensor with the right shape and leaves none of ours unfilled (`check_key_map`).

BatchNorm ``num_batches_tracked`` counters: checkpoints written by PyTorch < 0.4.1 lack them; they
are not used in eval mode, so a missing counter keeps our value (0), nothing else may be missing.
The shape tables of the shared official modules and the mapping / loading machinery live in
`talkinghead.nn.official` (PD-FGC's importer uses the same).

Official preprocessing, reproduced by `load_official` + `PCAVSGenerator(crop="loader")`:
* alignment: the PC-AVS 224 px alignment (`talkinghead.data.faces.align_clip`, what the clip
  store holds);
* crop: the official loader's rows 0:192, cols 16:208 of the aligned face, resized to 224 (the
  output covers that crop and is pasted back into the frame);
* audio: the lws-compatible 80-bin log-mel of `talkinghead.data.audio` (RMS-normalised to 0.1),
  20-frame windows centred on each video frame;
* the audio content feature is multiplied by 1.2 before ``mouth_embed``
  (``PCAVSConfig.audio_scale``, official ``mouth_feature_weight``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from talkinghead.methods.pcavs.networks import PCAVS, PCAVSConfig
from talkinghead.nn.official import (
    KeyMap,
    Shapes,
    conv_shapes,
    fan_use_shapes,
    linear_shapes,
    modulate_generator_shapes,
    read_official_files,
    resnetse34_shapes,
    resnext50_shapes,
)

__all__ = ["ASSETS", "FILES", "KEY_MAP", "check_key_map", "load_official", "map_key", "map_state_dict",
           "official_shapes"]

#: Our submodule -> the official file name.
FILES = {"netV": "latest_net_V.pth", "netE": "latest_net_E.pth", "netA_sync": "latest_net_A_sync.pth",
         "netG": "latest_net_G.pth"}
#: Our submodule -> the `talkinghead.weights` asset of the official file.
ASSETS = {"netV": "pcavs_V", "netE": "pcavs_E", "netA_sync": "pcavs_A_sync", "netG": "pcavs_G"}

#: The explicit key map: for each official file, (official key prefix, our key prefix) rules, first
#: match wins. Every official tensor sits under one of these prefixes.
KEY_MAP: dict[str, tuple[tuple[str, str], ...]] = {
    "netV": (("model.", "netV.model."), ("conv1x1.", "netV.conv1x1."), ("fc.", "netV.fc.")),
    "netE": (("model.", "netE.model."), ("classifier.", "netE.classifier."), ("to_mouth.", "netE.to_mouth."),
             ("mouth_embed.", "netE.mouth_embed."), ("mouth_fc.", "netE.mouth_fc."),
             ("to_headpose.", "netE.to_headpose."), ("headpose_embed.", "netE.headpose_embed."),
             ("headpose_fc.", "netE.headpose_fc.")),
    "netA_sync": (("model.", "netA_sync.model."), ("fc.", "netA_sync.fc.")),
    "netG": (("style.", "netG.style."), ("input.", "netG.input."), ("conv1.", "netG.conv1."),
             ("to_rgb1.", "netG.to_rgb1."), ("convs.", "netG.convs."), ("to_rgbs.", "netG.to_rgbs."),
             ("noises.", "netG.noises.")),
}

_KEYMAP = KeyMap("PC-AVS", FILES, KEY_MAP)


def map_key(component: str, key: str) -> str | None:
    """Official key of file `component` (netV / netE / netA_sync / netG) -> our `PCAVS` state-dict key."""
    return _KEYMAP.map_key(component, key)


# ---------------------------------------------------------------------------------------------
# the official tensors, written out from the official module definitions
# ---------------------------------------------------------------------------------------------
def official_shapes(num_classes: int = 5830, clip_len: int = 1, pose_dim: int = 12, style_dim: int = 2560,
                    feature_encoded_dim: int = 2560, n_mlp: int = 8) -> dict[str, Shapes]:
    """Every tensor of the four official files: {netV|netE|netA_sync|netG: {official key: shape}}.

    Defaults: the released demo checkpoints (5830 classes, clip_len 1, 12-d pose, style 2560)."""
    netv = {**resnext50_shapes("model"), **conv_shapes("conv1x1", 2048, 512, 1, True),
            **linear_shapes("fc", 2048, num_classes)}
    nete = {**fan_use_shapes("model"), **linear_shapes("classifier.0", 512, 512),
            **linear_shapes("classifier.2", 512, num_classes),
            **linear_shapes("to_mouth.0", 512, 512), **linear_shapes("to_mouth.2", 512, 512),
            **linear_shapes("mouth_embed.1", 512, 512 - pose_dim),
            **linear_shapes("mouth_fc.1", 512 * clip_len, num_classes),
            **linear_shapes("to_headpose.0", 512, 512), **linear_shapes("to_headpose.2", 512, 512),
            **linear_shapes("headpose_embed.1", 512, pose_dim),
            **linear_shapes("headpose_fc.1", pose_dim * clip_len, num_classes)}
    neta = {**resnetse34_shapes("model"), **linear_shapes("fc", 512, num_classes)}
    netg = modulate_generator_shapes(style_dim, feature_encoded_dim, n_mlp)
    return {"netV": netv, "netE": nete, "netA_sync": neta, "netG": netg}


# ---------------------------------------------------------------------------------------------
# mapping and loading
# ---------------------------------------------------------------------------------------------
def check_key_map(model: PCAVS, shapes: dict[str, Shapes] | None = None) -> dict[str, list[str]]:
    """Compare the official tensors with `model`'s state dict through `map_key`.

    Returns {"unmapped": official keys map_key leaves out, "missing": mapped keys absent from the
    model, "mismatched": "key: official shape vs ours", "uncovered": model keys no official tensor
    fills}; all empty means the map is complete at this size.
    """
    return _KEYMAP.check(model, shapes or official_shapes())


def map_state_dict(component: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One official file's state dict -> {our PCAVS key: tensor}; unknown keys are an error."""
    return _KEYMAP.map_state_dict(component, state)[0]


def load_official(folder: str | Path | None = None, components: Iterable[str] = tuple(FILES),
                  config: PCAVSConfig | None = None) -> PCAVS:
    """`PCAVS(PCAVSConfig.paper())` with the official weights (audio_scale 1.2).

    folder: a directory with ``latest_net_{G,V,E,A_sync}.pth``; None looks them up through
    `talkinghead.weights` (``$TALKINGHEAD_HOME/pcavs/``; a missing file raises
    `MissingWeightsError` naming it and where to get it). Shapes are checked tensor by tensor.
    config: the networks to load into (default: the paper size, which the released files have;
    other sizes only for official-format files of other sizes, e.g. in tests).
    """
    model = PCAVS(config or PCAVSConfig.paper())
    states = read_official_files(_KEYMAP, folder, components, ASSETS, "the official PC-AVS release")
    _KEYMAP.load_into(model, states, hint=" (the released files are paper size)")
    return model.eval()
