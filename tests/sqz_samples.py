"""Small valid ``.sqz`` models for the reader tests (numpy only: usable under a memory limit)."""

from __future__ import annotations

import numpy as np

from fpga.spec.network import QLayer, QuantizedNetwork


def tiny_network(rng, zero=False, size=32) -> QuantizedNetwork:
    """A small valid network with every op (conv 3x3/2, max-pool, a fire module with a conv
    bypass add, conv10, global average pool); random int8 weights (all zero with ``zero``)."""

    def conv(name, src, c_out, c_in, k, stride=1, relu=True):
        weight = (
            np.zeros((c_out, c_in, k, k), np.int8)
            if zero
            else (rng.integers(-3, 4, (c_out, c_in, k, k)).astype(np.int8) * 9)
        )
        return QLayer(
            name,
            "conv",
            (src,),
            0.1,
            weight=weight,
            bias=rng.integers(-100, 100, c_out).astype(np.int32),
            multiplier=rng.integers(2**15, 2**16, c_out),
            shift=rng.integers(10, 20, c_out),
            weight_scale=np.full(c_out, 0.01),
            stride=stride,
            pad=k // 2 if stride == 1 else 0,
            relu=relu,
        )

    layers = [
        conv("conv1", "input", 8, 3, 3, stride=2),
        QLayer("pool1", "maxpool", ("conv1",), 0.1),
        conv("fire2.squeeze", "pool1", 4, 8, 1),
        conv("fire2.expand1x1", "fire2.squeeze", 8, 4, 1),
        conv("fire2.expand3x3", "fire2.squeeze", 8, 4, 3),
        QLayer("fire2.concat", "concat", ("fire2.expand1x1", "fire2.expand3x3"), 0.1),
        conv("fire2.bypass", "pool1", 16, 8, 1, relu=False),
        QLayer(
            "fire2.add",
            "add",
            ("fire2.concat", "fire2.bypass"),
            0.1,
            multiplier=np.array([2**15, 2**14]),
            shift=np.array([15]),
            relu=False,
        ),
        conv("conv10", "fire2.add", 1000, 16, 1),
        QLayer("avgpool", "avgpool", ("conv10",), 0.01),
    ]
    return QuantizedNetwork("complex-bypass", size, 0.5, layers)


def shared_weights(network: QuantizedNetwork) -> dict:
    """{layer: (codebook, indices)} reproducing every conv's int8 weights exactly."""
    shared = {}
    for layer in network.conv_layers:
        codebook = np.concatenate([[0], np.unique(layer.weight[layer.weight != 0])]).astype(np.int8)
        lookup = {int(v): i for i, v in enumerate(codebook)}
        shared[layer.name] = (codebook, np.vectorize(lookup.get)(layer.weight).astype(np.uint8))
    return shared
