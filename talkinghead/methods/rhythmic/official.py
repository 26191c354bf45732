"""Import the published Rhythmic Head generator ``latest_net_G.pth`` into `Composer`.

The official code (lelechen63/Talking-head-Generation-with-Rhythmic-Head-Motion) saves the
generator with ``torch.save(netG.cpu().state_dict(), '<epoch>_net_G.pth')``
(``models/base_model.py`` ``save_network``; ``netG`` is the bare ``SpadeCombineModule``, the
DataParallel wrapper sits around the whole ``Vid2VidModel``), so the file is a plain state dict
without prefixes; a ``module.`` prefix (a file saved from a wrapped network) is removed anyway.

The release is one file, asset ``rhythmic_G`` (``$TALKINGHEAD_HOME/rhythmic/latest_net_G.pth``),
component ``"netG"``:

* `KEY_MAP`: our `Composer` uses the official attribute names, so every official prefix maps to
  itself: ``netG.`` (``FewShotGenerator``), ``warp.`` (``WarpModule``), ``img_ref_embedding.`` and
  ``img_ani_embedding.`` (``LabelEmbedder``).
* `SKIP`: ``img_prev_embedding.`` and ``warp.flow_network_temp.``: the temporal branch
  (``set_flow_prev``, built only when a model is made temporal with ``--n_frames_G > 1``). We do not
  build it; the release runs with ``--n_frames_G 1`` and the official loader itself then drops these
  tensors (``load_network`` falls back to loading the matching keys). Nothing in the file belongs to
  FlowNet2 (a separate network, used only to compute ground-truth flow in training) or to the
  unreleased ``FaceRefineModel`` (never part of ``netG``), so nothing else is skipped.

Two official layouts exist (``--use_new`` or not, see `talkinghead.methods.rhythmic.composer`): the
README's command line and the paper's hybrid embedding use ``--use_new`` (``netG.encoder.*``); the
demo script ``scripts/test_demo.sh`` runs a model without it (``netG.image_encoder.*`` /
``netG.lmark_encoder.*``). The K the hybrid layers were built for is in the shape of
``netG.encoder.atten1``. `config_from_state_dict` reads both (and every size) from a file, and
`load_official` builds the matching `Composer` (or checks the one it is given). What no file records
is the order of the reference / animation maps in the composition layers, which changed between
official commits (``ComposerConfig.ani_first``; default: the newest code).

`official_shapes` writes out every tensor the official ``SpadeCombineModule`` registers, from the
official module definitions (``generator_split.py``, ``spade_combine.py``, ``warp_module.py``,
``flow_generator.py``, ``architecture.py``, ``normalization.py``; official option names), for any
option values, independently of our modules, so a test comparing the two means something. Spectral
norm (``torch.nn.utils.spectral_norm``) registers ``weight_orig`` (+ ``bias``), ``weight_u`` (rows)
and ``weight_v`` (fan-in); synchronized BatchNorm the tensors of a BatchNorm2d (affine or not, with
its ``num_batches_tracked`` counter).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import torch

from talkinghead.methods.rhythmic.composer import Composer, ComposerConfig
from talkinghead.nn.official import (
    KeyMap,
    Shapes,
    bn_shapes,
    conv_shapes,
    read_state_dict,
)

__all__ = ["ASSET", "FILE", "KEYMAP", "KEY_MAP", "SKIP", "check_key_map", "config_from_state_dict",
           "load_official", "map_state_dict", "official_options", "official_shapes"]

#: The official file and its `talkinghead.weights` asset.
FILE = "latest_net_G.pth"
ASSET = "rhythmic_G"

#: Official key prefix -> ours (identical names), first match wins.
KEY_MAP: dict[str, tuple[tuple[str, str], ...]] = {
    "netG": tuple((p, p) for p in ("netG.", "warp.flow_network_ref.", "warp.flow_network_ani.",
                                   "img_ref_embedding.", "img_ani_embedding.")),
}
#: Official tensors we do not build (the temporal branch; see the module docstring).
SKIP: dict[str, tuple[str, ...]] = {"netG": ("img_prev_embedding.", "warp.flow_network_temp.")}

KEYMAP = KeyMap("Rhythmic Head", {"netG": FILE}, KEY_MAP, SKIP)


# ---------------------------------------------------------------------------------------------
# the official tensors
# ---------------------------------------------------------------------------------------------
def _sn_conv(p: str, cin: int, cout: int, k: int, bias: bool = True) -> Shapes:
    """``sn(nn.Conv2d(cin, cout, k, bias=bias))``."""
    s: Shapes = {f"{p}.bias": (cout,)} if bias else {}
    s.update({f"{p}.weight_orig": (cout, cin, k, k), f"{p}.weight_u": (cout,), f"{p}.weight_v": (cin * k * k,)})
    return s


def _sn_linear(p: str, fin: int, fout: int) -> Shapes:
    """``sn(nn.Linear(fin, fout))``."""
    return {f"{p}.bias": (fout,), f"{p}.weight_orig": (fout, fin), f"{p}.weight_u": (fout,), f"{p}.weight_v": (fin,)}


def _bn_free(p: str, c: int) -> Shapes:
    """``SynchronizedBatchNorm2d(c, affine=False)``."""
    return {f"{p}.running_mean": (c,), f"{p}.running_var": (c,), f"{p}.num_batches_tracked": ()}


def _spade_conv2d(p: str, fin: int, fout: int) -> Shapes:
    """``SPADEConv2d(fin, fout, norm='spectralsyncbatch')``: sn conv 3x3 + SyncBN (affine)."""
    return {**_sn_conv(f"{p}.conv", fin, fout, 3), **bn_shapes(f"{p}.bn", fout)}


def _spade(p: str, norm_nc: int, hidden_nc: list[int], ks: int, params_free: bool) -> Shapes:
    """``SPADE(norm_nc, hidden_nc, norm='...syncbatch', ks, params_free)``."""
    s: Shapes = {}
    for i, nhidden in enumerate(hidden_nc):
        if not params_free or i != 0:
            suffix = str(i + 1) if i > 0 else ""
            s.update(conv_shapes(f"{p}.mlp_gamma{suffix}", nhidden, norm_nc, ks, True))
            s.update(conv_shapes(f"{p}.mlp_beta{suffix}", nhidden, norm_nc, ks, True))
    s.update(_bn_free(f"{p}.batch_norm", norm_nc))
    return s


def _norm(p: str, c: int, norm: str, hidden_nc: list[int] | None, ks: int, params_free: bool) -> Shapes:
    """``generalNorm(norm)(c, hidden_nc=..., ks=..., params_free=...)``: SPADE or SyncBN (affine)."""
    if "spade" in norm:
        return _spade(p, c, hidden_nc or [0], ks, params_free)
    return bn_shapes(p, c)


def _resnet_block(p: str, fin: int, fout: int, norm: str, hidden_nc: list[int] | None = None,
                  spade_ks: int = 1, norm_params_free: bool = False) -> Shapes:
    """``SPADEResnetBlock(fin, fout, norm, hidden_nc, conv_ks=3, spade_ks, conv_params_free=False,
    norm_params_free)``."""
    fhidden = min(fin, fout)
    s = {**_sn_conv(f"{p}.conv_0", fin, fhidden, 3), **_sn_conv(f"{p}.conv_1", fhidden, fout, 3)}
    if fin != fout:
        s.update(_sn_conv(f"{p}.conv_s", fin, fout, 1, bias=False))
    s.update(_norm(f"{p}.bn_0", fin, norm, hidden_nc, spade_ks, norm_params_free))
    s.update(_norm(f"{p}.bn_1", fhidden, norm, hidden_nc, spade_ks, norm_params_free))
    if fin != fout:
        s.update(_norm(f"{p}.bn_s", fin, norm, hidden_nc, spade_ks, norm_params_free))
    return s


def _resnet_block_concat(p: str, fin: int, fout: int, norm: str, hidden_nc: list[int], spade_ks: int,
                         norm_params_free: bool) -> Shapes:
    """``SPADEResnetBlockConcat(fin, fout, norm, hidden_nc, conv_ks=3, spade_ks, ..., norm_params_free)``."""
    fhidden = min(fin * 3, fout)
    s = {**_sn_conv(f"{p}.conv_0", fin, fhidden, 3), **_sn_conv(f"{p}.conv_1", fhidden, fout, 3)}
    if fin != fout:
        s.update(_sn_conv(f"{p}.conv_s", fin, fout, 1, bias=False))
    for i, nhidden in enumerate(hidden_nc):
        free = norm_params_free if i == 0 else False
        s.update(_spade(f"{p}.bn_0_{i}", fin, [nhidden], spade_ks, free))
        s.update(_spade(f"{p}.bn_1_{i}", fhidden, [nhidden], spade_ks, free))
    if fin != fout:
        s.update(_spade(f"{p}.bn_s", fin, hidden_nc, spade_ks, norm_params_free))
    return s


def _label_embedder(p: str, input_nc: int, ngf: int, n_downsample_S: int, netS: str, params_free_layers: int) -> Shapes:
    """``LabelEmbedder(opt, input_nc, netS, params_free_layers)`` (nf_max 1024)."""
    ch = [min(1024, ngf * 2 ** i) for i in range(n_downsample_S + 1)]
    s = conv_shapes(f"{p}.conv_first.0", input_nc, ngf, 3, True)
    for i in range(n_downsample_S):
        if i >= params_free_layers or "decoder" in netS:
            s.update(conv_shapes(f"{p}.down_{i}.0", ch[i], ch[i + 1], 3, True))
    if "decoder" in netS:
        for i in reversed(range(n_downsample_S)):
            if i >= params_free_layers:
                # ConvTranspose2d(ch[i+1], ch[i], 3): weight (in, out, k, k)
                s.update({f"{p}.up_{i}.0.weight": (ch[i + 1], ch[i], 3, 3), f"{p}.up_{i}.0.bias": (ch[i],)})
    return s


def _flow_generator(p: str, label_nc: int, output_nc: int, n_frames_G: int, nff: int, n_downsample_F: int,
                    n_blocks_F: int) -> Shapes:
    """``FlowGenerator(opt, n_frames_G)`` with ``norm_F='spectralsyncbatch'`` (sn conv without bias + SyncBN)
    and upsampling + conv in its up path (the official ``--flow_deconv`` transposed-conv variant is not
    built: the released model does not use it, and neither does our `composer.FlowGenerator`)."""
    input_nc = label_nc * n_frames_G + output_nc * (n_frames_G - 1)
    ch = [min(1024, nff * 2 ** i) for i in range(n_downsample_F + 1)]

    def norm_conv(q: str, cin: int, cout: int) -> Shapes:
        return {**_sn_conv(f"{q}.0", cin, cout, 3, bias=False), **bn_shapes(f"{q}.1", cout)}

    s = norm_conv(f"{p}.down_flow.0", input_nc, nff)
    for i in range(n_downsample_F):  # [norm_conv, activation] pairs
        s.update(norm_conv(f"{p}.down_flow.{2 * (i + 1)}", ch[i], ch[i + 1]))
    ch_r = min(1024, nff * 2 ** n_downsample_F)
    for i in range(n_blocks_F):
        s.update(_resnet_block(f"{p}.res_flow.{i}", ch_r, ch_r, "spectralsyncbatch"))
    for j, i in enumerate(reversed(range(n_downsample_F))):
        s.update(norm_conv(f"{p}.up_flow.{3 * j + 1}", ch[i + 1], ch[i]))  # [Upsample, norm_conv, activation]
    s.update(conv_shapes(f"{p}.conv_flow.0", nff, 2, 3, True))
    s.update(conv_shapes(f"{p}.conv_w.0", nff, 1, 3, True))
    return s


def official_shapes(ngf: int = 32, n_downsample_G: int = 5, n_downsample_A: int = 2, n_adaptive_layers: int = 4,
                    n_fc_layers: int = 2, embed_ks: int = 1, spade_ks: int = 1, n_sc_layers: int = 2,
                    use_new: bool = True, n_shot: int = 8, warp_ref: bool = True, warp_ani: bool = True,
                    nff: int = 32, n_downsample_F: int = 3, n_blocks_F: int = 6, label_nc: int = 1,
                    output_nc: int = 3, norm_G: str = "spectralspadesyncbatch", netS: str = "encoderdecoder",
                    sc_arch: str = "encoder", temporal: bool = False) -> dict[str, Shapes]:
    """Every tensor of the official ``SpadeCombineModule(opt)`` state dict: {"netG": {key: shape}}.

    Defaults: the released model (``options/base_options.py`` defaults with ``--adaptive_spade
    --warp_ref --warp_ani --spade_combine --add_raw_loss --n_frames_G 1 --n_shot 8 --use_new``;
    ``input_nc`` 1 (``label_nc`` 0) and ``output_nc`` 3 from the dataset options); ``use_new=False``
    the layout of the demo script. temporal: add the tensors ``set_flow_prev`` creates
    (``img_prev_embedding``, ``warp.flow_network_temp`` with ``n_frames_G`` 2).
    """
    nf_max = min(1024, ngf * 2 ** n_downsample_G)
    ch = [min(nf_max, ngf * 2 ** i) for i in range(n_downsample_G + 2)]
    ch_hidden = [[ch[i]] if i >= n_sc_layers else [ch[i]] * 4 for i in range(n_downsample_G + 1)]  # spade_combine
    norm_ref = norm_G.replace("spade", "")
    s: Shapes = {}
    g = "netG"
    # FewShotGenerator
    if use_new:
        e = f"{g}.encoder"
        s.update(_spade_conv2d(f"{e}.conv1", output_nc, ngf))
        s.update(_spade_conv2d(f"{e}.conv2", label_nc, ngf))
        for i in range(n_downsample_G):
            c_in, c_out = ch[i], ch[i + 1]
            s.update(_spade_conv2d(f"{e}.ref_down_img_{i}", c_in, c_out))
            s.update(_spade_conv2d(f"{e}.ref_down_lmark_{i}", c_in, c_out))
            if n_shot > 1 and i == n_downsample_A - 1:
                s.update(_spade_conv2d(f"{e}.fusion1", 2 * c_out, c_out))
                s.update(_spade_conv2d(f"{e}.fusion2", 2 * c_out, c_out))
                s.update(_resnet_block(f"{e}.fusion", 2 * c_out, c_out, norm_ref))
                s.update(_spade_conv2d(f"{e}.atten1", c_out * n_shot, c_out))
                s.update(_spade_conv2d(f"{e}.atten2", c_out * n_shot, c_out))
    else:
        for name, nc in (("image_encoder", output_nc), ("lmark_encoder", label_nc)):
            s.update(_spade_conv2d(f"{g}.{name}.conv1", nc, ngf))
            for i in range(n_downsample_G):
                s.update(_spade_conv2d(f"{g}.{name}.ref_down_{i}", ch[i], ch[i + 1]))
    for i in range(n_downsample_G):
        s.update(_spade_conv2d(f"{g}.comb_encoder.ref_img_up_{i}", ch[i + 1], ch[i]))
        s.update(_spade_conv2d(f"{g}.comb_encoder.ref_label_up_{i}", ch[i + 1], ch[i]))
    s.update(_spade_conv2d(f"{g}.atten_gen.atn_query_first", label_nc, ngf))
    s.update(_spade_conv2d(f"{g}.atten_gen.atn_key_first", label_nc, ngf))
    for i in range(n_downsample_A):
        s.update(_spade_conv2d(f"{g}.atten_gen.atn_key_{i}", ch[i], ch[i + 1]))
        s.update(_spade_conv2d(f"{g}.atten_gen.atn_query_{i}", ch[i], ch[i + 1]))
    for i in range(n_adaptive_layers):  # WeightGen (adaptive_spade, adaptive embed)
        ch_in, ch_out, ch_h = ch[i], ch[i + 1], ch_hidden[i][0]
        fc0 = fcs = (ch_h * spade_ks ** 2 + 1) * 2
        fc1 = (ch_h * spade_ks ** 2 + 1) * (1 if ch_in != ch_out else 2)
        fce = ch_in * embed_ks ** 2 + 1
        for name, out in (("fc_spade_0", fc0), ("fc_spade_1", fc1), ("fc_spade_s", fcs), ("fc_spade_e", fce)):
            q = f"{g}.weight_gen.{name}_{i}"
            for k in range(n_fc_layers):
                s.update(_sn_linear(f"{q}.{k}", ch_out, ch_out))
            s.update(_sn_linear(f"{q}.{n_fc_layers}", ch_out, out))
    s.update(_label_embedder(f"{g}.label_embedding", label_nc, ngf, n_downsample_G, netS, n_adaptive_layers))
    for i in reversed(range(n_downsample_G + 1)):
        free = i < n_adaptive_layers
        if i >= n_sc_layers or not use_new:
            s.update(_resnet_block(f"{g}.up_{i}", ch[i + 1], ch[i], norm_G, ch_hidden[i], spade_ks, free))
        else:
            s.update(_resnet_block_concat(f"{g}.up_{i}", ch[i + 1], ch[i], norm_G, ch_hidden[i], spade_ks, free))
    s.update(conv_shapes(f"{g}.conv_img", ngf, 3, 3, True))
    # WarpModule: FlowGenerator(opt, 2) per branch
    if warp_ref:
        s.update(_flow_generator("warp.flow_network_ref", label_nc, output_nc, 2, nff, n_downsample_F, n_blocks_F))
    if warp_ani:
        s.update(_flow_generator("warp.flow_network_ani", label_nc, output_nc, 2, nff, n_downsample_F, n_blocks_F))
    # get_SPADE_embed
    s.update(_label_embedder("img_ref_embedding", output_nc + 1, ngf, n_downsample_G, sc_arch, 0))
    s.update(_label_embedder("img_ani_embedding", output_nc + 1, ngf, n_downsample_G, sc_arch, 0))
    if temporal:
        s.update(_label_embedder("img_prev_embedding", output_nc + 1, ngf, n_downsample_G, sc_arch, 0))
        s.update(_flow_generator("warp.flow_network_temp", label_nc, output_nc, 2, nff, n_downsample_F, n_blocks_F))
    return {"netG": s}


def official_options(cfg: ComposerConfig) -> dict:
    """The `official_shapes` arguments (official option names) of a `ComposerConfig`."""
    if cfg.max_channels != 1024:
        raise ValueError("the official networks cap widths at 1024 (max_channels)")
    return dict(ngf=cfg.ngf, n_downsample_G=cfg.n_downsample_G, n_downsample_A=cfg.n_downsample_A,
                n_adaptive_layers=cfg.n_adaptive_layers, n_fc_layers=cfg.n_fc_layers, embed_ks=cfg.embed_ks,
                spade_ks=cfg.spade_ks, n_sc_layers=cfg.n_sc_layers, use_new=cfg.hybrid, n_shot=cfg.n_shot,
                warp_ref=cfg.warp_ref, warp_ani=cfg.warp_ani, nff=cfg.nff, n_downsample_F=cfg.n_downsample_F,
                n_blocks_F=cfg.n_blocks_F, label_nc=cfg.label_nc, output_nc=cfg.image_nc)


# ---------------------------------------------------------------------------------------------
# mapping and loading
# ---------------------------------------------------------------------------------------------
def check_key_map(model: Composer, shapes: dict[str, Shapes] | None = None) -> dict[str, list[str]]:
    """Compare the official tensors (default: those of `model`'s config) with `model`'s state dict
    through `KEYMAP`: {"unmapped", "missing", "mismatched", "uncovered", "skipped"}; all but "skipped"
    empty means the map is complete."""
    return KEYMAP.check(model, shapes or official_shapes(**official_options(model.cfg)))


def map_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official file's state dict -> {our key: tensor} (``module.`` removed, `SKIP` dropped); a
    key outside the map is a ValueError naming the file."""
    return KEYMAP.map_state_dict("netG", state)[0]


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> set[int]:
    """The integers captured by `pattern` (one group) over the keys of `state`."""
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in state if (m := rx.match(k))}


