"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a torch module.

The network behind dlib's 128-d face descriptor, read straight from dlib's own serialization, so
that the descriptor runs batched and multi-threaded in torch instead of one image at a time in
dlib's CPU code, which holds the GIL (measured: 74 ms per face on this machine). Same weights, same
arithmetic: outputs equal ``dlib.face_recognition_model_v1.compute_face_descriptor`` to float
precision (tested against dlib on rendered faces).

The architecture is dlib's ``anet_type`` (``examples/dnn_face_recognition_ex.cpp``), a 29-layer
ResNet on 150 x 150 RGB face chips:

    conv 7x7/2 (32) -> affine -> relu -> max-pool 3x3/2
    -> 3 x res(32) -> res_down(64) + 2 x res(64)... (see `LEVELS`) -> global average -> fc 256 -> 128

with dlib's conventions, which differ from torchvision's ResNets:

* a convolution or pooling of stride > 1 has no padding (stride 1: ``kernel // 2``);
* ``affine`` is batch-norm folded into a per-channel scale and shift (``bn_con`` layers in the
  file are folded the way dlib folds them: gamma / sqrt(running variance + eps));
* a down-sampling residual adds the block's output to a 2x2/2 average pool of its input, with
  dlib's tensor addition: where channels or sizes differ the missing elements count as zero (the
  output has the larger size, e.g. a 3x3 block output on a 4x4 shortcut);
* input: RGB in 0-255 minus the mean colour stored in the file (122.782, 117.001, 104.298), / 256;
* the fully connected layer has no bias and computes ``x @ W`` with W stored (inputs, outputs).

The file format (dlib/serialize.h, dlib/dnn/core.h): integers are a size byte (bit 7 = sign, low
nibble = byte count) then little-endian bytes; floats a (mantissa, exponent) integer pair; strings
a length then bytes; bools the characters '0' / '1'; tensors version 2, four dimensions, then
little-endian float32 data. A network is written outermost layer first, each layer's version
before its sub-network, and its details after it: so the stream holds every layer's version on the
way in, the input layer, then the layers' details on the way out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DlibFaceResNet", "LEVELS", "read_dlib_face_resnet"]

#: (channels, blocks, first block down-samples) from the input side: alevel4 .. alevel0
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class DlibFormatError(ValueError):
    """The file is not the dlib face-recognition ResNet in the layout this reader expects."""


