"""An independent integer reference built from torch ops, to prove fpga.spec.golden right.

It shares nothing with fpga.spec.golden but the written numerics: convolution by torch's conv2d in
float64 (exact for these integer magnitudes), rounding and shifts by torch int64 ops, pooling by
torch's own ceil-mode max_pool2d.
"""

import numpy as np
import torch
import torch.nn.functional as F


def _shift_round(value: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    half = torch.where(shift > 0, torch.ones_like(shift) << (shift - 1).clamp(min=0), 0)
    return torch.bitwise_right_shift(value + half, shift)


def conv(x, weight, bias, multiplier, shift, stride, pad, relu):
    xt = torch.from_numpy(x.astype(np.float64))[None]
    wt = torch.from_numpy(weight.astype(np.float64))
    acc = F.conv2d(xt, wt, stride=stride, padding=pad)[0].round().long()
    acc = acc + torch.from_numpy(bias.astype(np.int64))[:, None, None]
    assert acc.abs().max() < 2**31
    m = torch.from_numpy(np.asarray(multiplier, dtype=np.int64))[:, None, None]
    s = torch.from_numpy(np.asarray(shift, dtype=np.int64))[:, None, None]
    y = _shift_round(acc * m, s)
    return y.clamp(0 if relu else -128, 127).to(torch.int8).numpy()


def maxpool(x):
    y = F.max_pool2d(torch.from_numpy(x.astype(np.float32))[None], 3, 2, ceil_mode=True)[0]
    return y.to(torch.int8).numpy()


def add(a, b, ma, mb, shift, relu=False):
    total = torch.from_numpy(a.astype(np.int64)) * ma + torch.from_numpy(b.astype(np.int64)) * mb
    y = _shift_round(total, torch.tensor(shift, dtype=torch.int64))
    return y.clamp(0 if relu else -128, 127).to(torch.int8).numpy()


def avgpool(x):
    return torch.from_numpy(x.astype(np.int64)).sum(dim=(1, 2)).to(torch.int32).numpy()


def run_network(network, image):
    t = {"input": image}
    for layer in network.layers:
        ins = [t[i] for i in layer.inputs]
        if layer.op == "conv":
            y = conv(
                ins[0],
                layer.weight,
                layer.bias,
                layer.multiplier,
                layer.shift,
                layer.stride,
                layer.pad,
                layer.relu,
            )
        elif layer.op == "maxpool":
            y = maxpool(ins[0])
        elif layer.op == "concat":
            y = np.concatenate(ins)
        elif layer.op == "add":
            y = add(
                ins[0],
                ins[1],
                int(layer.multiplier[0]),
                int(layer.multiplier[1]),
                int(layer.shift[0]),
                layer.relu,
            )
        else:
            y = avgpool(ins[0])
        t[layer.name] = y
    return t
