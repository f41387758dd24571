"""The bit-exact specification of every operation the gateware implements.

Pure NumPy, integers only in the *semantics*. This module is the contract between software and
hardware: ``hw/`` must reproduce these functions on every element, and ``sim/`` checks it.

Numerics (decided in docs/architecture.md and docs/numerics.md):

* activations are int8, symmetric, zero point 0 (post-ReLU values live in 0..127);
* weights are int8 (per-output-channel symmetric scale, handled by :mod:`fpga.toolflow.quant`);
* accumulation is int32 (overflow is a spec violation and raises here);
* requantization: ``y = clamp((acc * multiplier + round) >> shift, lo, 127)`` where
  ``round = 1 << (shift - 1)`` (0 when ``shift == 0``) and ``>>`` is an arithmetic shift, i.e.
  **round half up** (towards +inf). ``lo`` is 0 with ReLU fused, -128 without.
  ``multiplier`` is an unsigned 16-bit integer (0..65535) and ``shift`` 0..47, per output channel:
  ``acc * multiplier`` then fits in 48 bits, the width of a DSP48E1 post-adder.
* max-pool 3x3/2 with ceil mode: windows that hang over the bottom/right edge are clipped; in
  floor mode (an imported ONNX ``MaxPool`` with ``ceil_mode`` 0) the windows that would hang
  over are left out, i.e. the ceil-mode output with its last row/column cut where they differ;
* global average pool returns the int32 *sum* over H x W; the 1/(H*W) is folded into the scale
  of the logits (no rounding step, nothing lost);
* elementwise add (bypass): ``clamp((a * mult_a + b * mult_b + round) >> shift, lo, 127)``.

Performance: convolutions use an im2col + matrix product in floating point. This is *exact*:
every partial sum of int8 x int8 products is an integer, and float32 represents all integers
below 2**24 exactly, so while ``K * 128 * 128 < 2**24`` (K = C_in * kH * kW < 1024) float32 BLAS
gives the exact integer sum; above that float64 (exact below 2**53) is used.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

ACT_MIN = -128
ACT_MAX = 127
MULT_BITS = 16
MAX_SHIFT = 47
ACC_MIN = -(2**31)
ACC_MAX = 2**31 - 1

__all__ = [
    "conv2d",
    "conv2d_acc",
    "requantize",
    "maxpool",
    "pool_output_size",
    "conv_output_size",
    "add",
    "global_avgpool",
    "im2col",
]


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a convolution along one axis (floor mode, like Caffe/torch)."""
    return (size + 2 * pad - kernel) // stride + 1


