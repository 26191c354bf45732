"""Rhythmic Head's 3D-aware generative network Theta (Chen et al., ECCV 2020, Sec. 4.2-4.3).

`Composer(ComposerConfig.paper())` is the official generator ``SpadeCombineModule``
(lelechen63/Talking-head-Generation-with-Rhythmic-Head-Motion, ``models/modules/spade_combine.py``,
built on NVlabs few-shot-vid2vid) under the official attribute names, so its state dict has the keys
of the released ``latest_net_G.pth`` (see `talkinghead.methods.rhythmic.official`):

====================================  =====================================  ===========================
ours (official class)                  paper                                  role
====================================  =====================================  ===========================
``netG`` `EmbeddingGenerator`          hybrid embedding (Sec. 4.2) + decoder  reference encoders, weight
(``FewShotGenerator``)                 G of the composition (Sec. 4.3)        generation, SPADE decoder
``netG.atten_gen`` `ActivationEncoder` activation encoder E_A, Eq. 3          alpha_k = softmax over K of
(``AttenGen``)                                                                <E_A(l_k), E_A(l_t)>
``netG.encoder`` `HybridEncoder`       image / landmark encoders E_I, E_L     q_y, q_l per reference,
(``EncoderSelfAtten``)                 with information exchange, bottleneck  information exchange,
                                       and ConvGate, Eq. 4 and 6              ConvGate, alpha-weighted sum
``netG.comb_encoder``                  fusion E_F: softmax(E_FL(e_l)) .       per level l a (C_l x C_l)
`CombinationEncoder` (``CombEncoder``) E_FI(e_y), Eq. 7                       image x softmax-label product
``netG.weight_gen`` `WeightGenerator`  E_FP of Eq. 7: theta_gamma and         SPADE weights of decoder
(``WeightGen``)                        theta_beta (SPADE), theta_S (label     layers and label-embedding
                                       embedding)                             up-convolutions
``netG.label_embedding``               phi_{l_t}: label features with the     target-landmark features at
`LabelEmbedder`                        generated weights theta_S              every decoder resolution
``netG.up_{i}``, ``netG.conv_img``     decoder G: SPADE residual blocks;      frame from the aggregated
(``SPADEResnetBlock[Concat]``)         the first n_sc layers denormalise in   appearance e_y
                                       parallel with phi_{l_t}, phi_{y_ts},
                                       phi_{y~_t} (Fig. 6), tanh output
``warp.flow_network_ref`` /            "FlowNet" of Sec. 4.3: flow and        warp the matched reference
``warp.flow_network_ani``              attention map for y_ts and for the     y_ts and the rendered y~_t
`FlowGenerator` (``FlowGenerator``)    projected y~_t                         to the target landmarks
``img_ref_embedding`` /                phi_{y_ts}, phi_{y~_t}: fixed-weight    features of [warped image,
``img_ani_embedding`` `LabelEmbedder`  encoders of the warped images          flow attention map]
====================================  =====================================  ===========================

``ComposerConfig.hybrid=False`` gives the official layout without ``--use_new`` (the
few-shot-vid2vid embedding: separate ``netG.image_encoder`` / ``netG.lmark_encoder`` aggregated by
alpha alone, and decoder layers that apply the label, reference and animation SPADEs in sequence),
which the official demo script (``scripts/test_demo.sh``) runs; the README's command line and the
paper's hybrid embedding / parallel composition use ``--use_new`` (our default).

Inputs (S = ``image_size``, K references, N batch):

* ``label``: target landmark edge map l_t, (N, 1, S, S), values in [0, 1] (the official dataset
  draws the 68-point edges plus a mirrored upper face at 255 on 0 and applies ``ToTensor`` only;
  no [-1, 1] scaling).
* ``ref_labels`` (N, K, 1, S, S) / ``ref_images`` (N, K, 3, S, S): the K reference frames y_{1:K}
  and their edge maps (images RGB in [-1, 1]).
* ``warp_ref_label`` (N, 1, S, S) / ``warp_ref_image`` (N, 3, S, S): the matched reference y_ts
  (the reference whose head pose is closest to the target's, Eq. 2; chosen by the caller).
* ``ani_label`` (N, 1, S, S) / ``ani_image`` (N, 3, S, S): the 3D-rendered frame y~_t (the mesh of
  the most frontal reference posed with the target's head motion) and its edge map (the canonical
  landmarks under the same pose). A missing warp input (None) skips that branch, as the official
  module does.

`Composer.forward` returns a `ComposerOutput`: the frame (N, 3, S, S) in (-1, 1), the "raw" frame
(the same decoder conditioned on the target landmarks only in its composition layers; the official
``add_raw_loss`` output, trained with the same image losses), the warped images (N, 3, S, S), the
flows (N, 2, S, S; pixels, channel 0 = x, 1 = y, added to the sampling position of each output
pixel), the flow attention maps (N, 1, S, S) in (0, 1), the activation map alpha (N, K, (S/2^A)^2),
softmax over K, A = ``n_downsample_A``) and the index of the reference with the largest total
activation (N,).

Training (official ``models/loss_collector.py``, ``--lambda_flow 10``): besides the image losses
on ``image`` and ``raw``, a warp L1 per flow: ``|warped_ref - target|`` and ``|warped_ani -
target * ani_mask|`` (the target cropped to the rendered face), x10. The official also has a flow
L1 against FlowNet2 optical flow between the frames (``loss_F_Flow``, masked by FlowNet2's
confidence) and an optional attention-map loss (``--use_weight_loss``, off in the paper's runs);
FlowNet2 only ever supervises, it is no part of the generator. We do not use FlowNet2: a trainer
supervises the flows with the warp L1 alone (the paper's L_W, "flow loss", names no ground-truth
flow). The attention map's official loss can be computed from these outputs (`ComposerOutput`).

Deviations from the official module (none changes the function of the released weights):

* Synchronized BatchNorm -> ``nn.BatchNorm2d`` (same tensors; convert with
  ``nn.SyncBatchNorm.convert_sync_batchnorm`` for multi-GPU statistics).
* Spectral norm through `talkinghead.nn.spade.SNConv2d` / `SNLinear`: the tensors and arithmetic of
  ``torch.nn.utils.spectral_norm`` (bit-identical outputs), but copyable after a forward; a new
  layer's ``weight_u`` / ``weight_v`` start from three power iterations (the hook leaves them random
  until the first training forward, which makes an untrained paper-size network overflow in eval).
* The paper sums the denormalised features of a composition layer and upsamples with a transposed
  convolution (Sec. 4.3); the official code (what we build) averages them and upsamples by nearest
  neighbour between the SPADE residual blocks.
* The per-sample (generated-weight) convolutions run as one grouped convolution instead of a Python
  loop, and the fusion product of `CombinationEncoder` as a batched matrix product instead of a
  broadcast sum (same arithmetic up to summation order).
* Parameters that exist in the official module (and the released file) but can never influence
  the output are built and loaded but frozen (``requires_grad=False``; `Composer.unused_parameter_names`):
  the deeper levels of ``img_ref_embedding`` / ``img_ani_embedding`` (only the first ``n_sc_layers``
  levels are used; the official computes and discards the rest, we do not compute them),
  ``netG.comb_encoder.ref_img_up_0`` / ``ref_label_up_0`` (level 0 of the fusion features is
  computed and never read; we skip it), the SPADE convs of the previous-frame slot (map 3: the
  temporal branch, ``n_frames_G > 1``, which the release does not use and we do not build: no
  ``img_prev_embedding``, no ``warp.flow_network_temp``) and of a disabled warp branch.
* Not built: the ablations ``--no_warp`` (compose with unwarped images), ``--no_atten`` (mean
  embedding), the linear composition module ``LinearCombineModule``, the weight caching of
  inference for t > 0, and the official face refiner (never released).
* Initialisation as the official ``init_weights('xavier', 0.02)`` ends up doing when the network is
  on a GPU first (``define_G`` calls ``.cuda()`` before it): xavier-normal (gain 0.02) weights and
  zero biases for the plain convolutions / linear layers, N(1, 0.02) scale and zero shift for the
  affine BatchNorms; the spectral-norm layers keep PyTorch's default initialisation (the official
  init writes into their stale ``weight`` attribute). ``init_gain=0`` keeps PyTorch's defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nn.config import ConfigDict
from talkinghead.nn.spade import (
    SNConv2d,
    SNConvBlock,
    SNLinear,
    SPADEParallelResBlock,
    SPADEResBlock,
    lrelu,
    per_sample_conv_transpose2d,
)

__all__ = [
    "ActivationEncoder",
    "CombinationEncoder",
    "Composer",
    "ComposerConfig",
    "ComposerOutput",
    "EmbeddingGenerator",
    "FlowGenerator",
    "HybridEncoder",
    "LabelEmbedder",
    "MAP_SLOTS",
    "ReferenceEncoder",
    "WarpModule",
    "WeightGenerator",
    "flow_warp",
]

#: The conditioning maps of the composition layers, in the order of the newest official
#: ``SPADE_combine`` (commit 265eaf6); ``ComposerConfig.ani_first`` swaps ref and ani (earlier commit).
MAP_SLOTS = ("label", "ref", "ani", "prev")


@dataclass(frozen=True)
class ComposerConfig(ConfigDict):
    """Sizes of the generator Theta. `paper()`: the official defaults the released model was trained
    with at 256 px (``options/base_options.py`` + ``--adaptive_spade --warp_ref --warp_ani
    --spade_combine --add_raw_loss --n_frames_G 1``, K = 8); `tiny()`: 64 px for CPU tests.

    image_size:        S of frames, labels and references (paper 256; official ``fineSize``).
    label_nc:          channels of the landmark edge maps (official ``input_nc`` 1).
    image_nc:          image channels (official ``output_nc`` 3).
    ngf:               base width (official 32); level i has min(max_channels, ngf 2^i) channels.
    max_channels:      width cap (official 1024).
    n_downsample_G:    downsamplings of the reference encoders / label embedding = decoder layers
                       minus one (official 5: 256 -> 8).
    n_downsample_A:    downsamplings of E_A; the references are combined at that level (official 2).
    n_adaptive_layers: decoder layers (from the finest) whose SPADE map-0 weights and label-embedding
                       up-convolutions are generated (official 4).
    n_fc_layers:       hidden linear layers of each weight-generation MLP (official 2).
    embed_ks:          kernel of the generated label-embedding convolutions (official 1).
    spade_ks:          kernel of the SPADE gamma / beta convolutions (official 1).
    n_sc_layers:       finest decoder layers that compose with the warped images (official 2).
    hybrid:            the paper's hybrid embedding and parallel composition (official ``--use_new``);
                       False: the few-shot-vid2vid layout (see the module docstring).
    n_shot:            K the hybrid information-exchange / ConvGate layers are built for (their input
                       is the K references stacked); the hybrid module then runs with K = n_shot or
                       K = 1 (which skips them, as the official does). The released ``face8_*``
                       models were trained with K = 8; the paper reports K = 1, 8, 32.
    warp_ref, warp_ani: build the flow network of the matched reference / of the rendered frame.
    raw_output:        also decode the "raw" frame (official ``add_raw_loss``; no parameters).
    ani_first:         order of the warped-image maps in the composition layers: False = [label, ref,
                       ani, prev] (newest official ``SPADE_combine``, commit 265eaf6), True = [label,
                       ani, ref, prev] (an earlier commit, 190e66b). The slots have identical shapes,
                       so a released file does not tell which order it was trained with.
    nff, n_downsample_F, n_blocks_F: flow networks' base width, downsamplings, residual blocks
                       (official 32, 3, 6).
    flow_multiplier:   scale of the flow output (official 20).
    init_gain:         gain of the official xavier initialisation (0.02; 0 = PyTorch defaults).
    """

    image_size: int = 256
    label_nc: int = 1
    image_nc: int = 3
    ngf: int = 32
    max_channels: int = 1024
    n_downsample_G: int = 5
    n_downsample_A: int = 2
    n_adaptive_layers: int = 4
    n_fc_layers: int = 2
    embed_ks: int = 1
    spade_ks: int = 1
    n_sc_layers: int = 2
    hybrid: bool = True
    n_shot: int = 8
    warp_ref: bool = True
    warp_ani: bool = True
    raw_output: bool = True
    ani_first: bool = False
    nff: int = 32
    n_downsample_F: int = 3
    n_blocks_F: int = 6
    flow_multiplier: float = 20.0
    init_gain: float = 0.02

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def paper(cls, **overrides) -> "ComposerConfig":
        """The released model: 256 px, ngf 32, 5 downsamplings, 4 adaptive layers, K = 8, hybrid."""
        return replace(cls(), **overrides)

    @classmethod
    def tiny(cls, **overrides) -> "ComposerConfig":
        """64 px, ngf 8, 3 downsamplings, 2 adaptive layers, K = 2, one flow residual block."""
        base = cls(image_size=64, ngf=8, n_downsample_G=3, n_downsample_A=2, n_adaptive_layers=2, n_fc_layers=2,
                   n_sc_layers=2, n_shot=2, nff=8, n_downsample_F=2, n_blocks_F=1)
        return replace(base, **overrides)

    # -- derived sizes ------------------------------------------------------------------------
    @property
    def channels(self) -> list[int]:
        """Width of every level 0 .. n_downsample_G + 1 (the official ``ch``; the last two are equal
        once the cap is reached; level n_downsample_G + 1 is the input width of the coarsest decoder
        layer)."""
        cap = min(self.max_channels, self.ngf * 2 ** self.n_downsample_G)
        return [min(cap, self.ngf * 2 ** i) for i in range(self.n_downsample_G + 2)]

    @property
    def hidden_nc(self) -> list[list[int]]:
        """SPADE map widths of decoder layer i (official ``ch_hidden``): four maps (label, ref, ani,
        prev) in the composition layers, the label only above."""
        ch = self.channels
        return [[ch[i]] * (len(MAP_SLOTS) if i < self.n_sc_layers else 1) for i in range(self.n_downsample_G + 1)]

    @property
    def map_slots(self) -> tuple[str, ...]:
        """The conditioning maps of a composition layer, in order (`MAP_SLOTS`, or with ref and ani
        swapped under ``ani_first``)."""
        return ("label", "ani", "ref", "prev") if self.ani_first else MAP_SLOTS

    @property
    def flow_channels(self) -> list[int]:
        return [min(self.max_channels, self.nff * 2 ** i) for i in range(self.n_downsample_F + 1)]

    @property
    def attention_size(self) -> int:
        """Side of the activation map alpha (S / 2^n_downsample_A)."""
        return self.image_size // 2 ** self.n_downsample_A

    def validate(self) -> None:
        name = type(self).__name__
        sizes = {k: getattr(self, k) for k in ("image_size", "label_nc", "image_nc", "ngf", "max_channels",
                                               "n_downsample_G", "n_downsample_A", "n_adaptive_layers",
                                               "n_fc_layers", "embed_ks", "spade_ks", "n_sc_layers", "n_shot",
                                               "nff", "n_downsample_F")}
        bad = {k: v for k, v in sizes.items() if int(v) < 1}
        if bad or self.n_blocks_F < 0:
            got = bad or {"n_blocks_F": self.n_blocks_F}
            raise ValueError(f"{name}: sizes must be >= 1 (n_blocks_F >= 0), got {got}")
        if self.embed_ks % 2 == 0 or self.spade_ks % 2 == 0:
            raise ValueError(f"{name}: embed_ks and spade_ks must be odd, got {self.embed_ks}, {self.spade_ks}")
        if self.n_downsample_A > self.n_downsample_G:
            raise ValueError(f"{name}: n_downsample_A ({self.n_downsample_A}) > n_downsample_G ({self.n_downsample_G})")
        if self.n_adaptive_layers > self.n_downsample_G:
            raise ValueError(f"{name}: n_adaptive_layers ({self.n_adaptive_layers}) > n_downsample_G "
                             f"({self.n_downsample_G})")
        if self.n_sc_layers > self.n_downsample_G + 1:
            raise ValueError(f"{name}: n_sc_layers ({self.n_sc_layers}) > decoder layers ({self.n_downsample_G + 1})")
        factor = 2 ** max(self.n_downsample_G, self.n_downsample_F)
        if self.image_size % factor:
            raise ValueError(f"{name}: image_size {self.image_size} is not divisible by {factor}")
        ch = self.channels
        for i in range(self.n_adaptive_layers):
            # the official WeightGen sizes its fc_spade_1 output for these two cases only
            if ch[i + 1] not in (ch[i], 2 * ch[i]):
                raise ValueError(f"{name}: adaptive layer {i} needs level {i + 1} width = 1 or 2 x level {i} "
                                 f"width, got {ch[i]} -> {ch[i + 1]}")


class ComposerOutput(NamedTuple):
    """What `Composer.forward` returns (shapes in the module docstring; None: branch not run)."""

    image: torch.Tensor
    raw: torch.Tensor | None
    warped_ref: torch.Tensor | None
    warped_ani: torch.Tensor | None
    flow_ref: torch.Tensor | None
    flow_ani: torch.Tensor | None
    weight_ref: torch.Tensor | None
    weight_ani: torch.Tensor | None
    attention: torch.Tensor
    ref_idx: torch.Tensor


def flow_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample image (N, C, H, W) at each pixel's position plus flow (N, 2, H, W; pixels, x then y):
    bilinear, border padding, corner-aligned grid (official ``BaseNetwork.resample``, PyTorch 1.3)."""
    n, _, h, w = image.shape
    ys = torch.linspace(-1.0, 1.0, h, device=image.device, dtype=image.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=image.device, dtype=image.dtype)
    grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)], dim=-1).unsqueeze(0)
    offset = torch.stack([flow[:, 0] / ((w - 1.0) / 2.0), flow[:, 1] / ((h - 1.0) / 2.0)], dim=-1)
    return F.grid_sample(image, grid + offset, mode="bilinear", padding_mode="border", align_corners=True)