class _Reader:
    """dlib's serialization primitives over a bytes buffer."""

    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.path}: not dlib's face-recognition ResNet ({what} at byte {self.pos})")

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        head = self.data[self.pos]
        size, negative = head & 0x0F, bool(head & 0x80)
        if size == 0 or size > 8 or self.pos + 1 + size > len(self.data):
            raise self.fail(f"bad integer header {head:#x}")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if negative else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        length = self.int()
        text = self.data[self.pos : self.pos + length]
        self.pos += length
        return text.decode("latin-1")

    def bool(self) -> bool:
        char = self.data[self.pos : self.pos + 1]
        if char not in (b"0", b"1"):
            raise self.fail(f"bad bool {char!r}")
        self.pos += 1
        return char == b"1"

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("tensor version other than 2")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if end > len(self.data):
            raise self.fail("tensor data past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).reshape(shape)
        self.pos = end
        return values.astype(np.float32)

    def alias_shape(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise self.fail("alias_tensor version other than 1")
        return tuple(self.int() for _ in range(4))

    def expect(self, value: str, got: str) -> None:
        if got != value:
            raise self.fail(f"expected layer {value!r}, found {got!r}")


# Layers from the output inwards, as dlib's templates nest them (see the module docstring).
def _block(channels: int, stride: int) -> list[tuple]:
    return [("affine",), ("con", channels, 3, 1), ("relu",), ("affine",), ("con", channels, 3, stride)]


def _residual(channels: int, down: bool) -> list[tuple]:
    if down:  # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,2,tag1<...>>>>>>>
        return [("relu",), ("add_prev",), ("avg_pool", 2, 2), ("skip",), ("tag",), *_block(channels, 2), ("tag",)]
    return [("relu",), ("add_prev",), *_block(channels, 1), ("tag",)]  # relu<add_prev1<block<N,1,tag1<...>>>>


def _layer_plan() -> list[tuple]:
    """anet_type's layers, outermost (the fc) first, input layer excluded."""
    plan: list[tuple] = [("fc", 128), ("avg_pool", 0, 1)]  # avg_pool_everything: 0 x 0 = the whole map
    for channels, blocks, down in reversed(LEVELS):
        for index in reversed(range(blocks)):
            plan += _residual(channels, down and index == 0)
    return plan + [("max_pool", 3, 2), ("relu",), ("affine",), ("con", 32, 7, 2)]


def _read_details(reader: _Reader, kind: tuple) -> dict:
    """One layer's details (its ``deserialize``), the fields the forward pass needs."""
    version = reader.string()
    name = kind[0]
    if name == "con":
        if version not in ("con_4", "con_5", "con_6"):
            reader.expect("con_4/5/6", version)
        params = reader.tensor()
        filters = reader.int()
        rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(6))
        weight_shape, bias_shape = reader.alias_shape(), reader.alias_shape()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.float()
        use_bias = reader.bool() if version in ("con_5", "con_6") else True
        if version == "con_6":
            reader.bool()  # use_relu (fused relu, unused by this network)
        if (filters, rows, stride_y) != kind[1:] or rows != cols or stride_y != stride_x or pad_y != pad_x:
            raise reader.fail(f"convolution {filters}x{rows}x{cols}/{stride_y}, expected {kind[1:]}")
        flat = params.reshape(-1)
        weight_count = int(np.prod(weight_shape))
        weight = flat[:weight_count].reshape(weight_shape)
        bias = flat[weight_count : weight_count + int(np.prod(bias_shape))] if use_bias else np.zeros(filters, np.float32)
        return {"weight": weight, "bias": bias.reshape(-1), "stride": stride_y, "padding": pad_y}
    if name == "affine":
        if version in ("bn_con2", "bn_fc2"):
            raise reader.fail("a batch-norm layer (a training-time network); expected dlib's folded affine layers")
        if version not in ("affine_", "affine_2"):
            reader.expect("affine_", version)
        params = reader.tensor().reshape(-1)
        gamma_shape, beta_shape = reader.alias_shape(), reader.alias_shape()
        mode = reader.int()
        if version == "affine_2" and reader.bool():
            raise reader.fail("a disabled affine layer")
        if mode != 0:
            raise reader.fail("an affine layer in fc mode, expected conv mode")
        size = int(np.prod(gamma_shape))
        return {"scale": params[:size].copy(), "shift": params[size : size + int(np.prod(beta_shape))].copy()}
    if name == "relu":
        if version == "relu_2" and reader.bool():
            raise reader.fail("a disabled relu layer")
        if version not in ("relu_", "relu_2"):
            reader.expect("relu_", version)
        return {}
    if name in ("max_pool", "avg_pool"):
        reader.expect(f"{name}_2", version)
        rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(6))
        if (rows, stride_y) != kind[1:] or rows != cols or stride_y != stride_x or pad_y != pad_x or pad_y != 0:
            raise reader.fail(f"{name} {rows}x{cols}/{stride_y} pad {pad_y}, expected {kind[1:]} pad 0")
        return {}
    if name == "add_prev":
        reader.expect("add_prev_", version)
        return {}
    if name == "fc":
        if version not in ("fc_2", "fc_3"):
            reader.expect("fc_2/3", version)
        outputs, inputs = reader.int(), reader.int()
        params = reader.tensor().reshape(-1)
        weight_shape, _ = reader.alias_shape(), reader.alias_shape()
        reader.int()  # bias mode
        for _ in range(4):
            reader.float()
        if version == "fc_3":
            reader.bool()
        if outputs != kind[1]:
            raise reader.fail(f"fc with {outputs} outputs, expected {kind[1]}")
        weight = params[: inputs * outputs].reshape(inputs, outputs)
        return {"weight": weight}
    raise reader.fail(f"unknown layer kind {name}")