def pool_output_size(size: int, kernel: int = 3, stride: int = 2, ceil_mode: bool = True) -> int:
    """Output length of a pool without padding: ceil mode (Caffe semantics, the default) or
    floor mode (every window inside the input)."""
    if not ceil_mode:
        return (size - kernel) // stride + 1
    out = -(-(size - kernel) // stride) + 1
    # torch/Caffe rule: the last window must start inside the input
    if (out - 1) * stride >= size:
        out -= 1
    return out


def _check_int8(name: str, array: np.ndarray) -> None:
    if array.dtype != np.int8:
        raise TypeError(f"{name} must be int8, got {array.dtype}")


def im2col(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """Unfold ``x`` (C, H, W) into columns (C * k * k, Ho * Wo), row order (c, ky, kx).

    The row order matches ``w.reshape(C_out, C_in * k * k)`` for OIHW weights.
    """
    c, h, w = x.shape
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho = conv_output_size(h, kernel, stride, pad)
    wo = conv_output_size(w, kernel, stride, pad)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"kernel {kernel} with pad {pad} does not fit input {h}x{w}")
    windows = sliding_window_view(x, (kernel, kernel), axis=(1, 2))  # C, H', W', k, k
    windows = windows[:, : (ho - 1) * stride + 1 : stride, : (wo - 1) * stride + 1 : stride]
    return windows.transpose(0, 3, 4, 1, 2).reshape(c * kernel * kernel, ho * wo)


def _exact_dtype(k: int):
    """The float type whose products of int8 matrices with inner size ``k`` are exact."""
    return np.float32 if k * 128 * 128 < 2**24 else np.float64


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer matrix product of int8-valued matrices (M, K) @ (K, N) -> int64, exact (see
    module doc). ``b`` may already be in the float type (the im2col is built in it)."""
    dtype = _exact_dtype(a.shape[1])
    product = a.astype(dtype) @ b.astype(dtype, copy=False)
    return product.astype(np.int64)


def _conv_acc64(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, pad: int
) -> np.ndarray:
    _check_int8("x", x)
    _check_int8("weight", weight)
    c_out, c_in, kh, kw = weight.shape
    if kh != kw:
        raise ValueError(f"only square kernels are supported, got {kh}x{kw}")
    if x.shape[0] != c_in:
        raise ValueError(f"input has {x.shape[0]} channels, weight expects {c_in}")
    if bias.shape != (c_out,):
        raise ValueError(f"bias shape {bias.shape} != ({c_out},)")
    ho = conv_output_size(x.shape[1], kh, stride, pad)
    wo = conv_output_size(x.shape[2], kh, stride, pad)
    # convert the (small) input once, so the (large) unfolded matrix is built in the float type
    xf = x.astype(_exact_dtype(c_in * kh * kw))
    if kh == 1 and stride == 1 and pad == 0:
        cols = xf.reshape(c_in, -1)
    else:
        cols = im2col(xf, kh, stride, pad)
    acc = _exact_matmul(weight.reshape(c_out, -1), cols)
    acc += bias.astype(np.int64)[:, None]
    # cheap bound first: only scan the accumulators when the worst case could overflow
    bound = c_in * kh * kw * 128 * 128 + int(np.abs(bias.astype(np.int64)).max(initial=0))
    if bound > ACC_MAX and acc.size and (acc.min() < ACC_MIN or acc.max() > ACC_MAX):
        raise OverflowError("convolution accumulator leaves int32")
    return acc.reshape(c_out, ho, wo)


def conv2d_acc(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """Accumulators of a convolution: int32 (C_out, Ho, Wo).

    ``x`` int8 (C_in, H, W); ``weight`` int8 (C_out, C_in, k, k) square kernel; ``bias`` int32
    (C_out,), added to the sum of products. Raises ``OverflowError`` if a sum leaves int32.
    """
    return _conv_acc64(x, weight, bias, stride, pad).astype(np.int32)


def _round_shift(value: np.ndarray, shift: np.ndarray, inplace: bool = False) -> np.ndarray:
    """``(value + round) >> shift`` with round half up; ``inplace`` reuses ``value`` (int64)."""
    rounding = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    if not inplace:
        return np.right_shift(value + rounding, shift)
    value += rounding
    return np.right_shift(value, shift, out=value)


def _check_requant_params(multiplier: np.ndarray, shift: np.ndarray) -> None:
    if multiplier.min(initial=0) < 0 or multiplier.max(initial=0) >= 2**MULT_BITS:
        raise ValueError(f"multiplier must be in 0..{2**MULT_BITS - 1}")
    if shift.min(initial=0) < 0 or shift.max(initial=0) > MAX_SHIFT:
        raise ValueError(f"shift must be in 0..{MAX_SHIFT}")


def requantize(
    acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, relu: bool = True
) -> np.ndarray:
    """int32 accumulators (C, ...) -> int8, per channel ``clamp((acc*m + round) >> s, lo, 127)``.

    ``multiplier`` (C,) in 0..65535, ``shift`` (C,) in 0..47, rounding half up.
    """
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    _check_requant_params(multiplier, shift)
    extra = (1,) * (acc.ndim - 1)
    m = multiplier.reshape(-1, *extra)
    s = shift.reshape(-1, *extra)
    y = acc.astype(np.int64)  # a fresh int64 buffer that the steps below work in, in place
    y *= m
    _round_shift(y, s, inplace=True)
    np.clip(y, 0 if relu else ACT_MIN, ACT_MAX, out=y)
    return y.astype(np.int8)


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    stride: int = 1,
    pad: int = 0,
    relu: bool = True,
) -> np.ndarray:
    """Quantized convolution: int8 (C_in, H, W) -> int8 (C_out, Ho, Wo), bias + requant + ReLU."""
    return requantize(_conv_acc64(x, weight, bias, stride, pad), multiplier, shift, relu)


def maxpool(x: np.ndarray, kernel: int = 3, stride: int = 2, ceil_mode: bool = True) -> np.ndarray:
    """Max-pool without padding, ceil mode (default) or floor mode: int8 (C, H, W) -> int8
    (C, Ho, Wo)."""
    _check_int8("x", x)
    return ceil_maxpool(x, ACT_MIN, kernel, stride, ceil_mode)


def ceil_maxpool(
    x: np.ndarray, lowest, kernel: int = 3, stride: int = 2, ceil_mode: bool = True
) -> np.ndarray:
    """The max-pool of any dtype, ``lowest`` its minimum (``fpga.spec.floatgraph`` runs the
    float network's with ``-inf``): (C, H, W) -> (C, Ho, Wo). Floor mode (``ceil_mode`` False)
    computes the same windows and fewer of them: the ceil-mode output's first Ho x Wo."""
    c, h, w = x.shape
    ho = pool_output_size(h, kernel, stride, ceil_mode)
    wo = pool_output_size(w, kernel, stride, ceil_mode)
    need_h, need_w = (ho - 1) * stride + kernel, (wo - 1) * stride + kernel
    # Padding with the minimum value is the same as clipping the window: every window keeps at
    # least one real element because it starts inside the input.
    padded = np.pad(
        x, ((0, 0), (0, max(0, need_h - h)), (0, max(0, need_w - w))), constant_values=lowest
    )
    # kernel*kernel strided slices and np.maximum: much faster than a reduce over a window view
    out = None
    for ky in range(kernel):
        for kx in range(kernel):
            tap = padded[
                :,
                ky : ky + (ho - 1) * stride + 1 : stride,
                kx : kx + (wo - 1) * stride + 1 : stride,
            ]
            out = tap.copy() if out is None else np.maximum(out, tap, out=out)
    return out


def add(
    a: np.ndarray,
    b: np.ndarray,
    multiplier_a: int,
    multiplier_b: int,
    shift: int,
    relu: bool = False,
) -> np.ndarray:
    """Bypass add of two int8 tensors at different scales into a common scale -> int8.

    ``clamp((a * multiplier_a + b * multiplier_b + round) >> shift, lo, 127)``, per-tensor
    multipliers in 0..65535 and shift 0..47, rounding half up.
    """
    _check_int8("a", a)
    _check_int8("b", b)
    if a.shape != b.shape:
        raise ValueError(f"add operands differ in shape: {a.shape} vs {b.shape}")
    _check_requant_params(np.array([multiplier_a, multiplier_b]), np.array([shift]))
    total = a.astype(np.int64) * multiplier_a + b.astype(np.int64) * multiplier_b
    y = _round_shift(total, np.int64(shift))
    return np.clip(y, 0 if relu else ACT_MIN, ACT_MAX).astype(np.int8)


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """int8 (C, H, W) -> int32 (C,) sums over H x W (the 1/(H*W) is folded into the scale)."""
    _check_int8("x", x)
    return x.astype(np.int32).sum(axis=(1, 2), dtype=np.int32)


def run_layer(layer, inputs: list[np.ndarray]) -> np.ndarray:
    """Run one :class:`fpga.spec.network.QLayer` on its input tensors (int8), bit-exact."""
    if layer.op == "conv":
        return conv2d(
            inputs[0],
            layer.weight,
            layer.bias,
            layer.multiplier,
            layer.shift,
            layer.stride,
            layer.pad,
            layer.relu,
        )
    if layer.op == "maxpool":
        return maxpool(inputs[0], ceil_mode=layer.ceil_mode)
    if layer.op == "concat":
        return np.concatenate(inputs, axis=0)
    if layer.op == "add":
        return add(
            inputs[0],
            inputs[1],
            int(layer.multiplier[0]),
            int(layer.multiplier[1]),
            int(layer.shift[0]),
            layer.relu,
        )
    if layer.op == "avgpool":
        return global_avgpool(inputs[0])
    raise ValueError(f"unknown op {layer.op!r}")


def run_network(network, image: np.ndarray, keep: bool = True) -> dict[str, np.ndarray]:
    """Run a :class:`fpga.spec.network.QuantizedNetwork` on an int8 image (3, H, W).

    Returns every layer's output by name (``"input"`` included) when ``keep``, else only the
    input and the final layer's int32 class sums (``network.output.name``).
    """
    _check_int8("image", image)
    tensors: dict[str, np.ndarray] = {"input": image}
    remaining = {}
    for layer in network.layers:
        for name in layer.inputs:
            remaining[name] = remaining.get(name, 0) + 1
    for layer in network.layers:
        tensors[layer.name] = run_layer(layer, [tensors[name] for name in layer.inputs])
        if not keep:
            for name in layer.inputs:
                remaining[name] -= 1
                if remaining[name] == 0 and name != "input":
                    del tensors[name]
    return tensors
