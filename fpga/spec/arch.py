"""SqueezeNet's architectures as data (Table 1 of the paper): variants, fire shapes, pools.

No torch: the host, the compiler and the file reader use these facts; ``fpga.toolflow.model`` builds
the torch modules from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fpga.spec.errors import UserError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
VARIANTS = ("v1.0", "v1.1", "simple-bypass", "complex-bypass")
#: the ``variant`` of a network imported from an ONNX file (fpga.toolflow.onnx_import): its
#: graph is its own, not one of the tables below
IMPORTED = "onnx"
#: ImageNet's classes: the bundled variants' output, and a model file's unless it says otherwise
NUM_CLASSES = 1000


class ModelError(UserError, ValueError):
    """A user-fixable problem with a variant name or a weight file; the message names the fix."""


# (squeeze1x1, expand1x1, expand3x3) of fire2..fire9 — identical in v1.0 and v1.1 (Table 1)
FIRE_SHAPES = {
    2: (16, 64, 64),
    3: (16, 64, 64),
    4: (32, 128, 128),
    5: (32, 128, 128),
    6: (48, 192, 192),
    7: (48, 192, 192),
    8: (64, 256, 256),
    9: (64, 256, 256),
}


@dataclass(frozen=True)
class Arch:
    conv1_channels: int
    conv1_kernel: int
    pool_after: tuple[str, ...]  # max-pool 3x3/2 (ceil) follows these stages
    identity_bypass: tuple[int, ...] = ()  # fire modules with a simple (identity) bypass
    conv_bypass: tuple[int, ...] = ()  # fire modules with a 1x1 conv bypass (complex)


ARCHS = {
    "v1.0": Arch(96, 7, ("conv1", "fire4", "fire8")),
    "v1.1": Arch(64, 3, ("conv1", "fire3", "fire5")),
    "simple-bypass": Arch(96, 7, ("conv1", "fire4", "fire8"), identity_bypass=(3, 5, 7, 9)),
    "complex-bypass": Arch(
        96, 7, ("conv1", "fire4", "fire8"), identity_bypass=(3, 5, 7, 9), conv_bypass=(2, 4, 6, 8)
    ),
}


def check_variant(variant: str) -> Arch:
    if variant not in ARCHS:
        raise ModelError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    return ARCHS[variant]


def fire_input_channels(variant: str) -> dict[int, int]:
    """Input channel count of every fire module of ``variant``."""
    arch = check_variant(variant)
    channels, result = arch.conv1_channels, {}
    for n, (_, e1, e3) in FIRE_SHAPES.items():
        result[n] = channels
        channels = e1 + e3
    return result


def conv_shapes(variant: str) -> dict[str, tuple[int, int, int, int]]:
    """Every conv layer's weight shape (C_out, C_in, k, k) by layer name, from the tables
    above: the shapes the trained weights must have, known without them."""
    arch = check_variant(variant)
    k = arch.conv1_kernel
    shapes = {"conv1": (arch.conv1_channels, 3, k, k)}
    for n, c_in in fire_input_channels(variant).items():
        squeeze, e1, e3 = FIRE_SHAPES[n]
        shapes[f"fire{n}.squeeze"] = (squeeze, c_in, 1, 1)
        shapes[f"fire{n}.expand1x1"] = (e1, squeeze, 1, 1)
        shapes[f"fire{n}.expand3x3"] = (e3, squeeze, 3, 3)
        if n in arch.conv_bypass:
            shapes[f"fire{n}.bypass"] = (e1 + e3, c_in, 1, 1)
    last = FIRE_SHAPES[max(FIRE_SHAPES)]
    shapes["conv10"] = (NUM_CLASSES, last[1] + last[2], 1, 1)
    return shapes
