"""Reader of the original Deep Compression SqueezeNet release (``compressed_SqueezeNet.net``).

Format (little-endian, from the release's decoder): 26 x uint32 stored-entry counts (conv1,
then squeeze1x1/expand1x1/expand3x3 of fire2..fire9, then conv10); then per layer: a 256-entry
float32 codebook, the float32 biases, one uint8 codebook index per stored entry, and the 4-bit
relative positions, two per byte, low nibble first. ``pos = cumsum(gap + 1) - 1`` over the
flattened OIHW weights; stored entries with index 0 are filler zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fpga.spec.sqz import FormatError
from fpga.toolflow.model import FIRE_SHAPES, expected_shapes

LAYERS = (
    ["conv1"]
    + [f"fire{n}.{part}" for n in FIRE_SHAPES for part in ("squeeze", "expand1x1", "expand3x3")]
    + ["conv10"]
)


def read_deepcompression(path) -> tuple[dict[str, np.ndarray], dict]:
    """-> (float32 weights by state-dict key, info with per-layer stored counts)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    shapes = expected_shapes("v1.0")
    header = 4 * len(LAYERS)
    if len(data) < header:
        raise FormatError("deep compression file: too short for its header")
    counts = np.frombuffer(data[:header], dtype="<u4").astype(np.int64)
    pos = header
    weights, info = {}, {"layers": []}
    for name, stored in zip(LAYERS, counts, strict=True):
        shape = shapes[name + ".weight"]
        size = int(np.prod(shape))
        c_out = shape[0]
        need = 256 * 4 + c_out * 4 + stored + (stored + 1) // 2
        if stored > size or pos + need > len(data):
            raise FormatError(f"deep compression file: layer {name} is truncated or absurd")
        codebook = np.frombuffer(data[pos : pos + 1024], dtype="<f4")
        pos += 1024
        bias = np.frombuffer(data[pos : pos + 4 * c_out], dtype="<f4")
        pos += 4 * c_out
        for what, values in (("codebook", codebook), ("biases", bias)):
            if not np.isfinite(values).all():
                raise FormatError(
                    f"deep compression file: layer {name}: NaN or infinity in its {what}"
                )
        index = np.frombuffer(data[pos : pos + stored], dtype=np.uint8).astype(np.int64)
        pos += stored
        packed = np.frombuffer(data[pos : pos + (stored + 1) // 2], dtype=np.uint8)
        pos += (stored + 1) // 2
        gaps = np.stack([packed & 15, packed >> 4], axis=1).ravel()[:stored].astype(np.int64)
        positions = np.cumsum(gaps + 1) - 1
        if stored and positions[-1] >= size:
            raise FormatError(f"deep compression file: layer {name} positions overflow")
        flat = np.zeros(size, dtype=np.float32)
        flat[positions] = codebook[index]
        weights[name + ".weight"] = flat.reshape(shape)
        weights[name + ".bias"] = bias.astype(np.float32)
        info["layers"].append(
            {"name": name, "stored": int(stored), "nonzero": int((flat != 0).sum()), "size": size}
        )
    if pos != len(data):
        raise FormatError(f"deep compression file: {len(data) - pos} unexplained trailing bytes")
    info["bytes"] = len(data)
    return weights, info
