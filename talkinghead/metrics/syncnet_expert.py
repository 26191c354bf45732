"""Loading a SyncNet for LSE: the official checkpoint import and our expert file format.

The network is `talkinghead.nn.syncnet.SyncNet`; this module only turns files into one.

Official ``syncnet_v2.model`` (joonson/syncnet_python)
------------------------------------------------------
The official file is a plain name -> tensor dict of `SyncNetModel.S`. Our `SyncNet()` uses the
same module names, so `OFFICIAL_KEY_MAP` is the identity; it is still written out as an explicit
map and checked (`check_key_map`): every official tensor maps to one of ours with the same
shape, and every tensor of ours is covered. `official_shapes()` is the official key -> shape
table, built from the published layer list (not from our module). `load_official()` loads it.

BatchNorm `num_batches_tracked` counters: checkpoints saved before PyTorch 0.4.1 do not have
them; they carry no information in eval mode and are filled with 0 when absent.

SyncNet experts (trained by ``make train METHOD=syncnet``)
-----------------------------------------------------------
An expert file (``syncnet_expert.pt``, `EXPERT_FILE`) is a plain dict {format (`EXPERT_FORMAT`),
version, name, config (SyncNetConfig fields), state_dict, step, store, store_name} written by
`save_expert` and read by `load_expert` with ``torch.load(weights_only=True)``; `load_expert`
also reads a Lightning checkpoint of the SyncNet training module (``net.*`` weights, the
``model`` hyper-parameter). The default place of a store's expert is `default_expert_path(store)`
= ``<store>/experts/syncnet/syncnet_expert.pt`` (beside the data it was trained on; `ClipStore`
only reads ``clips/`` and ``index.json``, so the store is unaffected).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from talkinghead import weights
from talkinghead.fileio import atomic_write
from talkinghead.nn.syncnet import SyncNet, SyncNetConfig

__all__ = [
    "ASSET",
    "EXPERT_FILE",
    "EXPERT_FORMAT",
    "OFFICIAL_KEY_MAP",
    "OFFICIAL_NAME",
    "TRAIN_COMMAND",
    "check_key_map",
    "convert_official",
    "default_expert_path",
    "expert_description",
    "load_expert",
    "load_official",
    "official_shapes",
    "save_expert",
]

# ---------------------------------------------------------------------------------------------
# the official syncnet_v2.model
# ---------------------------------------------------------------------------------------------
ASSET = "syncnet_v2"
OFFICIAL_NAME = "official SyncNet v2 (syncnet_v2.model, joonson/syncnet_python)"

# (Sequential index of the conv, in channels, out channels, kernel) per tower; BN follows at index + 1.
_AUDIO_CONVS = [(0, 1, 64, (3, 3)), (4, 64, 192, (3, 3)), (8, 192, 384, (3, 3)), (11, 384, 256, (3, 3)),
                (14, 256, 256, (3, 3)), (18, 256, 512, (5, 4))]
_LIP_CONVS = [(0, 3, 96, (5, 7, 7)), (4, 96, 256, (1, 5, 5)), (8, 256, 256, (1, 3, 3)), (11, 256, 256, (1, 3, 3)),
              (14, 256, 256, (1, 3, 3)), (18, 256, 512, (1, 6, 6))]
_FC = [(0, 512, 512), (3, 512, 1024)]  # Linear at 0 and 3, BatchNorm1d(512) at 1


def official_shapes(num_batches_tracked: bool = False) -> dict[str, tuple[int, ...]]:
    """Official `syncnet_v2.model` key -> tensor shape (weights, biases, BN running stats).

    With `num_batches_tracked` the BN counters (shape ()) are listed too.
    """
    table: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            table[f"{prefix}.{name}"] = (channels,)
        if num_batches_tracked:
            table[f"{prefix}.num_batches_tracked"] = ()

    for tower, convs in (("netcnnaud", _AUDIO_CONVS), ("netcnnlip", _LIP_CONVS)):
        for index, cin, cout, kernel in convs:
            table[f"{tower}.{index}.weight"] = (cout, cin, *kernel)
            table[f"{tower}.{index}.bias"] = (cout,)
            bn(f"{tower}.{index + 1}", cout)
    for head in ("netfcaud", "netfclip"):
        for index, cin, cout in _FC:
            table[f"{head}.{index}.weight"] = (cout, cin)
            table[f"{head}.{index}.bias"] = (cout,)
        bn(f"{head}.1", 512)
    return table


#: official key -> our key (identity: our module names are the official ones).
OFFICIAL_KEY_MAP: dict[str, str] = {key: key for key in official_shapes(num_batches_tracked=True)}


def _is_counter(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


def check_key_map(model: SyncNet | None = None) -> None:
    """Raise ValueError unless `OFFICIAL_KEY_MAP` covers every official tensor and every tensor of
    `model` (default `SyncNet()`), with equal shapes."""
    model = model or SyncNet()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = []
    for key, shape in official_shapes(num_batches_tracked=True).items():
        target = OFFICIAL_KEY_MAP.get(key)
        if target is None:
            problems.append(f"official {key} is not mapped")
        elif target not in ours:
            problems.append(f"official {key} maps to {target}, which SyncNet does not have")
        elif ours[target] != shape:
            problems.append(f"official {key} {shape} maps to {target} {ours[target]}")
    covered = set(OFFICIAL_KEY_MAP.values())
    problems += [f"SyncNet tensor {key} is not covered by the map" for key in ours if key not in covered]
    if problems:
        raise ValueError("SyncNet official key map is inconsistent:\n  " + "\n  ".join(problems))


def convert_official(state: Mapping[str, torch.Tensor], source: str = "syncnet_v2.model") -> dict[str, torch.Tensor]:
    """Official state dict -> a state dict of `SyncNet()` (strict-loadable).

    Raises ValueError naming `source` on a missing / unexpected key or a shape mismatch.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"{source}: expected a name -> tensor dict, got {type(state).__name__}")
    expected = official_shapes(num_batches_tracked=True)
    missing = [k for k in expected if k not in state and not _is_counter(k)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})" for k in state
             if k in expected and tuple(torch.as_tensor(state[k]).shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {', '.join(unexpected[:8])}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
        if wrong:
            parts.append(f"wrong shapes: {'; '.join(wrong[:8])}")
        raise ValueError(f"{source}: not a syncnet_v2 state dict ({'; '.join(parts)})")
    out: dict[str, torch.Tensor] = {}
    for key in expected:
        if key in state:
            out[OFFICIAL_KEY_MAP[key]] = torch.as_tensor(state[key])
        else:  # a BN counter absent from pre-0.4.1 checkpoints
            out[OFFICIAL_KEY_MAP[key]] = torch.tensor(0, dtype=torch.long)
    return out


def load_official(path: str | Path | None = None, map_location: str | torch.device = "cpu") -> SyncNet:
    """The official SyncNet in eval mode.

    path None: the registered asset ``syncnet_v2`` (``$TALKINGHEAD_HOME/syncnet_v2.model``; a
    missing file raises `talkinghead.weights.MissingWeightsError` saying where to get it).
    Otherwise the given file (loaded with ``torch.load(weights_only=True)``).
    """
    if path is None:
        state = weights.load(ASSET, map_location=map_location)
        source = str(weights.resolve(ASSET))
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such SyncNet checkpoint")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:
            raise ValueError(f"{path}: cannot load as a tensor state dict: {error}") from error
        source = str(path)
    net = SyncNet(SyncNetConfig())
    net.load_state_dict(convert_official(state, source), strict=True)
    return net.eval()


# ---------------------------------------------------------------------------------------------
# our expert files
# ---------------------------------------------------------------------------------------------
EXPERT_FILE = "syncnet_expert.pt"
EXPERT_FORMAT = "talkinghead-syncnet-expert"
#: How a user trains an expert (named in error messages).
TRAIN_COMMAND = "make train METHOD=syncnet"


def default_expert_path(store: str | Path) -> Path:
    """Where the expert trained on `store` lives: ``<store>/experts/syncnet/syncnet_expert.pt``."""
    return Path(store) / "experts" / "syncnet" / EXPERT_FILE


def expert_description(name: str, store_name: str, step: int) -> str:
    """How an expert is named beside the scores, e.g. "SyncNet expert (tiny, trained on synth-vox2, step 1500)"."""
    return f"SyncNet expert ({name}, trained on {store_name}, step {step})"


def save_expert(path: str | Path, net: SyncNet, name: str, step: int, store: str | Path) -> Path:
    """Write the expert file (atomically); see the module docstring for its content."""
    payload = {
        "format": EXPERT_FORMAT,
        "version": 1,
        "name": str(name),
        "config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "step": int(step),
        "store": str(Path(store).resolve()),
        "store_name": Path(store).resolve().name,
    }
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_expert(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> tuple[SyncNet, str]:
    """(SyncNet in eval mode, description) from an expert file or a Lightning checkpoint of the
    SyncNet training module (`talkinghead.methods.syncnet.module.SyncNetModule`).

    The description names the net, e.g. "SyncNet expert (tiny, trained on synth-vox2, step 1500)".
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no SyncNet expert checkpoint; train one with `{TRAIN_COMMAND}` (or `talkinghead train "
            f"--method syncnet --store STORE`, which writes STORE/experts/syncnet/{EXPERT_FILE})")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: cannot load as a SyncNet expert checkpoint: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a SyncNet expert checkpoint (a {type(data).__name__})")
    if data.get("format") == EXPERT_FORMAT:
        config, state = SyncNetConfig.from_dict(data["config"]), data["state_dict"]
        name, step, store_name = data.get("name", "custom"), int(data.get("step", 0)), data.get("store_name", "?")
    elif "state_dict" in data and "hyper_parameters" in data:  # a Lightning checkpoint of SyncNetModule
        hp = data["hyper_parameters"]
        config = SyncNetConfig.from_dict(hp.get("model"))
        state = {k[len("net."):]: v for k, v in data["state_dict"].items() if k.startswith("net.")}
        name, step, store_name = hp.get("name", "custom"), int(data.get("global_step", 0)), "an unrecorded store"
    else:
        raise ValueError(f"{path}: not a SyncNet expert checkpoint (keys: {', '.join(sorted(map(str, data))[:10])})")
    net = SyncNet(config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit its SyncNet config: {error}") from error
    return net.eval(), expert_description(name, store_name, step)
