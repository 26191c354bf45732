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
are not used in eval mode, so a missing counter keeps our value (0) and is reported, nothing else
may be missing.

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


def map_key(component: str, key: str) -> str | None:
    """Official key of file `component` (netV / netE / netA_sync / netG) -> our `PCAVS` state-dict key."""
    for official, ours in KEY_MAP[component]:
        if key.startswith(official):
            return ours + key[len(official):]
    return None


# ---------------------------------------------------------------------------------------------
# the official tensors, written out from the official module definitions
# ---------------------------------------------------------------------------------------------
Shapes = dict[str, tuple[int, ...]]


def _bn(p: str, c: int) -> Shapes:
    return {f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,), f"{p}.running_var": (c,),
            f"{p}.num_batches_tracked": ()}


def _conv(p: str, cin: int, cout: int, k: int | tuple[int, ...], bias: bool, groups: int = 1) -> Shapes:
    ks = (k, k) if isinstance(k, int) else tuple(k)
    out = {f"{p}.weight": (cout, cin // groups, *ks)}
    if bias:
        out[f"{p}.bias"] = (cout,)
    return out


def _linear(p: str, fin: int, fout: int) -> Shapes:
    return {f"{p}.weight": (fout, fin), f"{p}.bias": (fout,)}


def _resnext50(p: str) -> Shapes:
    """torchvision ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4) (official netV.model)."""
    s = {**_conv(f"{p}.conv1", 3, 64, 7, False), **_bn(f"{p}.bn1", 64)}
    inplanes = 64
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        width = planes * 4 // 64 * 32
        for b in range(blocks):
            q = f"{p}.layer{li}.{b}"
            s.update(_conv(f"{q}.conv1", inplanes, width, 1, False))
            s.update(_bn(f"{q}.bn1", width))
            s.update(_conv(f"{q}.conv2", width, width, 3, False, groups=32))
            s.update(_bn(f"{q}.bn2", width))
            s.update(_conv(f"{q}.conv3", width, planes * 4, 1, False))
            s.update(_bn(f"{q}.bn3", planes * 4))
            if b == 0:
                s.update(_conv(f"{q}.downsample.0", inplanes, planes * 4, 1, False))
                s.update(_bn(f"{q}.downsample.1", planes * 4))
            inplanes = planes * 4
    s.update(_linear(f"{p}.fc", 2048, 1000))
    return s


def _fan_block(p: str, cin: int, cout: int) -> Shapes:
    """FAN ConvBlock(in, out) (official FAN_feature_extractor.py)."""
    s = {**_bn(f"{p}.bn1", cin), **_conv(f"{p}.conv1", cin, cout // 2, 3, False),
         **_bn(f"{p}.bn2", cout // 2), **_conv(f"{p}.conv2", cout // 2, cout // 4, 3, False),
         **_bn(f"{p}.bn3", cout // 4), **_conv(f"{p}.conv3", cout // 4, cout // 4, 3, False)}
    if cin != cout:
        s.update(_bn(f"{p}.downsample.0", cin))
        s.update(_conv(f"{p}.downsample.2", cin, cout, 1, False))
    return s


def _fan_use(p: str) -> Shapes:
    s = {**_conv(f"{p}.conv1", 3, 64, 7, True), **_bn(f"{p}.bn1", 64), **_fan_block(f"{p}.conv2", 64, 128),
         **_fan_block(f"{p}.conv3", 128, 128), **_fan_block(f"{p}.conv4", 128, 256)}
    for level in range(4, 0, -1):  # HourGlass(1, 4, 256)
        for name in (f"b1_{level}", f"b2_{level}", f"b3_{level}") + (("b2_plus_1",) if level == 1 else ()):
            s.update(_fan_block(f"{p}.m0.{name}", 256, 256))
    s.update(_fan_block(f"{p}.top_m_0", 256, 256))
    s.update(_conv(f"{p}.conv_last0", 256, 256, 1, True))
    s.update(_conv(f"{p}.l0", 256, 68, 1, True))
    s.update(_bn(f"{p}.bn_end0", 256))
    s.update(_conv(f"{p}.conv6", 68, 1, 3, True))
    s.update(_linear(f"{p}.fc", 28 * 28, 512))
    s.update(_bn(f"{p}.bn5", 68))
    return s


def _resnetse34(p: str) -> Shapes:
    """ResNetSE(SEBasicBlock, [3, 4, 6, 3], [32, 64, 128, 256], nOut=512, n_mel_T=1) (official netA_sync.model)."""
    s = {**_conv(f"{p}.conv1", 1, 32, 3, True), **_bn(f"{p}.bn1", 32)}
    inplanes = 32
    for li, (planes, blocks, stride) in enumerate(zip((32, 64, 128, 256), (3, 4, 6, 3), (1, 2, 2, 2)), start=1):
        for b in range(blocks):
            q = f"{p}.layer{li}.{b}"
            s.update(_conv(f"{q}.conv1", inplanes, planes, 3, False))
            s.update(_bn(f"{q}.bn1", planes))
            s.update(_conv(f"{q}.conv2", planes, planes, 3, False))
            s.update(_bn(f"{q}.bn2", planes))
            s.update(_linear(f"{q}.se.fc.0", planes, planes // 8))
            s.update(_linear(f"{q}.se.fc.2", planes // 8, planes))
            if b == 0 and (stride != 1 or inplanes != planes):
                s.update(_conv(f"{q}.downsample.0", inplanes, planes, 1, False))
                s.update(_bn(f"{q}.downsample.1", planes))
            inplanes = planes
    outmap = 256 * (80 // 8)
    s.update(_conv(f"{p}.attention.0", outmap, 128, (1,), True))
    s.update(_bn(f"{p}.attention.2", 128))
    s.update(_conv(f"{p}.attention.3", 128, outmap, (1,), True))
    s.update(_linear(f"{p}.fc", outmap, 512))
    return s


def _generator(style_dim: int, feature_encoded_dim: int, n_mlp: int, size: int = 224) -> Shapes:
    """ModulateGenerator (StyleGAN2Generator, channel_multiplier 2, size 224, init size 7)."""
    channels = {7: 512, 14: 512, 28: 512, 56: 512, 112: 256, 224: 128}
    s: Shapes = {}
    for i in range(1, n_mlp + 1):
        s.update(_linear(f"style.{i}", feature_encoded_dim, style_dim))
    s["input.input"] = (1, 512, 7, 7)

    def styled(p: str, cin: int, cout: int, upsample: bool) -> None:
        s[f"{p}.conv.weight"] = (1, cout, cin, 3, 3)
        s.update(_linear(f"{p}.conv.modulation", style_dim, cin))
        if upsample:
            s[f"{p}.conv.blur.kernel"] = (4, 4)
        s[f"{p}.noise.weight"] = (1,)
        s[f"{p}.activate.bias"] = (1, cout, 1, 1)

    def to_rgb(p: str, cin: int, upsample: bool) -> None:
        if upsample:
            s[f"{p}.upsample.kernel"] = (4, 4)
        s[f"{p}.conv.weight"] = (1, 3, cin, 1, 1)
        s.update(_linear(f"{p}.conv.modulation", style_dim, cin))
        s[f"{p}.bias"] = (1, 3, 1, 1)

    styled("conv1", 512, 512, False)
    to_rgb("to_rgb1", 512, False)
    log_size = 5  # log2(224 / 7)
    for i in range(2 * log_size + 1):
        r = 7 * 2 ** ((i + 1) // 2)
        s[f"noises.noise_{i}"] = (1, 1, r, r)
    cin = 512
    for i in range(1, log_size + 1):
        cout = channels[7 * 2 ** i]
        styled(f"convs.{2 * (i - 1)}", cin, cout, True)
        styled(f"convs.{2 * (i - 1) + 1}", cout, cout, False)
        to_rgb(f"to_rgbs.{i - 1}", cout, True)
        cin = cout
    return s


def official_shapes(num_classes: int = 5830, clip_len: int = 1, pose_dim: int = 12, style_dim: int = 2560,
                    feature_encoded_dim: int = 2560, n_mlp: int = 8) -> dict[str, Shapes]:
    """Every tensor of the four official files: {netV|netE|netA_sync|netG: {official key: shape}}.

    Defaults: the released demo checkpoints (5830 classes, clip_len 1, 12-d pose, style 2560)."""
    netv = {**_resnext50("model"), **_conv("conv1x1", 2048, 512, 1, True), **_linear("fc", 2048, num_classes)}
    nete = {**_fan_use("model"), **_linear("classifier.0", 512, 512), **_linear("classifier.2", 512, num_classes),
            **_linear("to_mouth.0", 512, 512), **_linear("to_mouth.2", 512, 512),
            **_linear("mouth_embed.1", 512, 512 - pose_dim), **_linear("mouth_fc.1", 512 * clip_len, num_classes),
            **_linear("to_headpose.0", 512, 512), **_linear("to_headpose.2", 512, 512),
            **_linear("headpose_embed.1", 512, pose_dim),
            **_linear("headpose_fc.1", pose_dim * clip_len, num_classes)}
    neta = {**_resnetse34("model"), **_linear("fc", 512, num_classes)}
    netg = _generator(style_dim, feature_encoded_dim, n_mlp)
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
    shapes = shapes or official_shapes()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    report: dict[str, list[str]] = {"unmapped": [], "missing": [], "mismatched": [], "uncovered": []}
    covered = set()
    for component, tensors in shapes.items():
        for key, shape in tensors.items():
            target = map_key(component, key)
            if target is None:
                report["unmapped"].append(f"{component}:{key}")
            elif target not in ours:
                report["missing"].append(f"{component}:{key} -> {target}")
            elif ours[target] != tuple(shape):
                report["mismatched"].append(f"{target}: official {tuple(shape)} vs ours {ours[target]}")
            else:
                covered.add(target)
    report["uncovered"] = sorted(set(ours) - covered)
    return report


def map_state_dict(component: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One official file's state dict -> {our PCAVS key: tensor}; unknown keys are an error."""
    out, unknown = {}, []
    for key, value in state.items():
        target = map_key(component, key.removeprefix("module."))
        if target is None:
            unknown.append(key)
        else:
            out[target] = value
    if unknown:
        raise ValueError(f"{FILES[component]}: keys outside the PC-AVS key map: {unknown[:5]}")
    return out


def _load_file(component: str, folder: Path | None) -> dict[str, torch.Tensor]:
    if folder is None:
        from talkinghead import weights

        state = weights.load(ASSETS[component])
    else:
        path = folder / FILES[component]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the official PC-AVS release has {', '.join(FILES.values())})")
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{FILES[component]}: not a state dict")
    return state


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
    ours = model.state_dict()
    folder = Path(folder) if folder is not None else None
    loaded: dict[str, torch.Tensor] = {}
    for component in components:
        mapped = map_state_dict(component, _load_file(component, folder))
        wrong = [f"{k}: file {tuple(v.shape)} vs ours {tuple(ours[k].shape)}"
                 for k, v in mapped.items() if k in ours and tuple(v.shape) != tuple(ours[k].shape)]
        extra = [k for k in mapped if k not in ours]
        if wrong or extra:
            raise ValueError(f"{FILES[component]} does not fit this PC-AVS config (the released files are paper size): {(wrong + extra)[:5]}")
        loaded.update(mapped)
    prefixes = tuple(f"{c}." for c in components)
    missing = [k for k in ours if k.startswith(prefixes) and k not in loaded]
    fatal = [k for k in missing if not k.endswith("num_batches_tracked")]
    if fatal:
        raise ValueError(f"official PC-AVS files lack {len(fatal)} tensors, e.g. {fatal[:5]}")
    model.load_state_dict(loaded, strict=False)
    return model.eval()
