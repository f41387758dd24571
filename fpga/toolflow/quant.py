"""Post-training int8 quantization of SqueezeNet into the graph the golden model runs.

* weights: int8 per output channel, symmetric, ``scale_c = max|w_c| / 127``, round half away
  from zero (``np.round`` is half-to-even; we use ``floor(|x| + 0.5)`` with the sign);
* activations: int8 per tensor, symmetric, scale calibrated as ``max|a| / 127`` over the bundled
  sample photos (at the inference size);
* bias: int32 at scale ``s_in * s_w[c]``; requantization ``M = s_in * s_w[c] / s_out`` as a
  16-bit multiplier and a right shift, ``M ~= multiplier / 2**shift`` with the multiplier in
  [2**15, 2**16) for the most precision (see :func:`fpga.spec.golden.requantize` for rounding);
* bypass add: both operands rescaled into the calibrated scale of the sum, one shared shift;
* global average pool: the int32 sum, with ``1/(H*W)`` folded into the logit scale.

CLIs: ``python -m fpga.quant classify IMAGE... --variant v1.0 --precision int8 [--json]`` and
``python -m fpga.quant report [--json]``.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from fpga.spec import floatgraph, golden
from fpga.spec.arch import VARIANTS, check_variant
from fpga.spec.cli import ArgumentParser
from fpga.spec.errors import run_cli
from fpga.spec.floatgraph import float_graph
from fpga.spec.graph import check_input_size
from fpga.spec.image import (
    DEFAULT_SIZE,
    bundled_photos,
    load_image,
    load_labels,
    model_labels,
    preprocess,
    print_top5,
    top5,
)
from fpga.spec.network import QLayer, QuantizedNetwork
from fpga.spec.preprocessing import CAFFE
from fpga.spec.sqz import load_network


# torch is imported by the functions that run the torch model, not by this module: quantizing an
# imported ONNX graph (fpga.toolflow.onnx_import) runs without torch
def load_model(*args, **kwargs):
    """:func:`fpga.toolflow.model.load_model` (torch), imported on first use."""
    from fpga.toolflow.model import load_model as load

    return load(*args, **kwargs)


def load_weights(*args, **kwargs):
    """:func:`fpga.toolflow.model.load_weights` (torch), imported on first use."""
    from fpga.toolflow.model import load_weights as load

    return load(*args, **kwargs)


# -- integer parameter helpers ----------------------------------------------------------------
def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (the rule for weights, biases and the input)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float (C_out, C_in, k, k) -> (int8 same shape, float64 scale (C_out,)).

    Per-output-channel symmetric: ``scale = max|w| / 127``; an all-zero channel gets scale 1.
    """
    w = np.asarray(weight, dtype=np.float64)
    peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    q = round_half_away(w / scale.reshape(-1, *([1] * (w.ndim - 1))))
    return np.clip(q, -127, 127).astype(np.int8), scale


