"""The float network as a graph, run in float64 NumPy with one fixed order of every sum.

This is the float reference the toolflow derives numbers *stored in a model file* from: the
activation scales the quantizer calibrates (``fpga.toolflow.quant.calibrate``) and the fidelity
record ``fpga.toolflow.compress`` writes. Those bytes must be the same on every machine and thread
count, so nothing here goes through a BLAS or ATen kernel (whose summation order depends on the
CPU's kernel choice and the thread count): a convolution is a loop over ``(c_in, ky, kx)`` in that
order, each step one elementwise IEEE multiply and one elementwise IEEE add over the whole
output (correctly rounded, the same on every SIMD width); max-pool
(``fpga.spec.golden.ceil_maxpool``) and ReLU are exact; the global average pool sums the positions
one at a time. torch's model (``fpga.toolflow.model``) is an independent check of this graph
(``tests/test_reproducible.py``), not an input of any file.

Torch-free (numpy only), so a host or an importer can run it without the toolflow install.
"""

from __future__ import annotations

import numpy as np

from fpga.spec.arch import FIRE_SHAPES, check_variant
from fpga.spec.golden import ceil_maxpool, conv_output_size


def float_graph(variant: str) -> list[dict]:
    """The network as graph nodes in topological order (same names as the quantized graph).

    Each node: name, op, inputs, and for convs the weight key prefix, stride, pad, relu.
    An imported graph (fpga.toolflow.onnx_import) has nodes of the same form, and may add
    ``ceil_mode`` (False: a floor-mode max-pool) and ``relu`` (an add followed by a ReLU).
    """
    arch = check_variant(variant)
    nodes: list[dict] = []

    def conv(name, src, stride=1, pad=0, relu=True):
        nodes.append(dict(name=name, op="conv", inputs=(src,), stride=stride, pad=pad, relu=relu))
        return name

    x = conv("conv1", "input", stride=2)
    nodes.append(dict(name="pool1", op="maxpool", inputs=(x,)))
    x, pools = "pool1", 1
    for n in FIRE_SHAPES:
        f = f"fire{n}"
        s = conv(f"{f}.squeeze", x)
        e1 = conv(f"{f}.expand1x1", s)
        e3 = conv(f"{f}.expand3x3", s, pad=1)
        nodes.append(dict(name=f"{f}.concat", op="concat", inputs=(e1, e3)))
        out = f"{f}.concat"
        if n in arch.identity_bypass:
            nodes.append(dict(name=f"{f}.add", op="add", inputs=(out, x)))
            out = f"{f}.add"
        elif n in arch.conv_bypass:
            b = conv(f"{f}.bypass", x, relu=False)
            nodes.append(dict(name=f"{f}.add", op="add", inputs=(out, b)))
            out = f"{f}.add"
        x = out
        if f in arch.pool_after:
            pools += 1
            nodes.append(dict(name=f"pool{pools}", op="maxpool", inputs=(x,)))
            x = f"pool{pools}"
    x = conv("conv10", x)
    nodes.append(dict(name="avgpool", op="avgpool", inputs=(x,)))
    return nodes


def conv2d(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """float64 (C, H, W) * (O, C, k, k) + (O,) -> float64 (O, Ho, Wo), floor mode.

    Every output element is ``bias`` plus the products in ``(c, ky, kx)`` order, each product
    and each sum rounded once: the same bits on any machine.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = conv_output_size(h, kh, stride, pad), conv_output_size(w, kw, stride, pad)
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out = np.empty((c_out, ho, wo))
    out[...] = np.asarray(bias, dtype=np.float64)[:, None, None]
    term = np.empty_like(out)
    for c in range(c_in):
        for ky in range(kh):
            rows = slice(ky, ky + (ho - 1) * stride + 1, stride)
            for kx in range(kw):
                patch = x[c, rows, kx : kx + (wo - 1) * stride + 1 : stride]
                np.multiply(weight[:, c, ky, kx, None, None], patch[None], out=term)
                out += term
    return out


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (C,): the positions summed one at a time in row-major order, then / (H*W)."""
    flat = x.reshape(x.shape[0], -1)
    total = np.zeros(x.shape[0])
    for i in range(flat.shape[1]):
        total += flat[:, i]
    return total / flat.shape[1]


def run(
    nodes: list[dict], weights: dict[str, np.ndarray], image: np.ndarray
) -> dict[str, np.ndarray]:
    """Forward pass over ``nodes`` for one preprocessed image (C, H, W); every node's float64
    tensor by name (``"input"`` too; the avgpool node's is the logit vector)."""
    t = {"input": np.asarray(image, dtype=np.float64)}
    for node in nodes:
        ins = [t[i] for i in node["inputs"]]
        op = node["op"]
        if op == "conv":
            name = node["name"]
            y = conv2d(
                ins[0],
                weights[name + ".weight"],
                weights[name + ".bias"],
                node["stride"],
                node["pad"],
            )
            if node["relu"]:
                np.maximum(y, 0.0, out=y)
        elif op == "maxpool":
            y = ceil_maxpool(ins[0], -np.inf, ceil_mode=node.get("ceil_mode", True))
        elif op == "concat":
            y = np.concatenate(ins, axis=0)
        elif op == "add":
            y = ins[0] + ins[1]
            if node.get("relu", False):
                np.maximum(y, 0.0, out=y)
        elif op == "avgpool":
            y = global_avgpool(ins[0])
        else:
            raise ValueError(f"node {node['name']!r}: unknown op {op!r}")
        t[node["name"]] = y
    return t


def logits(variant: str, weights: dict[str, np.ndarray], image: np.ndarray) -> np.ndarray:
    """The float network's logit vector (float64) for one preprocessed image."""
    return run(float_graph(variant), weights, image)["avgpool"]