def read_dlib_face_resnet(path: str | Path) -> dict:
    """Parse the file: {"mean_rgb": (3,) float32, "layers": [(kind, details), ...] input side
    first, with the plan's kinds (`_layer_plan` reversed)}.

    Raises DlibFormatError naming the file when it is not dlib's face-recognition ResNet."""
    path = Path(path)
    reader = _Reader(path.read_bytes(), str(path))
    if reader.int() != 1:
        raise reader.fail("loss layer version")
    loss = reader.string()
    if loss == "loss_metric_2":
        reader.float(), reader.float()
    elif loss != "loss_metric_":
        reader.expect("loss_metric_", loss)
    plan = _layer_plan()
    # on the way in: every wrapper's version, outermost first
    versions = []
    for kind in plan[:-1]:
        version = reader.int()
        if version not in ((1,) if kind[0] in ("tag", "skip") else (1, 2)):
            raise reader.fail(f"{kind[0]} layer version {version}")
        versions.append(version)
    # the innermost add_layer holds the input layer and the first convolution
    input_version = reader.int()
    if input_version not in (2, 3):
        raise reader.fail(f"input add_layer version {input_version}")
    reader.expect("input_rgb_image_sized", reader.string())
    mean_rgb = np.array([reader.float() for _ in range(3)], dtype=np.float32)
    rows, cols = reader.int(), reader.int()
    if (rows, cols) != (150, 150):
        raise reader.fail(f"input {rows}x{cols}, expected 150x150")
    layers = [(plan[-1], _read_details(reader, plan[-1]))]
    for _ in range(3):  # setup called, gradient stale, output disabled
        reader.bool()
    for _ in range(3):  # x_grad, cached_output, grad_final
        reader.tensor()
    if input_version == 3:
        reader.int()  # sample expansion factor
    # on the way out: each add_layer's details, flags and cached tensors, innermost first
    for kind, version in zip(reversed(plan[:-1]), reversed(versions)):
        if kind[0] in ("tag", "skip"):
            continue
        layers.append((kind, _read_details(reader, kind)))
        for _ in range(3):
            reader.bool()
        for _ in range(3 if version == 2 else 2):  # x_grad, cached_output[, params_grad]
            reader.tensor()
    if reader.pos != len(reader.data):
        raise reader.fail(f"{len(reader.data) - reader.pos} bytes left after the network")
    return {"mean_rgb": mean_rgb, "layers": layers}


def _dlib_add(a: Tensor, b: Tensor) -> Tensor:
    """dlib's tensor addition: the larger of each dimension, missing elements counted as zero."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def grow(t: Tensor) -> Tensor:
        if list(t.shape) == shape:
            return t
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return grow(a) + grow(b)


class _Residual(nn.Module):
    """relu(add(affine(conv3x3/1(relu(affine(conv3x3/s(x))))), shortcut)), the shortcut being x or,
    when down-sampling, its 2x2/2 average pool. Each affine is folded into its convolution."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv_a = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv_b = nn.Conv2d(cout, cout, 3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv_b(F.relu(self.conv_a(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_dlib_add(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet: (N, 3, 150, 150) face chips as float RGB 0-255 -> (N, 128)
    descriptors (dlib's ``compute_face_descriptor`` values; about unit length; dlib calls two faces
    the same person below a Euclidean distance of 0.6). Build with `from_dlib_file`."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean_rgb", torch.zeros(3))
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        blocks, cin = [], 32
        for channels, count, down in LEVELS:
            for index in range(count):
                blocks.append(_Residual(cin, channels, down and index == 0))
                cin = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, 128, bias=False)

    @classmethod
    def from_dlib_file(cls, path: str | Path) -> "DlibFaceResNet":
        """The network with the weights of dlib's ``dlib_face_recognition_resnet_model_v1.dat``."""
        parsed = read_dlib_face_resnet(path)
        model = cls()
        convs = [model.stem] + [conv for block in model.blocks for conv in (block.conv_a, block.conv_b)]
        pending = iter(convs)
        conv = None
        for kind, details in parsed["layers"]:
            if kind[0] == "con":
                conv = next(pending)
                if (conv.stride[0], conv.padding[0]) != (details["stride"], details["padding"]):
                    raise DlibFormatError(f"{path}: convolution stride/padding {details['stride']}/{details['padding']}, "
                                          f"expected {conv.stride[0]}/{conv.padding[0]}")
                conv.weight.data.copy_(torch.from_numpy(details["weight"]))
                conv.bias.data.copy_(torch.from_numpy(details["bias"]))
            elif kind[0] == "affine":  # fold: scale * (w * x + b) + shift
                scale = torch.from_numpy(details["scale"])
                conv.weight.data.mul_(scale.view(-1, 1, 1, 1))
                conv.bias.data.mul_(scale).add_(torch.from_numpy(details["shift"]))
            elif kind[0] == "fc":
                model.fc.weight.data.copy_(torch.from_numpy(details["weight"]).t())
        model.mean_rgb.copy_(torch.from_numpy(parsed["mean_rgb"]))
        return model.eval()

    def forward(self, chips: Tensor) -> Tensor:
        x = (chips - self.mean_rgb.view(1, 3, 1, 1)) / 256.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))