def quantize_multiplier(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive real factors -> (multiplier uint16 in [2**15, 2**16), shift 0..47) as int64.

    ``real ~= multiplier / 2**shift``. Factors too small for shift 47 lose precision (a tiny
    multiplier); factors >= 2**16 cannot be represented and raise.
    """
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if (real <= 0).any() or not np.isfinite(real).all():
        raise ValueError("requantization factors must be positive and finite")
    # floor(log2(real)) from the exponent (exact; np.log2 may differ by an ulp between CPUs)
    shift = 15 - (np.frexp(real)[1].astype(np.int64) - 1)
    if (shift < 0).any():
        raise ValueError(f"requantization factor {real.max():g} too large for a 16-bit multiplier")
    shift = np.minimum(shift, golden.MAX_SHIFT)
    mult = np.floor(np.ldexp(real, shift) + 0.5).astype(np.int64)
    overflow = mult >= 2**16  # rounding carried into bit 16
    mult = np.where(overflow, mult // 2, mult)
    shift = np.where(overflow, shift - 1, shift)
    return mult, shift


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    q = round_half_away(np.asarray(bias, dtype=np.float64) / scale)
    return np.clip(q, golden.ACC_MIN, golden.ACC_MAX).astype(np.int32)


def calibrate(
    variant: str,
    weights: dict[str, np.ndarray],
    images: list[np.ndarray],
    nodes: list[dict] | None = None,
) -> dict[str, float]:
    """Per-tensor activation scale (max|a| / 127) of every graph node over ``images``.

    ``nodes``: the float graph (default ``variant``'s; an imported graph brings its own).
    The activations come from :mod:`fpga.spec.floatgraph` (float64, one fixed summation order), so
    the scales, and the model file they go into, are the same bits on every machine."""
    nodes = float_graph(variant) if nodes is None else nodes
    peaks: dict[str, float] = {}
    for image in images:
        for name, tensor in floatgraph.run(nodes, weights, image).items():
            peaks[name] = max(peaks.get(name, 0.0), float(np.abs(tensor).max()))
    return {name: (peak / 127.0 if peak > 0 else 1.0) for name, peak in peaks.items()}


def quantize_network(
    variant: str = "v1.0",
    weights: dict[str, np.ndarray] | None = None,
    size: int = DEFAULT_SIZE,
    calibration_images: list[np.ndarray] | None = None,
    nodes: list[dict] | None = None,
) -> QuantizedNetwork:
    """Quantize ``variant`` (default weights: :func:`fpga.toolflow.model.load_weights`) to int8.

    Activation scales are calibrated on ``calibration_images`` (preprocessed float images;
    default: the bundled photos at ``size``). ``nodes``: the float graph of an imported network
    (``fpga.toolflow.onnx_import``, ``variant`` then ``"onnx"``, ``weights`` required); by
    default ``variant``'s.
    """
    if nodes is None:
        check_variant(variant)
        nodes = float_graph(variant)
        weights = load_weights(variant) if weights is None else weights
    if calibration_images is None:
        calibration_images = [preprocess(p, size) for p in bundled_photos()]
    scales = calibrate(variant, weights, calibration_images, nodes)
    layers: list[QLayer] = []
    for node in nodes:
        name, op, inputs = node["name"], node["op"], tuple(node["inputs"])
        out_scale = scales[name]
        if op == "conv":
            in_scale = scales[inputs[0]]
            w_q, w_scale = quantize_weight(weights[name + ".weight"])
            acc_scale = in_scale * w_scale
            mult, shift = quantize_multiplier(acc_scale / out_scale)
            layers.append(
                QLayer(
                    name,
                    op,
                    inputs,
                    out_scale,
                    weight=w_q,
                    bias=quantize_bias(weights[name + ".bias"], acc_scale),
                    multiplier=mult,
                    shift=shift,
                    weight_scale=w_scale,
                    stride=node["stride"],
                    pad=node["pad"],
                    relu=node["relu"],
                )
            )
        elif op == "maxpool":
            # same scale as the input
            ceil_mode = node.get("ceil_mode", True)
            layers.append(QLayer(name, op, inputs, out_scale, ceil_mode=ceil_mode))
        elif op == "concat":
            # same scale as the inputs: they must share one (calibrated on the concat)
            layers.append(QLayer(name, op, inputs, out_scale))
        elif op == "add":
            factors = np.array([scales[inputs[0]], scales[inputs[1]]]) / out_scale
            _, shift = quantize_multiplier(factors.max())
            mult = np.floor(np.ldexp(factors, shift) + 0.5).astype(np.int64)
            relu = node.get("relu", False)
            layers.append(
                QLayer(name, op, inputs, out_scale, multiplier=mult, shift=shift, relu=relu)
            )
        else:  # avgpool: int32 sum of H*W values at the input scale
            side = calibration_images[0].shape[-1]
            hw = _final_spatial(layers, side)
            layers.append(QLayer(name, op, inputs, scales[inputs[0]] / hw))
    _unify_concat_scales(layers, scales)
    return QuantizedNetwork(variant, calibration_images[0].shape[-1], scales["input"], layers)


def _unify_concat_scales(layers: list[QLayer], scales: dict[str, float]) -> None:
    """Make both expand convs of a fire module requantize into the concat's scale.

    Concat is free in hardware (output addressing), so its inputs must already share one scale.
    """
    by_name = {layer.name: layer for layer in layers}
    for layer in layers:
        if layer.op != "concat":
            continue
        for src in layer.inputs:
            conv = by_name[src]
            in_scale = scales[conv.inputs[0]]
            conv.multiplier, conv.shift = quantize_multiplier(
                in_scale * conv.weight_scale / layer.out_scale
            )
            conv.out_scale = layer.out_scale


def _final_spatial(layers: list[QLayer], size: int) -> int:
    """H*W of the tensor entering the global average pool, for an input of side ``size``."""
    side = size
    for layer in layers:
        if layer.op == "conv":
            side = golden.conv_output_size(side, layer.kernel, layer.stride, layer.pad)
        elif layer.op == "maxpool":
            side = golden.pool_output_size(side, ceil_mode=layer.ceil_mode)
    return side * side


# -- classification and fidelity ---------------------------------------------------------------
def float_logits(variant: str, image: np.ndarray, model=None) -> np.ndarray:
    import torch

    model = load_model(variant) if model is None else model
    with torch.no_grad():
        return model(torch.from_numpy(image)[None])[0].numpy().astype(np.float64)


def int8_logits(network: QuantizedNetwork, image: np.ndarray) -> np.ndarray:
    x = network.quantize_input(image)
    sums = golden.run_network(network, x, keep=False)[network.output.name]
    return network.logits(sums)


def _top5(logits: np.ndarray) -> list[int]:
    """The five largest entries' indices, ties in index order (a stable sort: the same on every
    machine, where the default sort's kernel depends on the CPU)."""
    return np.argsort(-np.asarray(logits), kind="stable")[:5].tolist()


def agreement(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """Fidelity of ``candidate`` logits against ``reference`` logits over the same images.

    top1_agreement: fraction of images with the same top-1 class; top5_agreement: mean overlap of
    the two top-5 sets (|A & B| / 5); snr_db: 10 log10(sum ref^2 / sum (ref - cand)^2).
    """
    top1 = [int(np.argmax(r) == np.argmax(c)) for r, c in zip(reference, candidate, strict=True)]
    top5s = [
        len(set(_top5(r)) & set(_top5(c))) / 5 for r, c in zip(reference, candidate, strict=True)
    ]
    ref, cand = np.concatenate(reference), np.concatenate(candidate)
    noise = float(((ref - cand) ** 2).sum())
    snr = math.inf if noise == 0 else 10 * math.log10(float((ref**2).sum()) / noise)
    return {
        "images": len(reference),
        "top1_agreement": float(np.mean(top1)),
        "top5_agreement": float(np.mean(top5s)),
        "snr_db": snr,
    }


def fidelity_report(variants=("v1.0", "v1.1"), size: int = DEFAULT_SIZE) -> list[dict]:
    """int8-vs-float fidelity per variant on the bundled photos."""
    rows = []
    photos = bundled_photos()
    images = [preprocess(p, size) for p in photos]
    for variant in variants:
        model = load_model(variant)
        network = quantize_network(variant, size=size, calibration_images=images)
        ref = [float_logits(variant, img, model) for img in images]
        cand = [int8_logits(network, img) for img in images]
        row = {"variant": variant, "size": size, **agreement(ref, cand)}
        row["float_top1"] = [int(np.argmax(r)) for r in ref]
        row["int8_top1"] = [int(np.argmax(c)) for c in cand]
        rows.append(row)
    return rows


def classify(
    images: list[str],
    variant: str = "v1.0",
    precision: str = "int8",
    model: str | None = None,
    size: int = DEFAULT_SIZE,
) -> list[dict]:
    """Top-5 per image: [{"image", "top5": [{"index", "label", "prob"}]}]."""
    labels = load_labels()
    preprocessing = CAFFE
    if model is not None:
        network = load_network(model)
        variant, size = network.variant, network.input_size
        labels, preprocessing = model_labels(network), network.preprocessing
    elif precision == "int8":
        network = quantize_network(variant, size=size)
    else:
        torch_model = load_model(variant)
    results = []
    for path in images:
        image = preprocess(path, size, preprocessing)
        if model is not None or precision == "int8":
            logits = int8_logits(network, image)
        else:
            logits = float_logits(variant, image, torch_model)
        results.append({"image": str(path), "top5": top5(logits, labels)})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m fpga.quant", description="int8 SqueezeNet")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classify", help="top-5 labels of images")
    c.add_argument("images", nargs="+")
    c.add_argument("--variant", default="v1.0", help=f"one of {', '.join(VARIANTS)}")
    c.add_argument("--precision", choices=("float", "int8"), default="int8")
    c.add_argument("--model", help="a compressed .sqz model (implies int8)")
    c.add_argument("--size", type=int, default=DEFAULT_SIZE)
    c.add_argument("--json", action="store_true")
    r = sub.add_parser("report", help="int8-vs-float fidelity on the bundled photos")
    r.add_argument("--size", type=int, default=DEFAULT_SIZE)
    r.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return run_cli(lambda: _run(args))


def _run(args) -> int:
    check_input_size(args.size, "--size")  # before any work, for both commands
    if args.command == "classify":
        check_variant(args.variant)
        for path in args.images:  # a bad image fails before the model is quantized or read
            load_image(path)
        results = classify(args.images, args.variant, args.precision, args.model, args.size)
        print(json.dumps(results, indent=2)) if args.json else print_top5(results)
        return 0
    rows = fidelity_report(size=args.size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"int8 vs float on {len(bundled_photos())} bundled photos at {args.size}px")
    print(f"{'variant':<8} {'top-1 agree':>11} {'top-5 agree':>11} {'logit SNR':>10}")
    for row in rows:
        print(
            f"{row['variant']:<8} {row['top1_agreement']:>11.0%} "
            f"{row['top5_agreement']:>11.0%} {row['snr_db']:>8.1f} dB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
