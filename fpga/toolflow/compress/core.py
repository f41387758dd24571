"""Deep Compression of the quantized network: pruning, k-means weight sharing, sparse positions.

Pipeline (``compress_network``):

1. **prune** the float weights per layer by magnitude, keeping ``keep_ratios[layer]`` of them
   (``density=`` rescales the per-layer densities of the Deep Compression release, written down
   in ``RELEASE_DENSITY`` (33.4 % overall for v1.0), to any target). Without ``density`` nothing
   is pruned: v1.0's release weights are pruned already (with retraining), and pruning the dense
   v1.1 to the release's densities *without* retraining breaks it (top-1 agreement with the float
   model 0/3 on the bundled photos at 6 bits; docs/compression.md has the measurements);
2. **quantize** (``fpga.toolflow.quant.quantize_network`` on the pruned weights: per-channel int8
and
   re-calibrated activations);
3. **share weights**: per layer, k-means on the nonzero int8 weights into ``2**bits - 1`` int8
   centroids (linear initialisation over [min, max], as Deep Compression), index 0 reserved for
   exact zero, so the codebook lives on the int8 grid and the device's LUT yields int8 weights;
4. **encode** (in ``fpga.spec.sqz``, the file format): relative positions of the nonzero indices
with a
   bounded gap (filler zeros bridge longer gaps, as Deep Compression) and canonical Huffman
   coding of both the index and the gap streams.
"""

from __future__ import annotations

import numpy as np

from fpga.spec.network import QuantizedNetwork
from fpga.toolflow.quant import load_weights, quantize_network

#: nonzero fraction per conv layer in the Deep Compression release of SqueezeNet v1.0
#: (measured from fpga/data/squeezenet_v1_0.npz; used as the default keep ratios)
RELEASE_DENSITY: dict[str, float] = {}


def release_densities() -> dict[str, float]:
    if not RELEASE_DENSITY:
        weights = load_weights("v1.0")
        for key, w in weights.items():
            if key.endswith(".weight"):
                RELEASE_DENSITY[key[: -len(".weight")]] = float((w != 0).mean())
    return RELEASE_DENSITY


def keep_ratios(network_layers: list[str]) -> dict[str, float]:
    """Per-layer keep ratios: the release's ratios (0.337 for layers it does not have)."""
    base = release_densities()
    return {name: base.get(name, 0.337) for name in network_layers}


def prune_weights(
    weights: dict[str, np.ndarray], density: float | None = None
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Magnitude pruning per conv layer. Returns (pruned weights, keep ratio per layer)."""
    names = [k[: -len(".weight")] for k in weights if k.endswith(".weight")]
    ratios = keep_ratios(names)
    if density is not None:
        if not 0 < density <= 1:
            raise ValueError(f"density must be in (0, 1], got {density}")
        sizes = {n: weights[n + ".weight"].size for n in names}
        total = sum(sizes.values())
        current = sum(ratios[n] * sizes[n] for n in names) / total
        scale = density / current
        for _ in range(20):  # scale, clip at 1, repeat so the clipped mass is redistributed
            clipped = {n: min(1.0, ratios[n] * scale) for n in names}
            achieved = sum(clipped[n] * sizes[n] for n in names) / total
            if abs(achieved - density) < 1e-6:
                break
            scale *= density / achieved
        ratios = clipped
    pruned = dict(weights)
    for name in names:
        w = weights[name + ".weight"]
        keep = int(round(ratios[name] * w.size))
        flat = np.abs(w).ravel()
        if keep < w.size:
            threshold_index = np.argsort(-flat, kind="stable")[:keep]
            mask = np.zeros(w.size, dtype=bool)
            mask[threshold_index] = True
            pruned[name + ".weight"] = np.where(mask.reshape(w.shape), w, 0).astype(np.float32)
    return pruned, ratios


def kmeans_codebook(values: np.ndarray, bits: int, iterations: int = 30) -> np.ndarray:
    """1-D k-means of int8 weights (zeros excluded) -> int8 codebook with entry 0 = 0.

    Linear initialisation over [min, max]; Lloyd iterations on the value histogram (the values
    live on the 255-point int8 grid, so this is exact and fast); centroids rounded to integers.
    """
    k = (1 << bits) - 1
    nonzero = values[values != 0].astype(np.int64)
    if len(nonzero) == 0:
        return np.zeros(1, dtype=np.int8)
    grid = np.arange(-127, 128)
    hist = np.bincount(nonzero + 127, minlength=255).astype(np.float64)
    present = grid[hist > 0]
    if len(present) <= k:
        centroids = present.astype(np.float64)
    else:
        centroids = np.linspace(nonzero.min(), nonzero.max(), k)
        for _ in range(iterations):
            assign = np.argmin(np.abs(grid[:, None] - centroids[None, :]), axis=1)
            new = centroids.copy()
            for j in range(k):
                w = hist[assign == j]
                if w.sum() > 0:
                    new[j] = (grid[assign == j] * w).sum() / w.sum()
            if np.allclose(new, centroids):
                break
            centroids = new
    cb = np.unique(np.clip(np.floor(np.abs(centroids) + 0.5) * np.sign(centroids), -127, 127))
    cb = cb[cb != 0].astype(np.int8)
    return np.concatenate([[0], cb]).astype(np.int8)


def quantize_to_codebook(weight: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """int8 weights -> uint8 indices of the nearest codebook entry (zeros -> index 0)."""
    values = codebook[1:].astype(np.int64)
    w = weight.astype(np.int64).ravel()
    if len(values) == 0:
        return np.zeros(weight.shape, dtype=np.uint8)
    nearest = np.argmin(np.abs(w[:, None] - values[None, :]), axis=1) + 1
    return np.where(w == 0, 0, nearest).astype(np.uint8).reshape(weight.shape)


def compress_network(
    variant: str = "v1.0",
    bits: int = 6,
    density: float | None = None,
    size: int = 227,
    weights: dict[str, np.ndarray] | None = None,
    nodes: list[dict] | None = None,
    calibration_images: list[np.ndarray] | None = None,
) -> tuple[QuantizedNetwork, dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """Prune + quantize + share: returns (network with shared weights, {layer: (codebook,
    indices)}, info with keep ratios).

    ``nodes``/``weights``/``calibration_images``: an imported float graph, its weights and the
    preprocessed images to calibrate on (``fpga.toolflow.onnx_import``); by default ``variant``'s
    graph and bundled weights, calibrated on the bundled photos."""
    if bits not in (4, 6, 8):
        raise ValueError(f"bits must be 4, 6 or 8, got {bits}")
    weights = load_weights(variant) if weights is None else weights
    if density is None:
        # v1.0: the release is pruned already; others: no retraining here, so no pruning by default
        pruned = weights
        ratios = {
            key[: -len(".weight")]: float((w != 0).mean())
            for key, w in weights.items()
            if key.endswith(".weight")
        }
    else:
        pruned, ratios = prune_weights(weights, density)
    network = quantize_network(
        variant,
        weights=pruned,
        size=size,
        calibration_images=calibration_images,
        nodes=nodes,
    )
    shared: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    new_weights = {}
    for layer in network.conv_layers:
        codebook = kmeans_codebook(layer.weight, bits)
        indices = quantize_to_codebook(layer.weight, codebook)
        shared[layer.name] = (codebook, indices)
        new_weights[layer.name] = codebook[indices]
    # "quantized": the int8 network before weight sharing (its fidelity is reported beside)
    info = {"variant": variant, "bits": bits, "keep_ratios": ratios, "quantized": network}
    return network.replace_weights(new_weights), shared, info
