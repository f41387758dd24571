"""How a photo becomes a model's input tensor: channel order, mean/std, resize and crop.

One :class:`Preprocessing` per model. A ``.sqz`` file carries it in its graph (the ``preprocess``
object, docs/format.md); a file without one (every file written before ONNX import) means
:data:`CAFFE`, what the bundled weights were trained with. :func:`fpga.spec.image.preprocess`
applies it; :func:`check_preprocess` validates the JSON form like the rest of the graph.

The arithmetic, per pixel, on 8-bit values 0..255 and in float32:
``(pixel - mean[c]) / std[c]`` with ``mean``/``std`` given in R, G, B order and in pixel units
(0..255, as Caffe and the ONNX model zoo state them), then the channels put in
``channel_order``. torchvision's ``x / 255`` then ``(x - 0.485) / 0.229`` is the same map with
``mean = 255 * 0.485``, ``std = 255 * 0.229`` (equal up to float rounding).

Resize policies: ``stretch`` resizes the whole image to ``size`` x ``size`` (bilinear, no crop:
Caffe's deploy); ``center-crop`` resizes the short side to ``round(size / crop_fraction)``
(bilinear, aspect kept) and cuts the centre ``size`` x ``size`` (torchvision's ``Resize(256)``,
``CenterCrop(224)``: ``crop_fraction`` 0.875).

No NumPy, no Pillow: the graph checker imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fpga.spec.errors import UserError

CHANNEL_ORDERS = ("RGB", "BGR")
RESIZE_POLICIES = ("stretch", "center-crop")
#: bounds of a stored mean (pixel units) and std: anything outside is not a preprocessing
MAX_MEAN = 1e4
MIN_STD, MAX_STD = 1e-6, 1e4


class PreprocessError(UserError, ValueError):
    """A preprocessing description that is not one this project applies; names the field."""


@dataclass(frozen=True)
class Preprocessing:
    """A model's input preprocessing (see the module docstring for the arithmetic)."""

    channel_order: str = "BGR"
    mean: tuple[float, float, float] = (123.0, 117.0, 104.0)  # R, G, B in pixel units
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # R, G, B in pixel units
    resize: str = "stretch"
    crop_fraction: float = 1.0  # center-crop: size / resized short side

    def to_json(self) -> dict:
        return {
            "channel_order": self.channel_order,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "crop_fraction": self.crop_fraction,
        }

    def describe(self) -> str:
        """One line for ``fpga.compress inspect`` and the import report."""
        for name, preset in PRESETS.items():
            if preset == self:
                head = f"{name} ("
                break
        else:
            head = "custom ("
        mean = ",".join(f"{v:g}" for v in self.mean)
        std = ",".join(f"{v:g}" for v in self.std)
        resize = (
            "whole image resized"
            if self.resize == "stretch"
            else f"short side to size/{self.crop_fraction:g}, centre crop"
        )
        return f"{head}{self.channel_order}, mean {mean}, std {std} (R,G,B), {resize})"


#: Caffe (the bundled v1.0/v1.1 weights): BGR, mean 104/117/123 (B, G, R), whole image resized
CAFFE = Preprocessing()
#: torchvision's ImageNet transform: RGB / 255, mean 0.485/0.456/0.406, std 0.229/0.224/0.225,
#: short side 256 and centre crop 224 (at other sizes the same 0.875 fraction)
TORCHVISION = Preprocessing(
    channel_order="RGB",
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
    resize="center-crop",
    crop_fraction=0.875,
)
PRESETS = {"caffe": CAFFE, "torchvision": TORCHVISION}


def _number(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PreprocessError(f"field {field!r} must be a number, not {value!r:.40}")
    value = float(value)
    if not math.isfinite(value):
        raise PreprocessError(f"field {field!r} is {value}; it must be finite")
    return value


def _triple(value, field: str, lo: float, hi: float) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise PreprocessError(f"field {field!r} must be a list of 3 numbers (R, G, B)")
    out = tuple(_number(v, field) for v in value)
    if any(not lo <= v <= hi for v in out):
        raise PreprocessError(f"field {field!r} = {list(out)} leaves {lo:g}..{hi:g}")
    return out


def check_preprocess(obj) -> Preprocessing:
    """The parsed ``preprocess`` JSON object as a :class:`Preprocessing`, or
    :class:`PreprocessError` naming the field."""
    if not isinstance(obj, dict):
        raise PreprocessError("must be a JSON object")
    unknown = sorted(set(obj) - set(CAFFE.to_json()))
    if unknown:
        raise PreprocessError(f"unknown field {unknown[0]!r:.40}")
    missing = sorted(set(CAFFE.to_json()) - set(obj))
    if missing:
        raise PreprocessError(f"missing field {missing[0]!r}")
    order = obj["channel_order"]
    if order not in CHANNEL_ORDERS:
        raise PreprocessError(
            f"field 'channel_order' is {order!r:.40}, not one of {', '.join(CHANNEL_ORDERS)}"
        )
    resize = obj["resize"]
    if resize not in RESIZE_POLICIES:
        raise PreprocessError(
            f"field 'resize' is {resize!r:.40}, not one of {', '.join(RESIZE_POLICIES)}"
        )
    fraction = _number(obj["crop_fraction"], "crop_fraction")
    if not 0.25 <= fraction <= 1.0:
        raise PreprocessError(f"field 'crop_fraction' is {fraction:g}; it must be in 0.25..1")
    if resize == "stretch" and fraction != 1.0:
        raise PreprocessError("field 'crop_fraction' must be 1 when 'resize' is 'stretch'")
    return Preprocessing(
        channel_order=order,
        mean=_triple(obj["mean"], "mean", -MAX_MEAN, MAX_MEAN),
        std=_triple(obj["std"], "std", MIN_STD, MAX_STD),
        resize=resize,
        crop_fraction=fraction,
    )