def _weighted_sum(x: torch.Tensor, attention: torch.Tensor, k: int) -> torch.Tensor:
    """x (N K, C, h, w), attention (N, K, h w) -> sum_k alpha_k x_k, (N, C, h, w)."""
    b, c, h, w = x.shape
    x = x.reshape(b // k, k, c, h * w)
    return (x * attention.unsqueeze(2)).sum(dim=1).reshape(b // k, c, h, w)


# ---------------------------------------------------------------------------------------------
# hybrid embedding
# ---------------------------------------------------------------------------------------------
class ActivationEncoder(nn.Module):
    """E_A (official ``AttenGen``): query = target label, keys = reference labels, each through a
    conv block and n_downsample_A stride-2 conv blocks; alpha = softmax over K of the channel dot
    product at every position (Eq. 3)."""

    def __init__(self, label_nc: int, channels: Sequence[int], n_downsample_A: int) -> None:
        super().__init__()
        self.n_downsample_A = n_downsample_A
        self.atn_query_first = SNConvBlock(label_nc, channels[0])
        self.atn_key_first = SNConvBlock(label_nc, channels[0])
        for i in range(n_downsample_A):
            setattr(self, f"atn_key_{i}", SNConvBlock(channels[i], channels[i + 1], stride=2))
            setattr(self, f"atn_query_{i}", SNConvBlock(channels[i], channels[i + 1], stride=2))

    def forward(self, label: torch.Tensor, label_ref: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """label (N, L, S, S), label_ref (N K, L, S, S) -> alpha (N, K, h w), most activated ref (N,)."""
        key, query = self.atn_key_first(label_ref), self.atn_query_first(label)
        for i in range(self.n_downsample_A):
            key = getattr(self, f"atn_key_{i}")(key)
            query = getattr(self, f"atn_query_{i}")(query)
        b, c, h, w = key.shape
        key = key.reshape(b // k, k, c, h * w)
        energy = (key * query.reshape(b // k, 1, c, h * w)).sum(dim=2)
        attention = torch.softmax(energy, dim=1)
        return attention, attention.sum(dim=2).argmax(dim=1)


class ReferenceEncoder(nn.Module):
    """One modality's reference encoder of the few-shot-vid2vid layout (official ``Encoder``): conv
    block, n_downsample_G stride-2 conv blocks; K references combined by alpha after level
    n_downsample_A."""

    def __init__(self, in_nc: int, channels: Sequence[int], n_downsample_G: int, n_downsample_A: int) -> None:
        super().__init__()
        self.n_downsample_G, self.n_downsample_A = n_downsample_G, n_downsample_A
        self.conv1 = SNConvBlock(in_nc, channels[0])
        for i in range(n_downsample_G):
            setattr(self, f"ref_down_{i}", SNConvBlock(channels[i], channels[i + 1], stride=2))

    def forward(self, x: torch.Tensor, attention: torch.Tensor, k: int) -> torch.Tensor:
        """x (N K, C, S, S) -> (N, ch[n_downsample_G], S/2^G, S/2^G)."""
        x = self.conv1(x)
        for i in range(self.n_downsample_G):
            x = getattr(self, f"ref_down_{i}")(x)
            if k > 1 and i == self.n_downsample_A - 1:
                x = _weighted_sum(x, attention, k)
        return x


class HybridEncoder(nn.Module):
    """E_I and E_L with information exchange (official ``EncoderSelfAtten``, Eq. 4 and 6).

    Image and landmark branches (``conv1`` / ``conv2``, then ``ref_down_img_{i}`` /
    ``ref_down_lmark_{i}``); after level n_downsample_A with K > 1 references:
    ``fusion`` (a residual block on [q_y, q_l], the information exchange), ``fusion1`` / ``fusion2``
    (bottleneck of [q, exchanged] -> q'), ``atten1`` / ``atten2`` (ConvGate: one conv block over
    the K references stacked on channels), and q = sum_k alpha_k q'_k + ConvGate(q_{1:K}) per branch.
    """

    def __init__(self, image_nc: int, label_nc: int, channels: Sequence[int], n_downsample_G: int,
                 n_downsample_A: int, n_shot: int) -> None:
        super().__init__()
        self.n_downsample_G, self.n_downsample_A, self.n_shot = n_downsample_G, n_downsample_A, n_shot
        self.conv1 = SNConvBlock(image_nc, channels[0])
        self.conv2 = SNConvBlock(label_nc, channels[0])
        for i in range(n_downsample_G):
            c_in, c_out = channels[i], channels[i + 1]
            setattr(self, f"ref_down_img_{i}", SNConvBlock(c_in, c_out, stride=2))
            setattr(self, f"ref_down_lmark_{i}", SNConvBlock(c_in, c_out, stride=2))
            if n_shot > 1 and i == n_downsample_A - 1:
                self.fusion1 = SNConvBlock(2 * c_out, c_out)
                self.fusion2 = SNConvBlock(2 * c_out, c_out)
                self.fusion = SPADEResBlock(2 * c_out, c_out)
                self.atten1 = SNConvBlock(c_out * n_shot, c_out)
                self.atten2 = SNConvBlock(c_out * n_shot, c_out)

    def forward(self, x: torch.Tensor, x_label: torch.Tensor, attention: torch.Tensor, k: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N K, 3, S, S), x_label (N K, L, S, S) -> e_y, e_l, each (N, ch[G], S/2^G, S/2^G)."""
        if k > 1 and k != self.n_shot:
            raise ValueError(f"the hybrid embedding was built for K = {self.n_shot} references (or 1), got {k}")
        x, x_label = self.conv1(x), self.conv2(x_label)
        for i in range(self.n_downsample_G):
            x = getattr(self, f"ref_down_img_{i}")(x)
            x_label = getattr(self, f"ref_down_lmark_{i}")(x_label)
            if k > 1 and i == self.n_downsample_A - 1:
                x, x_label = self.exchange(x, x_label, attention, k)
        return x, x_label

    def exchange(self, x: torch.Tensor, x_label: torch.Tensor, attention: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        exchanged = self.fusion(torch.cat([x, x_label], dim=1))
        gate = self.atten1(x.reshape(b // k, k * c, h, w))
        gate_label = self.atten2(x_label.reshape(b // k, k * c, h, w))
        x = self.fusion1(torch.cat([x, exchanged], dim=1))
        x_label = self.fusion2(torch.cat([x_label, exchanged], dim=1))
        return _weighted_sum(x, attention, k) + gate, _weighted_sum(x_label, attention, k) + gate_label


class CombinationEncoder(nn.Module):
    """E_FI / E_FL and the product of Eq. 7 (official ``CombEncoder``): from the coarsest level down,
    at each level l the (C_l x C_l) matrix sum_hw e_y[c, hw] softmax_c'(e_l)[c', hw], then a conv
    block per branch to the next finer width (``ref_img_up_{i}`` / ``ref_label_up_{i}``, stride 1)."""

    def __init__(self, channels: Sequence[int], n_downsample_G: int) -> None:
        super().__init__()
        self.n_downsample_G = n_downsample_G
        for i in range(n_downsample_G):
            setattr(self, f"ref_img_up_{i}", SNConvBlock(channels[i + 1], channels[i]))
            setattr(self, f"ref_label_up_{i}", SNConvBlock(channels[i + 1], channels[i]))

    @staticmethod
    def product(image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        b, c, h, w = image.shape
        weights = torch.softmax(label, dim=1).reshape(b, c, h * w)
        return torch.matmul(image.reshape(b, c, h * w), weights.transpose(1, 2)).unsqueeze(-1)

    def forward(self, x: torch.Tensor, x_label: torch.Tensor, finest: int = 1) -> list[torch.Tensor | None]:
        """e_y, e_l (N, ch[G], h, w) -> [level 0 .. G], level l (N, ch[l], ch[l], 1); levels below
        `finest` are None (the official computes level 0 and never reads it)."""
        out: list[torch.Tensor | None] = [None] * (self.n_downsample_G + 1)
        for i in reversed(range(self.n_downsample_G)):
            out[i + 1] = self.product(x, x_label)
            if i < finest:
                break
            x = getattr(self, f"ref_img_up_{i}")(x)
            x_label = getattr(self, f"ref_label_up_{i}")(x_label)
        else:
            out[0] = self.product(x, x_label)
        return out


class WeightGenerator(nn.Module):
    """E_FP of Eq. 7 (official ``WeightGen``): for each adaptive layer i, MLPs of spectral-norm
    linear layers (no activation in between, as the official) applied to every row of the level
    i + 1 fusion matrix (C x C, C = ch[i+1]); their outputs, concatenated over the rows, are cut into

    * ``fc_spade_0_{i}`` / ``fc_spade_1_{i}`` / ``fc_spade_s_{i}``: gamma and beta 1-conv weights of
      the map-0 SPADE of decoder layer i's ``bn_0`` (ch[i+1] channels), ``bn_1`` (ch[i]) and
      ``bn_s`` (ch[i+1]), each (N, C_norm, ch[i], k, k) (the generated biases are unused, as in the
      official);
    * ``fc_spade_e_{i}``: the label-embedding up-convolution of level i: weight (N, ch[i+1], ch[i],
      e, e) and bias (N, ch[i+1]) (the official flattening: the first ch[i+1] ch[i] e^2 values
      are the weight, the last ch[i+1] the bias).
    """

    def __init__(self, channels: Sequence[int], hidden_nc: Sequence[Sequence[int]], embed_ks: int, spade_ks: int,
                 n_fc_layers: int, n_adaptive_layers: int) -> None:
        super().__init__()
        self.channels, self.embed_ks, self.spade_ks = list(channels), embed_ks, spade_ks
        self.hidden = [h[0] for h in hidden_nc]
        self.n_adaptive_layers = n_adaptive_layers
        for i in range(n_adaptive_layers):
            ch_in, ch_out, ch_h = channels[i], channels[i + 1], self.hidden[i]
            spade = ch_h * spade_ks ** 2 + 1
            outs = {"fc_spade_0": spade * 2, "fc_spade_1": spade * (1 if ch_in != ch_out else 2),
                    "fc_spade_s": spade * 2, "fc_spade_e": ch_in * embed_ks ** 2 + 1}
            for name, out in outs.items():
                layers = [SNLinear(ch_out, ch_out) for _ in range(n_fc_layers)] + [SNLinear(ch_out, out)]
                setattr(self, f"{name}_{i}", nn.Sequential(*layers))

    @staticmethod
    def _split(v: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """One official (weight, bias) chunk: weight first (flattened `shape`), bias (shape[0]) last."""
        n, size = v.shape[0], 1
        for s in shape:
            size *= s
        return v[:, :size].reshape(n, *shape), v[:, size:]

    def forward(self, encoded_ref: Sequence[torch.Tensor | None]
                ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[tuple[torch.Tensor, ...], ...]]]:
        """encoded_ref: `CombinationEncoder` levels -> (label-embedding weights [(W, b)] per adaptive
        level, SPADE weights [((Wg, Wb) of bn_0, of bn_1, of bn_s)] per adaptive layer)."""
        embedding, norms = [], []
        e, s = self.embed_ks, self.spade_ks
        for i in range(self.n_adaptive_layers):
            ch_in, ch_out, ch_h = self.channels[i], self.channels[i + 1], self.hidden[i]
            feat = encoded_ref[min(len(encoded_ref) - 1, i + 1)]
            n = feat.shape[0]
            rows = feat.reshape(n * feat.shape[1], -1)
            out = {name: getattr(self, f"{name}_{i}")(rows).reshape(n, -1)
                   for name in ("fc_spade_e", "fc_spade_0", "fc_spade_1", "fc_spade_s")}
            w_e = out["fc_spade_e"]
            embedding.append((w_e[:, :-ch_out].reshape(n, ch_out, ch_in, e, e), w_e[:, -ch_out:]))
            layer = []
            for name, c in (("fc_spade_0", ch_out), ("fc_spade_1", ch_in), ("fc_spade_s", ch_out)):
                v = out[name]
                half = v.shape[1] // 2
                gamma, _ = self._split(v[:, :half], (c, ch_h, s, s))
                beta, _ = self._split(v[:, half:], (c, ch_h, s, s))
                layer.append((gamma, beta))
            norms.append(tuple(layer))
        return embedding, norms


class LabelEmbedder(nn.Module):
    """Multi-scale encoder of a label / image (official ``LabelEmbedder``).

    ``conv_first`` (3x3 conv + LeakyReLU) and stride-2 ``down_{i}``; with ``decoder`` (official
    ``netS='encoderdecoder'``, the target-label embedding phi_{l_t}) the coarsest feature is brought
    back up, level by level, by ``up_{i}`` (transposed 3x3 conv + LeakyReLU) for i >= n_adaptive and
    by a generated transposed convolution (no activation) below: the levels are the decoder's
    outputs. Without ``decoder`` (``'encoder'``: phi_{y_ts}, phi_{y~_t}) the levels are the encoder's.
    Level i has ch[i] channels at S / 2^i.
    """

    def __init__(self, in_nc: int, channels: Sequence[int], decoder: bool, n_adaptive: int = 0) -> None:
        super().__init__()
        if n_adaptive and not decoder:
            raise ValueError("LabelEmbedder: generated weights are supported in the decoder only")
        self.n_down, self.decoder, self.n_adaptive = len(channels) - 1, decoder, n_adaptive
        self.conv_first = nn.Sequential(nn.Conv2d(in_nc, channels[0], 3, padding=1), nn.LeakyReLU(0.2))
        for i in range(self.n_down):
            setattr(self, f"down_{i}", nn.Sequential(nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1),
                                                     nn.LeakyReLU(0.2)))
        if decoder:
            for i in reversed(range(self.n_down)):
                if i >= n_adaptive:
                    setattr(self, f"up_{i}", nn.Sequential(
                        nn.ConvTranspose2d(channels[i + 1], channels[i], 3, stride=2, padding=1, output_padding=1),
                        nn.LeakyReLU(0.2)))

    def forward(self, x: torch.Tensor, weights: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                levels: int | None = None) -> list[torch.Tensor]:
        """x (N, C, S, S) -> [level 0, 1, ...]; weights: generated (W, b) per adaptive level (decoder);
        levels: compute only the first `levels` (encoder only)."""
        out = [self.conv_first(x)]
        n_levels = self.n_down + 1 if (self.decoder or levels is None) else min(levels, self.n_down + 1)
        for i in range(n_levels - 1):
            out.append(getattr(self, f"down_{i}")(out[-1]))
        if not self.decoder:
            return out
        up = [out[-1]]
        for i in reversed(range(self.n_down)):
            if i >= self.n_adaptive:
                up.append(getattr(self, f"up_{i}")(up[-1]))
            else:
                w, b = weights[i]
                up.append(per_sample_conv_transpose2d(up[-1], w, b[:, : w.shape[2]]))
        return up[::-1]


class EmbeddingGenerator(nn.Module):
    """``netG`` (official ``FewShotGenerator``): the hybrid embedding and the SPADE decoder.

    `weight_generation` embeds the K references and the target label; `img_generation` decodes from
    the aggregated appearance e_y (N, ch[G], S/2^G, S/2^G): decoder layer i = n_downsample_G .. 0
    (``up_{i}``, ch[i+1] -> ch[i], nearest x2 upsampling after all but the last) is SPADE-conditioned
    on label level i; the ``n_sc_layers`` finest also on the warped-image levels (parallel in the
    hybrid layout, `SPADEParallelResBlock`; in sequence otherwise); the ``n_adaptive_layers`` finest
    take their map-0 SPADE weights from `WeightGenerator`; ``conv_img`` + tanh gives the frame.
    """

    def __init__(self, cfg: ComposerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, hidden, g = cfg.channels, cfg.hidden_nc, cfg.n_downsample_G
        if cfg.hybrid:
            self.encoder = HybridEncoder(cfg.image_nc, cfg.label_nc, ch, g, cfg.n_downsample_A, cfg.n_shot)
        else:
            self.image_encoder = ReferenceEncoder(cfg.image_nc, ch, g, cfg.n_downsample_A)
            self.lmark_encoder = ReferenceEncoder(cfg.label_nc, ch, g, cfg.n_downsample_A)
        self.comb_encoder = CombinationEncoder(ch, g)
        self.atten_gen = ActivationEncoder(cfg.label_nc, ch, cfg.n_downsample_A)
        self.weight_gen = WeightGenerator(ch, hidden, cfg.embed_ks, cfg.spade_ks, cfg.n_fc_layers,
                                          cfg.n_adaptive_layers)
        self.label_embedding = LabelEmbedder(cfg.label_nc, ch[: g + 1], decoder=True, n_adaptive=cfg.n_adaptive_layers)
        for i in reversed(range(g + 1)):
            free = i < cfg.n_adaptive_layers
            if cfg.hybrid and i < cfg.n_sc_layers:
                block = SPADEParallelResBlock(ch[i + 1], ch[i], hidden[i], cfg.spade_ks, param_free_norm=free)
            else:
                block = SPADEResBlock(ch[i + 1], ch[i], hidden[i], cfg.spade_ks, param_free_norm=free)
            setattr(self, f"up_{i}", block)
        self.conv_img = nn.Conv2d(ch[0], cfg.image_nc, 3, padding=1)

    def weight_generation(self, ref_images: torch.Tensor, ref_labels: torch.Tensor, label: torch.Tensor):
        """-> (e_y (N, ch[G], ...), label levels [(N, ch[i], S/2^i, S/2^i)], SPADE weights per adaptive
        layer, alpha (N, K, h w), most activated reference (N,))."""
        n, k = ref_images.shape[:2]
        images = ref_images.reshape(n * k, *ref_images.shape[2:])
        labels = ref_labels.reshape(n * k, *ref_labels.shape[2:])
        attention, ref_idx = self.atten_gen(label, labels, k)
        if self.cfg.hybrid:
            x, x_label = self.encoder(images, labels, attention, k)
        else:
            x, x_label = self.image_encoder(images, attention, k), self.lmark_encoder(labels, attention, k)
        encoded_ref = self.comb_encoder(x, x_label)
        embedding_weights, norm_weights = self.weight_gen(encoded_ref)
        encoded_label = self.label_embedding(label, embedding_weights)
        return x, encoded_label, norm_weights, attention, ref_idx

    def img_generation(self, x: torch.Tensor, norm_weights, maps: Sequence, raw_maps: Sequence | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode e_y; maps[i]: label level i (a tensor) or, in the composition layers, the list
        [label, ref, ani] of level-i maps (None entries skipped); raw_maps: label levels for the raw
        frame (composition layers only). -> (frame, raw frame or None), (N, 3, S, S) in (-1, 1)."""
        n_sc = self.cfg.n_sc_layers
        x_raw = None
        for i in range(self.cfg.n_downsample_G, -1, -1):
            block = getattr(self, f"up_{i}")
            weights = norm_weights[i] if i < self.cfg.n_adaptive_layers else None
            if raw_maps is not None and i < n_sc:
                if i == n_sc - 1:
                    x_raw = x
                x_raw = block(x_raw, raw_maps[i], weights)
                if i != 0:
                    x_raw = F.interpolate(x_raw, scale_factor=2, mode="nearest")
            x = block(x, maps[i], weights)
            if i != 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        image = torch.tanh(self.conv_img(lrelu(x)))
        raw = None if x_raw is None else torch.tanh(self.conv_img(lrelu(x_raw)))
        return image, raw


# ---------------------------------------------------------------------------------------------
# non-linear composition: flows
# ---------------------------------------------------------------------------------------------
def _sn_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Official ``get_nonspade_norm_layer('spectralsyncbatch')``: spectral-norm conv without bias, BN."""
    return nn.Sequential(SNConv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout))


class FlowGenerator(nn.Module):
    """Flow + attention map from [target label, source label, source image] (official
    ``FlowGenerator`` with ``n_frames_G = 2``): ``down_flow`` (conv, then n_downsample_F stride-2
    convs), ``res_flow`` (n_blocks_F BatchNorm residual blocks), ``up_flow`` (nearest x2 + conv per
    level), ``conv_flow`` (2 channels, x flow_multiplier) and ``conv_w`` (1 channel, sigmoid)."""

    def __init__(self, label_nc: int, image_nc: int, channels: Sequence[int], n_blocks: int,
                 flow_multiplier: float) -> None:
        super().__init__()
        self.flow_multiplier = flow_multiplier
        n_down = len(channels) - 1
        down: list[nn.Module] = [_sn_bn(2 * label_nc + image_nc, channels[0]), nn.LeakyReLU(0.2)]
        for i in range(n_down):
            down += [_sn_bn(channels[i], channels[i + 1], stride=2), nn.LeakyReLU(0.2)]
        up: list[nn.Module] = []
        for i in reversed(range(n_down)):
            up += [nn.Upsample(scale_factor=2), _sn_bn(channels[i + 1], channels[i]), nn.LeakyReLU(0.2)]
        self.down_flow = nn.Sequential(*down)
        self.res_flow = nn.Sequential(*[SPADEResBlock(channels[-1], channels[-1]) for _ in range(n_blocks)])
        self.up_flow = nn.Sequential(*up)
        self.conv_flow = nn.Sequential(nn.Conv2d(channels[0], 2, 3, padding=1))
        self.conv_w = nn.Sequential(nn.Conv2d(channels[0], 1, 3, padding=1), nn.Sigmoid())

    def forward(self, label: torch.Tensor, source_label: torch.Tensor, source_image: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> flow (N, 2, S, S) in pixels, attention map (N, 1, S, S) in (0, 1)."""
        feat = self.up_flow(self.res_flow(self.down_flow(torch.cat([label, source_label, source_image], dim=1))))
        return self.conv_flow(feat) * self.flow_multiplier, self.conv_w(feat)


class WarpModule(nn.Module):
    """``warp`` (official ``WarpModule``): ``flow_network_ref`` warps the matched reference,
    ``flow_network_ani`` the rendered frame, each to the target label."""

    def __init__(self, cfg: ComposerConfig) -> None:
        super().__init__()
        args = (cfg.label_nc, cfg.image_nc, cfg.flow_channels, cfg.n_blocks_F, cfg.flow_multiplier)
        if cfg.warp_ref:
            self.flow_network_ref = FlowGenerator(*args)
        if cfg.warp_ani:
            self.flow_network_ani = FlowGenerator(*args)

    def forward(self, label, ref_label=None, ref_image=None, ani_label=None, ani_image=None):
        """-> {"ref"/"ani": (flow, attention map, warped image)} for the branches built and given."""
        out = {}
        for name, source_label, source_image in (("ref", ref_label, ref_image), ("ani", ani_label, ani_image)):
            net = getattr(self, f"flow_network_{name}", None)
            if net is None or source_label is None or source_image is None:
                continue
            flow, weight = net(label, source_label, source_image)
            out[name] = (flow, weight, flow_warp(source_image, flow))
        return out


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------
def official_init(module: nn.Module, gain: float) -> None:
    """Official ``init_weights('xavier', gain)`` as it acts on a GPU-built network (module
    docstring): plain Conv2d / ConvTranspose2d / Linear xavier-normal + zero bias, affine BatchNorm2d
    N(1, gain) + zero bias; spectral-norm layers untouched."""
    if gain <= 0:
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


class Composer(nn.Module):
    """The generator Theta: hybrid embedding + non-linear composition (module docstring).

    Attributes: ``netG`` (`EmbeddingGenerator`), ``warp`` (`WarpModule`), ``img_ref_embedding`` and
    ``img_ani_embedding`` (`LabelEmbedder` of [warped image, attention map], 4 channels). Parameters
    that cannot affect the output are frozen (`unused_parameter_names`); train `trained_parameters`.
    """

    def __init__(self, cfg: ComposerConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ComposerConfig.paper()
        self.cfg = cfg
        ch = cfg.channels[: cfg.n_downsample_G + 1]
        self.netG = EmbeddingGenerator(cfg)
        self.warp = WarpModule(cfg)
        self.img_ref_embedding = LabelEmbedder(cfg.image_nc + 1, ch, decoder=False)
        self.img_ani_embedding = LabelEmbedder(cfg.image_nc + 1, ch, decoder=False)
        official_init(self, cfg.init_gain)
        unused = set(self.unused_parameter_names())
        for name, p in self.named_parameters():
            if name in unused:
                p.requires_grad_(False)

    # -- parameters --------------------------------------------------------------------------
    def unused_parameter_names(self) -> list[str]:
        """Parameters of the official layout that never influence the output in this config: the
        ``img_*_embedding`` levels past ``n_sc_layers``, ``comb_encoder`` level 0, the SPADE convs of
        map slots never given (prev always; ref / ani when their warp branch is off), a whole
        ``img_*_embedding`` whose branch is off, and ``weight_gen.fc_spade_s_{i}`` for a decoder layer
        without a learned shortcut."""
        cfg = self.cfg
        prefixes = ["netG.comb_encoder.ref_img_up_0.", "netG.comb_encoder.ref_label_up_0."]
        for branch, on in (("ref", cfg.warp_ref), ("ani", cfg.warp_ani)):
            if not on:
                prefixes.append(f"img_{branch}_embedding.")
            else:
                unused_levels = range(cfg.n_sc_layers - 1, cfg.n_downsample_G)
                prefixes += [f"img_{branch}_embedding.down_{k}." for k in unused_levels]
        dead_slots = [j for j, slot in enumerate(cfg.map_slots)
                      if slot == "prev" or (slot == "ref" and not cfg.warp_ref) or (slot == "ani" and not cfg.warp_ani)]
        for i in range(cfg.n_sc_layers):
            block = f"netG.up_{i}."
            for j in dead_slots:
                s = str(j + 1)
                if cfg.hybrid:
                    prefixes += [f"{block}bn_0_{j}.", f"{block}bn_1_{j}."]
                    norms = ["bn_s"]
                else:
                    norms = ["bn_0", "bn_1", "bn_s"]
                prefixes += [f"{block}{nm}.mlp_{gb}{s}." for nm in norms for gb in ("gamma", "beta")]
        ch = cfg.channels
        prefixes += [f"netG.weight_gen.fc_spade_s_{i}." for i in range(cfg.n_adaptive_layers) if ch[i + 1] == ch[i]]
        return [name for name, _ in self.named_parameters() if name.startswith(tuple(prefixes))]

    def trained_parameters(self) -> list[nn.Parameter]:
        """The parameters that can affect the output (everything but `unused_parameter_names`)."""
        unused = set(self.unused_parameter_names())
        return [p for name, p in self.named_parameters() if name not in unused]

    # -- forward -----------------------------------------------------------------------------
    def forward(self, label: torch.Tensor, ref_labels: torch.Tensor, ref_images: torch.Tensor,
                warp_ref_label: torch.Tensor | None = None, warp_ref_image: torch.Tensor | None = None,
                ani_label: torch.Tensor | None = None, ani_image: torch.Tensor | None = None) -> ComposerOutput:
        """Generate the frame for target label l_t from K references (shapes and ranges in the module
        docstring); the warp inputs of a branch that is off in the config are ignored."""
        cfg = self.cfg
        if ref_images.dim() != 5 or ref_labels.dim() != 5 or ref_images.shape[:2] != ref_labels.shape[:2]:
            raise ValueError(f"references must be (N, K, C, S, S) with matching N, K; got images "
                             f"{tuple(ref_images.shape)}, labels {tuple(ref_labels.shape)}")
        x, encoded_label, norm_weights, attention, ref_idx = self.netG.weight_generation(ref_images, ref_labels, label)
        warped = self.warp(label, warp_ref_label, warp_ref_image, ani_label, ani_image)
        embedded = {}
        for name in ("ref", "ani"):
            if name in warped:
                flow, weight, image = warped[name]
                embedding = getattr(self, f"img_{name}_embedding")
                embedded[name] = embedding(torch.cat([image, weight], dim=1), levels=cfg.n_sc_layers)
        maps: list = list(encoded_label)
        for i in range(cfg.n_sc_layers):
            maps[i] = [encoded_label[i]] + [embedded[name][i] if name in embedded else None
                                            for name in cfg.map_slots[1:3]]
        raw_maps = encoded_label[: cfg.n_sc_layers] if cfg.raw_output else None
        image, raw = self.netG.img_generation(x, norm_weights, maps, raw_maps)

        def part(name: str, index: int):
            return warped[name][index] if name in warped else None

        return ComposerOutput(image=image, raw=raw, warped_ref=part("ref", 2), warped_ani=part("ani", 2),
                              flow_ref=part("ref", 0), flow_ani=part("ani", 0), weight_ref=part("ref", 1),
                              weight_ani=part("ani", 1), attention=attention, ref_idx=ref_idx)
