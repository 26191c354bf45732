"""Official checkpoint layouts of the shared blocks, and the key-map machinery every importer uses.

PC-AVS (Hangz-nju-cuhk/Talking-Face_PC-AVS) and PD-FGC (Dorniwang/PD-FGC-inference) publish plain
state dicts of the same official modules: torchvision's ResNeXt50-32x4d (``ResNeXt50``), the FAN
hourglass ``FAN_use``, voxceleb_trainer's ``ResNetSE`` 34 and the StyleGAN2 ``ModulateGenerator``.

* Shape tables (`resnext50_shapes`, `fan_use_shapes`, `resnetse34_shapes`,
  `modulate_generator_shapes`, plus `bn_shapes` / `conv_shapes` / `linear_shapes`): every tensor
  those official classes register, ``{official key: shape}``, written out from the official module
  definitions (names and constructor arguments), independently of our modules in `talkinghead.nn`,
  so a test comparing the two means something.
* `KeyMap`: one method's explicit map official -> ours, file by file: prefix rules (first match
  wins) and a skip list (official keys the official loader itself drops). It maps keys
  (`KeyMap.map_key`), whole files (`KeyMap.map_state_dict`), checks coverage against a model at
  any size (`KeyMap.check`) and loads files into a model (`KeyMap.load_into`); `read_official_files`
  reads a method's files from a folder or through `talkinghead.weights`.

BatchNorm ``num_batches_tracked`` counters: files written by PyTorch < 0.4.1 lack them; they are not
used in eval mode, so a missing counter keeps our value (0); every other missing tensor is an error.
A DataParallel ``module.`` prefix on a file's keys is removed before mapping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

__all__ = [
    "KeyMap",
    "Shapes",
    "bn_shapes",
    "check_state_dict",
    "conv_shapes",
    "fan_use_shapes",
    "linear_shapes",
    "modulate_generator_shapes",
    "read_official_files",
    "read_state_dict",
    "resnetse34_shapes",
    "resnext50_shapes",
]

#: {official key: shape} of one file.
Shapes = dict[str, tuple[int, ...]]


# ---------------------------------------------------------------------------------------------
# official shape tables
# ---------------------------------------------------------------------------------------------
def bn_shapes(p: str, c: int) -> Shapes:
    """BatchNorm{1,2}d(c) at prefix p (with its ``num_batches_tracked`` counter)."""
    return {f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,), f"{p}.running_var": (c,),
            f"{p}.num_batches_tracked": ()}


def conv_shapes(p: str, cin: int, cout: int, k: int | tuple[int, ...], bias: bool, groups: int = 1) -> Shapes:
    """Conv{1,2}d(cin, cout, k) at prefix p (k an int: square 2-d kernel; a tuple: that kernel)."""
    ks = (k, k) if isinstance(k, int) else tuple(k)
    out = {f"{p}.weight": (cout, cin // groups, *ks)}
    if bias:
        out[f"{p}.bias"] = (cout,)
    return out


def linear_shapes(p: str, fin: int, fout: int) -> Shapes:
    """Linear(fin, fout) at prefix p."""
    return {f"{p}.weight": (fout, fin), f"{p}.bias": (fout,)}


def resnext50_shapes(p: str, num_classes: int = 1000) -> Shapes:
    """torchvision ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4) at prefix p, with
    its ``fc`` 2048 -> num_classes (the official appearance / identity encoders keep the 1000-way one)."""
    s = {**conv_shapes(f"{p}.conv1", 3, 64, 7, False), **bn_shapes(f"{p}.bn1", 64)}
    inplanes = 64
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        width = planes * 4 // 64 * 32
        for b in range(blocks):
            q = f"{p}.layer{li}.{b}"
            s.update(conv_shapes(f"{q}.conv1", inplanes, width, 1, False))
            s.update(bn_shapes(f"{q}.bn1", width))
            s.update(conv_shapes(f"{q}.conv2", width, width, 3, False, groups=32))
            s.update(bn_shapes(f"{q}.bn2", width))
            s.update(conv_shapes(f"{q}.conv3", width, planes * 4, 1, False))
            s.update(bn_shapes(f"{q}.bn3", planes * 4))
            if b == 0:
                s.update(conv_shapes(f"{q}.downsample.0", inplanes, planes * 4, 1, False))
                s.update(bn_shapes(f"{q}.downsample.1", planes * 4))
            inplanes = planes * 4
    s.update(linear_shapes(f"{p}.fc", 2048, num_classes))
    return s


def _fan_block(p: str, cin: int, cout: int) -> Shapes:
    """FAN ConvBlock(in, out) (official FAN_feature_extractor.py)."""
    s = {**bn_shapes(f"{p}.bn1", cin), **conv_shapes(f"{p}.conv1", cin, cout // 2, 3, False),
         **bn_shapes(f"{p}.bn2", cout // 2), **conv_shapes(f"{p}.conv2", cout // 2, cout // 4, 3, False),
         **bn_shapes(f"{p}.bn3", cout // 4), **conv_shapes(f"{p}.conv3", cout // 4, cout // 4, 3, False)}
    if cin != cout:
        s.update(bn_shapes(f"{p}.downsample.0", cin))
        s.update(conv_shapes(f"{p}.downsample.2", cin, cout, 1, False))
    return s


def fan_use_shapes(p: str) -> Shapes:
    """The official ``FAN_use`` (224 px input, fc 784 -> 512) at prefix p."""
    s = {**conv_shapes(f"{p}.conv1", 3, 64, 7, True), **bn_shapes(f"{p}.bn1", 64),
         **_fan_block(f"{p}.conv2", 64, 128), **_fan_block(f"{p}.conv3", 128, 128),
         **_fan_block(f"{p}.conv4", 128, 256)}
    for level in range(4, 0, -1):  # HourGlass(1, 4, 256)
        for name in (f"b1_{level}", f"b2_{level}", f"b3_{level}") + (("b2_plus_1",) if level == 1 else ()):
            s.update(_fan_block(f"{p}.m0.{name}", 256, 256))
    s.update(_fan_block(f"{p}.top_m_0", 256, 256))
    s.update(conv_shapes(f"{p}.conv_last0", 256, 256, 1, True))
    s.update(conv_shapes(f"{p}.l0", 256, 68, 1, True))
    s.update(bn_shapes(f"{p}.bn_end0", 256))
    s.update(conv_shapes(f"{p}.conv6", 68, 1, 3, True))
    s.update(linear_shapes(f"{p}.fc", 28 * 28, 512))
    s.update(bn_shapes(f"{p}.bn5", 68))
    return s


def resnetse34_shapes(p: str, layer4: str = "layer4", attention: str = "attention", fc: str = "fc",
                      stem: bool = True) -> Shapes:
    """ResNetSE(SEBasicBlock, [3, 4, 6, 3], [32, 64, 128, 256], nOut=512, n_mel_T=1) at prefix p
    (the PC-AVS / PD-FGC sync audio encoders' ``model``).

    layer4 / attention / fc: the names of the last stage, the attention and the output layer;
    stem=False gives only those three (a second branch off layer3 under other names, e.g. the
    ``layer4_exp`` / ``attention_exp`` / ``fc_exp`` of an audio file holding an expression branch).
    """
    s: Shapes = {}
    if stem:
        s.update({**conv_shapes(f"{p}.conv1", 1, 32, 3, True), **bn_shapes(f"{p}.bn1", 32)})
    inplanes = 32
    stages = zip((32, 64, 128, 256), (3, 4, 6, 3), (1, 2, 2, 2), ("layer1", "layer2", "layer3", layer4))
    for li, (planes, blocks, stride, name) in enumerate(stages, start=1):
        for b in range(blocks):
            q = f"{p}.{name}.{b}"
            if stem or li == 4:
                s.update(conv_shapes(f"{q}.conv1", inplanes, planes, 3, False))
                s.update(bn_shapes(f"{q}.bn1", planes))
                s.update(conv_shapes(f"{q}.conv2", planes, planes, 3, False))
                s.update(bn_shapes(f"{q}.bn2", planes))
                s.update(linear_shapes(f"{q}.se.fc.0", planes, planes // 8))
                s.update(linear_shapes(f"{q}.se.fc.2", planes // 8, planes))
                if b == 0 and (stride != 1 or inplanes != planes):
                    s.update(conv_shapes(f"{q}.downsample.0", inplanes, planes, 1, False))
                    s.update(bn_shapes(f"{q}.downsample.1", planes))
            inplanes = planes
    outmap = 256 * (80 // 8)
    s.update(conv_shapes(f"{p}.{attention}.0", outmap, 128, (1,), True))
    s.update(bn_shapes(f"{p}.{attention}.2", 128))
    s.update(conv_shapes(f"{p}.{attention}.3", 128, outmap, (1,), True))
    s.update(linear_shapes(f"{p}.{fc}", outmap, 512))
    return s


def modulate_generator_shapes(style_dim: int, feature_encoded_dim: int, n_mlp: int = 8) -> Shapes:
    """The official ``ModulateGenerator`` (StyleGAN2Generator, size 224, init size 7, channel
    multiplier 2): channels 512 @ 7, 14, 28, 56, 256 @ 112, 128 @ 224."""
    channels = {7: 512, 14: 512, 28: 512, 56: 512, 112: 256, 224: 128}
    s: Shapes = {}
    for i in range(1, n_mlp + 1):  # style.0 is the parameter-free PixelNorm
        s.update(linear_shapes(f"style.{i}", feature_encoded_dim, style_dim))
    s["input.input"] = (1, 512, 7, 7)

    def styled(p: str, cin: int, cout: int, upsample: bool) -> None:
        s[f"{p}.conv.weight"] = (1, cout, cin, 3, 3)
        s.update(linear_shapes(f"{p}.conv.modulation", style_dim, cin))
        if upsample:
            s[f"{p}.conv.blur.kernel"] = (4, 4)
        s[f"{p}.noise.weight"] = (1,)
        s[f"{p}.activate.bias"] = (1, cout, 1, 1)

    def to_rgb(p: str, cin: int, upsample: bool) -> None:
        if upsample:
            s[f"{p}.upsample.kernel"] = (4, 4)
        s[f"{p}.conv.weight"] = (1, 3, cin, 1, 1)
        s.update(linear_shapes(f"{p}.conv.modulation", style_dim, cin))
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


# ---------------------------------------------------------------------------------------------
# key maps
# ---------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from `path` (``torch.load(weights_only=True)`` on CPU); a missing file is a
    FileNotFoundError and anything but a dict of tensors a ValueError, both naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unreadable/corrupt files: say which one
        raise ValueError(f"{path}: not a readable PyTorch state dict ({type(error).__name__}: {error})") from error
    return check_state_dict(state, path.name)


def check_state_dict(state, name: str) -> dict[str, torch.Tensor]:
    """`state` if it is a {str: tensor} dict, else a ValueError naming file `name`."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{name}: not a state dict of tensors")
    return dict(state)


