"""SqueezeNet v1.0 / v1.1 / simple bypass / complex bypass in plain torch, with real weights.

Architecture from Table 1 and Section 6 of the SqueezeNet paper (Iandola et al., 2016); v1.1 from
the DeepScale release. torchvision is not used (it does not import beside the CPU torch wheel
here). Pretrained ImageNet weights ship in ``fpga/data/*.npz`` and load without pickle.

``python -m fpga.model summary --variant v1.0 [--size 227] [--json]`` prints Table 1.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fpga.spec.arch import (
    DATA_DIR,
    FIRE_SHAPES,
    NUM_CLASSES,
    VARIANTS,
    ModelError,
    check_variant,
    fire_input_channels,
)
from fpga.spec.cli import ArgumentParser
from fpga.spec.errors import run_cli
from fpga.spec.golden import conv_output_size, pool_output_size
from fpga.spec.graph import check_input_size

PRETRAINED = {"v1.0": "squeezenet_v1_0.npz", "v1.1": "squeezenet_v1_1.npz"}
#: Seed of the random weights of the bypass variants (they have no pretrained release).
RANDOM_WEIGHT_SEED = 2016


class Fire(nn.Module):
    """squeeze 1x1 -> ReLU -> (expand 1x1 | expand 3x3 pad 1) -> ReLU -> concat [+ bypass]."""

    def __init__(self, c_in: int, s1: int, e1: int, e3: int, bypass: str | None = None):
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, s1, 1)
        self.expand1x1 = nn.Conv2d(s1, e1, 1)
        self.expand3x3 = nn.Conv2d(s1, e3, 3, padding=1)
        self.bypass_kind = bypass
        if bypass == "identity" and c_in != e1 + e3:
            raise ValueError("identity bypass needs equal input and output channels")
        # the complex bypass is a linear 1x1 projection (no ReLU), added to the fire output
        self.bypass = nn.Conv2d(c_in, e1 + e3, 1) if bypass == "conv" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.squeeze(x))
        out = torch.cat([torch.relu(self.expand1x1(s)), torch.relu(self.expand3x3(s))], 1)
        if self.bypass_kind == "identity":
            out = out + x
        elif self.bypass_kind == "conv":
            out = out + self.bypass(x)
        return out


class SqueezeNet(nn.Module):
    """SqueezeNet for 3-channel images in Caffe preprocessing; returns (N, 1000) logits."""

    def __init__(self, variant: str = "v1.0"):
        super().__init__()
        arch = check_variant(variant)
        self.variant = variant
        self.arch = arch
        self.conv1 = nn.Conv2d(3, arch.conv1_channels, arch.conv1_kernel, stride=2)
        inputs = fire_input_channels(variant)
        for n, (s1, e1, e3) in FIRE_SHAPES.items():
            bypass = (
                "identity"
                if n in arch.identity_bypass
                else "conv"
                if n in arch.conv_bypass
                else None
            )
            setattr(self, f"fire{n}", Fire(inputs[n], s1, e1, e3, bypass))
        self.dropout = nn.Dropout(0.5)
        self.conv10 = nn.Conv2d(512, NUM_CLASSES, 1)

    def stages(self) -> list[str]:
        return ["conv1", *[f"fire{n}" for n in FIRE_SHAPES], "conv10"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = nn.functional.max_pool2d(x, 3, 2, ceil_mode=True)
        for n in FIRE_SHAPES:
            x = getattr(self, f"fire{n}")(x)
            if f"fire{n}" in self.arch.pool_after:
                x = nn.functional.max_pool2d(x, 3, 2, ceil_mode=True)
        x = torch.relu(self.conv10(self.dropout(x)))
        return x.mean(dim=(2, 3))


def build_model(variant: str = "v1.0") -> SqueezeNet:
    """An untrained (default-initialised) model of ``variant``."""
    return SqueezeNet(variant)


def expected_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """Weight/bias key -> shape for ``variant`` (the npz keys)."""
    return {k: tuple(v.shape) for k, v in build_model(variant).state_dict().items()}


def load_weights(variant: str = "v1.0", path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Float32 weights of ``variant`` by state-dict key (OIHW convs).

    v1.0/v1.1 load the bundled pretrained ImageNet weights (or ``path``); the bypass variants
    get seeded He-initialised random weights (there is no pretrained release of them).
    Raises :class:`ModelError` for a missing/corrupt file or wrong shapes.
    """
    check_variant(variant)
    expected = expected_shapes(variant)
    if path is None and variant not in PRETRAINED:
        return random_weights(variant)
    path = Path(path) if path is not None else DATA_DIR / PRETRAINED[variant]
    try:
        with np.load(path, allow_pickle=False) as npz:
            weights = {k: np.asarray(npz[k], dtype=np.float32) for k in npz.files}
    except FileNotFoundError:
        raise ModelError(f"weight file not found: {path}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelError(f"weight file {path} is not a readable .npz ({exc})") from None
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ModelError(
            f"weight file {path} lacks {len(missing)} arrays for {variant}: {missing[:4]}"
        )
    for key, shape in expected.items():
        if weights[key].shape != shape:
            raise ModelError(
                f"weight file {path}: {key} has shape {weights[key].shape}, {variant} needs {shape}"
            )
        if not np.isfinite(weights[key]).all():
            raise ModelError(f"weight file {path}: {key} contains NaN or infinity")
    return {k: weights[k] for k in expected}


def random_weights(variant: str, seed: int = RANDOM_WEIGHT_SEED) -> dict[str, np.ndarray]:
    """Seeded He-normal weights and small biases for every layer of ``variant``."""
    rng = np.random.default_rng(seed)
    weights = {}
    for key, shape in expected_shapes(variant).items():
        if key.endswith("weight"):
            fan_in = int(np.prod(shape[1:]))
            weights[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            weights[key] = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    return weights


def load_model(variant: str = "v1.0", weights: dict[str, np.ndarray] | None = None) -> SqueezeNet:
    """A model of ``variant`` in eval mode with ``weights`` (default: :func:`load_weights`)."""
    model = build_model(variant)
    weights = load_weights(variant) if weights is None else weights
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    return model.eval()


# -- Table 1 ----------------------------------------------------------------------------------
def layer_table(variant: str = "v1.0", size: int = 227) -> list[dict]:
    """Per-layer rows of Table 1: name, output (C, H, W), s1x1/e1x1/e3x3, params, MACs."""
    arch = check_variant(variant)
    if size < 32:
        raise ModelError(f"input size {size} is too small for SqueezeNet (>= 32)")
    rows: list[dict] = []
    h = conv_output_size(size, arch.conv1_kernel, 2, 0)
    c = arch.conv1_channels
    k = arch.conv1_kernel
    rows.append(_row("conv1", (c, h, h), None, 3 * c * k * k + c, 3 * c * k * k * h * h))

    def pool(name: str) -> None:
        nonlocal h
        h = pool_output_size(h)
        rows.append(_row(name, (c, h, h), None, 0, 0))

    pool("maxpool1")
    pools = 1
    for n, (s1, e1, e3) in FIRE_SHAPES.items():
        c_in = c
        params = c_in * s1 + s1 + s1 * e1 + e1 + s1 * e3 * 9 + e3
        macs = (c_in * s1 + s1 * e1 + s1 * e3 * 9) * h * h
        if n in arch.conv_bypass:
            params += c_in * (e1 + e3) + e1 + e3
            macs += c_in * (e1 + e3) * h * h
        c = e1 + e3
        rows.append(_row(f"fire{n}", (c, h, h), (s1, e1, e3), params, macs))
        if f"fire{n}" in arch.pool_after:
            pools += 1
            pool(f"maxpool{pools}")
    rows.append(_row("conv10", (NUM_CLASSES, h, h), None, 512 * 1000 + 1000, 512 * 1000 * h * h))
    c = NUM_CLASSES
    rows.append(_row("avgpool10", (NUM_CLASSES, 1, 1), None, 0, 0))
    return rows


def _row(name, shape, fire, params, macs) -> dict:
    s1, e1, e3 = fire if fire else (None, None, None)
    return {
        "name": name,
        "output": list(shape),
        "s1x1": s1,
        "e1x1": e1,
        "e3x3": e3,
        "params": int(params),
        "macs": int(macs),
    }


def summary(variant: str = "v1.0", size: int = 227) -> dict:
    rows = layer_table(variant, size)
    return {
        "variant": variant,
        "size": size,
        "layers": rows,
        "totals": {"params": sum(r["params"] for r in rows), "macs": sum(r["macs"] for r in rows)},
    }


def format_summary(table: dict) -> str:
    lines = [
        f"SqueezeNet {table['variant']} at {table['size']}x{table['size']}",
        f"{'layer':<10} {'output':>14} {'s1x1':>5} {'e1x1':>5} {'e3x3':>5}"
        f" {'params':>10} {'MACs':>13}",
    ]
    for r in table["layers"]:
        out = "x".join(str(v) for v in r["output"])
        fire = [("" if r[k] is None else str(r[k])) for k in ("s1x1", "e1x1", "e3x3")]
        lines.append(
            f"{r['name']:<10} {out:>14} {fire[0]:>5} {fire[1]:>5} {fire[2]:>5} "
            f"{r['params']:>10,} {r['macs']:>13,}"
        )
    t = table["totals"]
    lines.append(
        f"{'total':<10} {'':>14} {'':>5} {'':>5} {'':>5} {t['params']:>10,} {t['macs']:>13,}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m fpga.model", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="reproduce Table 1 of the paper")
    p.add_argument("--variant", default="v1.0", help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--size", type=int, default=227, help="input image side in pixels")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    def run() -> int:
        check_input_size(args.size, "--size")
        table = summary(args.variant, args.size)
        print(json.dumps(table, indent=2) if args.json else format_summary(table))
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
