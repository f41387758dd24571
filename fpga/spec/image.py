"""From a photo to the int8-ready input tensor, and from logits to labels: no torch.

A model's preprocessing (:mod:`fpga.spec.preprocessing`; Caffe, what the released weights were
trained with, unless the model file says otherwise), the bundled sample photos, the 1000
ImageNet labels (or the model's own) and the top-5 printer. The host, the toolflow and the
benches use this one definition.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fpga.spec.arch import DATA_DIR
from fpga.spec.errors import UserError
from fpga.spec.graph import check_input_size
from fpga.spec.preprocessing import CAFFE, Preprocessing

#: Caffe mean of the training set, in B, G, R order (fpga.spec.preprocessing.CAFFE's)
MEAN_BGR = np.array(CAFFE.mean[::-1], dtype=np.float32)
PHOTOS_DIR = DATA_DIR / "photos"
DEFAULT_SIZE = 227
#: the largest image decoded (pixels and side): a 48 MP phone photo fits; a decompression bomb
#: (a small file that decodes to gigabytes) does not. Pillow's own bomb check is made an error too.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
MAX_IMAGE_SIDE = 16384
#: what transparent pixels are composited over: the Caffe mean colour, so they become 0 (no
#: signal) after mean subtraction rather than white or black edges
BACKGROUND_RGB = tuple(int(v) for v in MEAN_BGR[::-1])
#: 16-bit modes (scaled to 8 bits by 255/65535, not clipped); "I" is what some Pillow versions
#: give a 16-bit greyscale PNG, and is accepted when its values are within 0..65535
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageError(UserError, ValueError):
    """An image that cannot be read or decoded."""


def bundled_photos() -> list[Path]:
    """The sample photos shipped with the package (sorted)."""
    return sorted(PHOTOS_DIR.glob("*.jpg"))


def load_labels() -> list[str]:
    """The 1000 ImageNet class names in index order."""
    return (DATA_DIR / "imagenet_classes.txt").read_text().splitlines()


def model_labels(network) -> list[str]:
    """The class names of a :class:`fpga.spec.network.QuantizedNetwork`: its own (a model
    imported with ``--labels``), else the ImageNet names for 1000 classes, else ``class N``."""
    if network.labels is not None:
        return list(network.labels)
    classes = network.classes
    return load_labels() if classes == 1000 else [f"class {i}" for i in range(classes)]


def load_image(image):
    """A path or PIL image -> an 8-bit RGB PIL image, or :class:`ImageError` with the reason.

    Any mode Pillow opens: 8-bit RGB/grey/palette as they are; 16-bit grey (``I;16``, ``I``)
    scaled to 8 bits (``round(v * 255 / 65535)``); alpha (RGBA, LA, PA, palette transparency)
    composited over :data:`BACKGROUND_RGB`; CMYK and YCbCr by Pillow's conversion; 32-bit float
    (``F``) and other modes without a defined range are refused. A multi-frame file (GIF, TIFF)
    gives its first frame. Images above :data:`MAX_IMAGE_PIXELS` or :data:`MAX_IMAGE_SIDE`, and
    decompression bombs, are refused before they are decoded.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow warns (DecompressionBombWarning) above its pixel limit: refuse, don't decode
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = image if isinstance(image, Image.Image) else Image.open(image)
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageError(f"image {image} is empty ({width}x{height})")
            if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
                raise ImageError(
                    f"image {image} is {width}x{height}: more than {MAX_IMAGE_PIXELS:,} pixels or "
                    f"a side above {MAX_IMAGE_SIDE} (a decompression bomb?); shrink it first"
                )
            img.load()
            return _to_rgb(img, image)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"image not found: {image}") from None
    except IsADirectoryError:
        raise ImageError(f"{image} is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image {image} is a decompression bomb (too many pixels)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on bad files
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ImageError(f"cannot read image {image}: {reason}") from None


def _to_rgb(img, source):
    from PIL import Image

    mode = img.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(
                f"image {source}: 32-bit integer pixels outside 0..65535 have no defined range; "
                "save it as 8 or 16 bits"
            )
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        raise ImageError(
            f"image {source}: floating-point pixels (mode F) have no defined range; "
            "save it as 8 or 16 bits"
        )
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:  # a mode Pillow cannot convert (e.g. LAB, HSV)
        raise ImageError(f"image {source}: mode {mode} has no RGB conversion ({exc})") from None


def preprocess(image, size: int = DEFAULT_SIZE, preprocessing: Preprocessing = CAFFE) -> np.ndarray:
    """A path or PIL image -> float32 (3, size, size) as ``preprocessing`` says (default Caffe).

    :func:`load_image` (any mode -> 8-bit RGB) -> resize (bilinear; the whole image, or the
    short side to ``round(size / crop_fraction)`` and the centre cut out) -> 0..255 ->
    ``(pixel - mean) / std`` per channel -> the channel order. ``size`` must be an input size
    the tools run (:func:`fpga.spec.graph.check_input_size`).
    """
    from PIL import Image

    check_input_size(size, "the input size")
    img = load_image(image)
    if preprocessing.resize == "stretch":
        img = img.resize((size, size), Image.BILINEAR)
    else:
        # torchvision's Resize(short) + CenterCrop(size): long side int(short * long / short0),
        # crop offsets int(round((side - size) / 2))
        width, height = img.size
        short = max(size, round(size / preprocessing.crop_fraction))
        if width <= height:
            new = (short, max(size, int(short * height / width)))
        else:
            new = (max(size, int(short * width / height)), short)
        img = img.resize(new, Image.BILINEAR)
        left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
        img = img.crop((left, top, left + size, top + size))
    rgb = np.asarray(img, dtype=np.float32)
    mean = np.array(preprocessing.mean, dtype=np.float32)
    std = np.array(preprocessing.std, dtype=np.float32)
    x = (rgb - mean) / std
    if preprocessing.channel_order == "BGR":
        x = x[:, :, ::-1]
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def top5(logits: np.ndarray, labels: list[str] | None = None) -> list[dict]:
    """Top-5 of one logit vector as [{"index", "label", "prob"}] (stable order on ties)."""
    labels = load_labels() if labels is None else labels
    probs = softmax(logits)
    order = np.argsort(-probs, kind="stable")[:5]
    return [{"index": int(i), "label": labels[i], "prob": float(probs[i])} for i in order]


def print_top5(results: list[dict]) -> None:
    for result in results:
        print(result["image"])
        for rank, entry in enumerate(result["top5"], 1):
            print(f"  {rank}. {entry['prob']:7.2%}  {entry['index']:4d} {entry['label']}")