def config_from_state_dict(state: Mapping[str, torch.Tensor], name: str = FILE,
                           base: ComposerConfig | None = None) -> ComposerConfig:
    """The `ComposerConfig` an official-format state dict was built with, read from its tensors:
    layout (``netG.encoder.*``: hybrid; ``netG.image_encoder.*``: few-shot-vid2vid), K of the hybrid
    layers (input width of ``netG.encoder.atten1``; 1 without them), widths (``ngf``, ``nff``), depths
    (decoder layers, E_A downsamplings, adaptive layers, MLP depth, composition layers, flow
    downsamplings and residual blocks), kernels (``spade_ks``, ``embed_ks``), channels and which
    flow networks exist. What a state dict cannot tell (``image_size``: the networks are fully
    convolutional; ``raw_output``, ``flow_multiplier``, ``init_gain``; ``ani_first``: the order of the
    warped-image maps, whose slots have identical shapes; the flow sizes when no flow network is
    present) comes from `base` (default: paper). A state dict that is not an official
    generator is a ValueError naming the file."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    base = base or ComposerConfig.paper()
    if "netG.encoder.conv1.conv.weight_orig" in state:
        hybrid = True
    elif "netG.image_encoder.conv1.conv.weight_orig" in state:
        hybrid = False
    else:
        raise ValueError(f"{name}: not a Rhythmic Head generator (no netG.encoder.* or netG.image_encoder.* tensors)")
    try:
        first = state["netG.label_embedding.conv_first.0.weight"]
        ngf, label_nc = int(first.shape[0]), int(first.shape[1])
        image_nc = int(state["netG.conv_img.weight"].shape[0])
        n_down = max(_indices(state, r"netG\.up_(\d+)\."))
        n_adaptive = len(_indices(state, r"netG\.weight_gen\.fc_spade_e_(\d+)\."))
        n_fc = max(_indices(state, r"netG\.weight_gen\.fc_spade_0_0\.(\d+)\.")) if n_adaptive else base.n_fc_layers
        embed_out = int(state[f"netG.weight_gen.fc_spade_e_0.{n_fc}.weight_orig"].shape[0]) if n_adaptive else None
        spade_ks = int(state[f"netG.up_{n_down}.bn_0.mlp_gamma.weight"].shape[-1])
        second = r"netG\.up_(\d+)\.bn_0_1\." if hybrid else r"netG\.up_(\d+)\.bn_0\.mlp_gamma2\."
        values = dict(ngf=ngf, label_nc=label_nc, image_nc=image_nc, hybrid=hybrid, n_downsample_G=n_down,
                      n_downsample_A=len(_indices(state, r"netG\.atten_gen\.atn_key_(\d+)\.")),
                      n_adaptive_layers=n_adaptive, n_fc_layers=n_fc, spade_ks=spade_ks,
                      n_sc_layers=len(_indices(state, second)),
                      warp_ref=any(k.startswith("warp.flow_network_ref.") for k in state),
                      warp_ani=any(k.startswith("warp.flow_network_ani.") for k in state))
        if embed_out is not None:
            values["embed_ks"] = round(((embed_out - 1) / ngf) ** 0.5)
        atten = state.get("netG.encoder.atten1.conv.weight_orig")
        if hybrid:
            level = min(1024, ngf * 2 ** n_down, ngf * 2 ** values["n_downsample_A"])  # official ch[n_downsample_A]
            values["n_shot"] = int(atten.shape[1]) // level if atten is not None else 1
        flow_prefixes = ("warp.flow_network_ref.", "warp.flow_network_ani.")
        flows = sorted({k.split(".")[1] for k in state if k.startswith(flow_prefixes)})
        if flows:
            f = f"warp.{flows[0]}."
            values["nff"] = int(state[f"{f}down_flow.0.0.weight_orig"].shape[0])
            values["n_downsample_F"] = len(_indices(state, rf"{re.escape(f)}up_flow\.(\d+)\.0\.weight_orig"))
            values["n_blocks_F"] = len(_indices(state, rf"{re.escape(f)}res_flow\.(\d+)\."))
        return replace(base, **values)
    except (KeyError, ValueError, AttributeError) as error:
        raise ValueError(f"{name}: not a complete Rhythmic Head generator ({type(error).__name__}: {error})") from error


def _resolve(path_or_folder: str | Path | None) -> tuple[dict[str, torch.Tensor], str]:
    if path_or_folder is None:
        from talkinghead import weights

        path = weights.resolve(ASSET)  # MissingWeightsError naming the file and where to get it
        return read_state_dict(path), str(path)
    path = Path(path_or_folder)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (the official Rhythmic Head release has {FILE}; "
                                f"see the README of lelechen63/Talking-head-Generation-with-Rhythmic-Head-Motion)")
    return read_state_dict(path), str(path)


def load_official(path_or_folder: str | Path | None = None, model: Composer | None = None) -> Composer:
    """`model` (default: a `Composer` of the file's config, `config_from_state_dict`) with the
    official generator weights, in eval mode.

    path_or_folder: ``latest_net_G.pth`` or a folder holding it; None looks it up through
    `talkinghead.weights` (asset ``rhythmic_G``; a missing file raises `MissingWeightsError` naming it
    and where to get it). A missing or unreadable file, a key outside the map, a tensor of the wrong
    shape, a tensor of ours the file lacks, or a `model` of the other layout / another K is an error
    naming the file. `SKIP` tensors (temporal branch) are dropped, as the official loader does.
    """
    state, name = _resolve(path_or_folder)
    found = config_from_state_dict(state, name)
    if model is None:
        model = Composer(found)
    elif (model.cfg.hybrid, model.cfg.hybrid and model.cfg.n_shot) != (found.hybrid, found.hybrid and found.n_shot):
        raise ValueError(f"{name} holds the {'hybrid' if found.hybrid else 'few-shot-vid2vid'} layout"
                         f"{f' with K = {found.n_shot}' if found.hybrid else ''}; the model is "
                         f"{'hybrid' if model.cfg.hybrid else 'few-shot-vid2vid'}"
                         f"{f' with K = {model.cfg.n_shot}' if model.cfg.hybrid else ''} "
                         f"(build it with config_from_state_dict)")
    keymap = replace(KEYMAP, files={"netG": name})
    keymap.load_into(model, {"netG": state}, hint=" (the released file is paper size)")
    return model.eval()