@dataclass(frozen=True)
class KeyMap:
    """The explicit key map of one method's official files.

    method: name for messages ("PC-AVS").
    files:  component -> official file name; a component is one file / one of our submodules.
    rules:  component -> ((official key prefix, our key prefix), ...); first match wins.
    skip:   component -> official key prefixes the *official* loader drops; they map to nothing
            (`map_key` returns None for them, and only for them among known keys).
    unfilled: prefixes of our keys that no official tensor fills by design (training-only heads the
            official loader skips); `load_into` leaves them at their initialisation.
    """

    method: str
    files: Mapping[str, str]
    rules: Mapping[str, tuple[tuple[str, str], ...]]
    skip: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unfilled: tuple[str, ...] = ()

    def skipped(self, component: str, key: str) -> bool:
        """Whether official `key` of `component` is on the skip list."""
        return key.startswith(tuple(self.skip.get(component, ())))

    def map_key(self, component: str, key: str) -> str | None:
        """Official `key` of file `component` -> our key; None when skipped or outside the map."""
        if self.skipped(component, key):
            return None
        for official, ours in self.rules[component]:
            if key.startswith(official):
                return ours + key[len(official):]
        return None

    def map_state_dict(self, component: str, state: Mapping[str, torch.Tensor]
                       ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """One official file's state dict -> ({our key: tensor}, [skipped official keys]).

        A ``module.`` prefix is removed first; a key neither mapped nor skipped is a ValueError
        naming the file."""
        out, skipped, unknown = {}, [], []
        for key, value in state.items():
            key = key.removeprefix("module.")
            target = self.map_key(component, key)
            if target is not None:
                out[target] = value
            elif self.skipped(component, key):
                skipped.append(key)
            else:
                unknown.append(key)
        if unknown:
            raise ValueError(f"{self.files[component]}: keys outside the {self.method} key map: {unknown[:5]}")
        return out, skipped

    def check(self, model: nn.Module, shapes: Mapping[str, Shapes]) -> dict[str, list[str]]:
        """Compare official tensors ``{component: {key: shape}}`` with `model`'s state dict.

        Returns {"unmapped": official keys the map leaves out (neither mapped nor skipped),
        "missing": mapped keys absent from the model, "mismatched": "key: official shape vs ours",
        "uncovered": model keys no official tensor fills, outside `unfilled`}, and, for a map
        with a skip list, "skipped": the official keys it skips. All but "skipped" empty means the
        map is complete at this size.
        """
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        report: dict[str, list[str]] = {"unmapped": [], "missing": [], "mismatched": [], "uncovered": []}
        skipped: list[str] = []
        covered = set()
        for component, tensors in shapes.items():
            for key, shape in tensors.items():
                target = self.map_key(component, key)
                if target is None:
                    (skipped if self.skipped(component, key) else report["unmapped"]).append(f"{component}:{key}")
                elif target not in ours:
                    report["missing"].append(f"{component}:{key} -> {target}")
                elif ours[target] != tuple(shape):
                    report["mismatched"].append(f"{target}: official {tuple(shape)} vs ours {ours[target]}")
                else:
                    covered.add(target)
        report["uncovered"] = sorted(k for k in set(ours) - covered if not k.startswith(self.unfilled))
        if self.skip:
            report["skipped"] = skipped
        return report

    def load_into(self, model: nn.Module, states: Mapping[str, Mapping[str, torch.Tensor]],
                  hint: str = "") -> dict[str, list[str]]:
        """Load official state dicts ``{component: state}`` into `model` (in place).

        Every mapped tensor must exist in `model` with the same shape and every key of ours under
        a loaded component must be filled, except BatchNorm counters and `unfilled` keys; each
        violation is a ValueError naming the file (`hint` is appended to shape errors). Returns
        {component: skipped official keys}.
        """
        ours = model.state_dict()
        loaded: dict[str, torch.Tensor] = {}
        skipped: dict[str, list[str]] = {}
        for component, state in states.items():
            name = self.files[component]
            mapped, skipped[component] = self.map_state_dict(component, state)
            wrong = [f"{k}: file {tuple(v.shape)} vs ours {tuple(ours[k].shape)}"
                     for k, v in mapped.items() if k in ours and tuple(v.shape) != tuple(ours[k].shape)]
            extra = [f"{k}: not in our model" for k in mapped if k not in ours]
            if wrong or extra:
                raise ValueError(f"{name} does not fit this {self.method} config{hint}: {(wrong + extra)[:5]}")
            prefixes = tuple(ours_prefix for _, ours_prefix in self.rules[component])
            missing = [k for k in ours if k.startswith(prefixes) and k not in mapped
                       and not k.endswith("num_batches_tracked") and not k.startswith(self.unfilled)]
            if missing:
                raise ValueError(f"{name} lacks {len(missing)} tensors of the official {self.method} layout, "
                                 f"e.g. {missing[:5]}")
            loaded.update(mapped)
        model.load_state_dict(loaded, strict=False)
        return skipped


def read_official_files(keymap: KeyMap, folder: str | Path | None, components: Iterable[str],
                        assets: Mapping[str, str], release: str) -> dict[str, dict[str, torch.Tensor]]:
    """{component: state dict} of `keymap`'s files: from `folder`, or through `talkinghead.weights`
    (`assets`: component -> asset name) when folder is None. A missing file names itself and
    `release` (what holds the files); a missing asset raises `MissingWeightsError`."""
    states = {}
    for component in components:
        name = keymap.files[component]
        if folder is None:
            from talkinghead import weights

            states[component] = check_state_dict(weights.load(assets[component]), name)
            continue
        path = Path(folder) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing ({release} has {', '.join(keymap.files.values())})")
        states[component] = read_state_dict(path)
    return states
