"""What ``python -m fpga.compress``'s commands share: option checks, the fidelity refusal and the
``inspect`` printout (``compress``, ``import-deepcompression`` and ``import-onnx`` all use them)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fpga.spec.errors import UserError
from fpga.spec.preprocessing import check_preprocess
from fpga.spec.sqz import CODING_HUFFMAN


class FidelityError(UserError):
    """A compressed model below the --min-agreement the user asked for (nothing is written)."""


def check_fraction(value: float | None, option: str, low_open: bool) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (0 < value if low_open else 0 <= value) and value <= 1
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise UserError(f"{option} must be a fraction in {interval}, not {value}")


def check_output(path: str) -> None:
    """Fail before any work when ``-o`` cannot be written (the write itself is atomic too)."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"-o {path} is a folder; name the .sqz file to write")
    if not target.parent.is_dir():
        raise UserError(f"-o {path}: the folder {target.parent} does not exist")


def print_inspect(info: dict, sizes: dict | None = None) -> None:
    coding = "Huffman" if info["coding"] == CODING_HUFFMAN else "fixed-width"
    print(
        f"{info['variant']} at {info['input_size']} px, {coding} coding, "
        f"{info['bytes']:,} bytes ({info['bytes'] / 1e6:.3f} MB)"
    )
    labels = info.get("labels")
    shown = "ImageNet" if labels is None else ", ".join(labels[:5])
    more = "" if labels is None or len(labels) <= 5 else f", ... ({len(labels)})"
    print(f"classes: {info['classes']} (labels: {shown}{more})")
    print(f"preprocessing: {check_preprocess(info['preprocess']).describe()}")
    print(f"{'layer':<20} {'shape':>16} {'bits':>4} {'codebook':>8} {'density':>8} {'bytes':>9}")
    total, nonzero = 0, 0
    for layer in info["layers"]:
        shape = "x".join(str(v) for v in layer["shape"])
        print(
            f"{layer['name']:<20} {shape:>16} {layer['bits']:>4} {layer['codebook']:>8} "
            f"{layer['density']:>8.1%} {layer['bytes']:>9,}"
        )
        size = int(np.prod(layer["shape"]))
        total += size
        nonzero += round(layer["density"] * size)
    print(
        f"{'total':<20} {'':>16} {'':>4} {'':>8} {nonzero / total:>8.1%} {info['bytes']:>9,}"
        f"   ({nonzero:,} of {total:,} weights nonzero)"
    )
