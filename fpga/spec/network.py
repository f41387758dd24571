"""The quantized network graph: what the golden model runs, the compressor shrinks and the
compiler turns into engine commands.

A network is a topologically ordered list of :class:`QLayer`. Each layer names its inputs
(``"input"`` is the int8 image). Ops:

``conv``     int8 (C_in, H, W) -> int8 (C_out, Ho, Wo): square kernel, stride, zero pad, bias,
             per-output-channel requant (``multiplier``/``shift`` arrays of C_out), ReLU or not.
``maxpool``  3x3 stride 2, ceil mode (``ceil_mode`` False: floor mode), same scale.
``concat``   channel concatenation of its inputs (all at the same scale, so no arithmetic).
``add``      bypass add: ``multiplier`` = [m_a, m_b], ``shift`` = [s] (see ``golden.add``).
``avgpool``  global average pool -> int32 (C,) sums; the logits are ``sums * out_scale``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from fpga.spec.arch import conv_shapes
from fpga.spec.floatgraph import float_graph
from fpga.spec.preprocessing import CAFFE, Preprocessing

OPS = ("conv", "maxpool", "concat", "add", "avgpool")


@dataclass
class QLayer:
    """One node of the quantized graph (see module docstring for the ops)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    out_scale: float  # real value of one output LSB (for avgpool: of one unit of the sum)
    weight: np.ndarray | None = None  # int8 (C_out, C_in, k, k)
    bias: np.ndarray | None = None  # int32 (C_out,)
    multiplier: np.ndarray | None = None  # int64 (C_out,) for conv, (2,) for add; 0..65535
    shift: np.ndarray | None = None  # int64 (C_out,) for conv, (1,) for add; 0..47
    weight_scale: np.ndarray | None = None  # float64 (C_out,) real value of one weight LSB
    stride: int = 1
    pad: int = 0
    relu: bool = True
    ceil_mode: bool = True  # maxpool only: False = floor mode (an ONNX MaxPool's ceil_mode 0)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r} in layer {self.name}")

    @property
    def kernel(self) -> int:
        return 0 if self.weight is None else int(self.weight.shape[-1])


@dataclass
class QuantizedNetwork:
    """A quantized SqueezeNet: int8 image in, int32 class sums out (``layers[-1]``)."""

    variant: str
    input_size: int
    input_scale: float  # real value of one LSB of the int8 input (after mean subtraction)
    layers: list[QLayer]
    meta: dict = field(default_factory=dict)
    #: the model's class names (None: ImageNet's for 1000 classes; fpga.spec.image.model_labels)
    labels: tuple[str, ...] | None = None
    #: how a photo becomes the input (the bundled variants: Caffe)
    preprocessing: Preprocessing = CAFFE

    @property
    def classes(self) -> int:
        """Number of classes: the channels of the conv the global average pool reads."""
        return self._channels(self.output.inputs[0])

    def _channels(self, name: str) -> int:
        layer = self.layer(name)
        if layer.op == "conv":
            return int(layer.weight.shape[0])
        if layer.op == "concat":
            return sum(self._channels(src) for src in layer.inputs)
        return self._channels(layer.inputs[0])

    def layer(self, name: str) -> QLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def conv_layers(self) -> list[QLayer]:
        return [layer for layer in self.layers if layer.op == "conv"]

    @property
    def output(self) -> QLayer:
        return self.layers[-1]

    def quantize_input(self, image: np.ndarray) -> np.ndarray:
        """Preprocessed float image (3, H, W) -> int8, round half away from zero, saturating."""
        q = np.round(np.asarray(image, dtype=np.float64) / self.input_scale)
        return np.clip(q, -128, 127).astype(np.int8)

    def logits(self, sums: np.ndarray) -> np.ndarray:
        """int32 class sums from the device or golden model -> float logits."""
        return sums.astype(np.float64) * self.output.out_scale

    def replace_weights(self, weights: dict[str, np.ndarray]) -> QuantizedNetwork:
        """A copy with some conv layers' int8 weights replaced (same shapes; scales kept)."""
        layers = []
        for layer in self.layers:
            if layer.name in weights:
                new = np.asarray(weights[layer.name])
                if new.dtype != np.int8 or new.shape != layer.weight.shape:
                    raise ValueError(
                        f"{layer.name}: replacement must be int8 {layer.weight.shape}, "
                        f"got {new.dtype} {new.shape}"
                    )
                layer = dataclasses.replace(layer, weight=new)
            layers.append(layer)
        unknown = set(weights) - {layer.name for layer in self.layers}
        if unknown:
            raise KeyError(f"no such conv layers: {sorted(unknown)}")
        return dataclasses.replace(self, layers=layers)


def shape_network(variant: str, size: int) -> QuantizedNetwork:
    """``variant``'s graph for ``size``-pixel images with stand-in weights and unit scales:
    enough for the compiler to tile it and predict the engine's cycles (they follow the shapes
    alone), without torch or trained weights. ``fpga.build`` predicts images/s from it.

    The stand-in weights and biases differ from channel to channel, as trained ones do: the
    compiler's tiling choice counts the constants the device must load, and a chunk of weights
    equal to the one before it would not be loaded again."""
    shapes = conv_shapes(variant)
    layers = []
    for node in float_graph(variant):
        name, op, inputs = node["name"], node["op"], tuple(node["inputs"])
        if op == "conv":
            c_out = shapes[name][0]
            layer = QLayer(
                name,
                op,
                inputs,
                1.0,
                weight=_stand_in(shapes[name]),
                bias=np.arange(c_out, dtype=np.int32),
                multiplier=np.ones(c_out, np.int64),
                shift=np.zeros(c_out, np.int64),
                weight_scale=np.ones(c_out),
                stride=node["stride"],
                pad=node["pad"],
                relu=node["relu"],
            )
        elif op == "add":
            one = np.ones(2, np.int64)
            layer = QLayer(name, op, inputs, 1.0, multiplier=one, shift=np.zeros(1, np.int64))
            layer.relu = False
        else:
            layer = QLayer(name, op, inputs, 1.0)
        layers.append(layer)
    return QuantizedNetwork(variant, size, 1.0, layers)


def _stand_in(shape) -> np.ndarray:
    """int8 weights of ``shape`` that differ from channel to channel (no two chunks alike)."""
    return ((np.arange(np.prod(shape), dtype=np.int64) % 255) - 127).astype(np.int8).reshape(shape)
