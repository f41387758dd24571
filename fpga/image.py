"""From a photo to the int8-ready input tensor, and from logits to labels: no torch.

Caffe preprocessing (what the released weights were trained with), the bundled sample photos,
the 1000 ImageNet labels and the top-5 printer. The host, the toolflow and the benches use
this one definition.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fpga.arch import DATA_DIR
from fpga.errors import UserError

#: Caffe mean of the training set, in B, G, R order
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
PHOTOS_DIR = DATA_DIR / "photos"
DEFAULT_SIZE = 227


class ImageError(UserError, ValueError):
    """An image that cannot be read or decoded."""


def bundled_photos() -> list[Path]:
    """The sample photos shipped with the package (sorted)."""
    return sorted(PHOTOS_DIR.glob("*.jpg"))


def load_labels() -> list[str]:
    """The 1000 ImageNet class names in index order."""
    return (DATA_DIR / "imagenet_classes.txt").read_text().splitlines()


def preprocess(image, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Caffe preprocessing: path or PIL image -> float32 (3, size, size).

    RGB -> resize the whole image (bilinear, no crop) -> 0..255 -> BGR -> minus the mean.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = image if isinstance(image, Image.Image) else Image.open(image)
        img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    except FileNotFoundError:
        raise ImageError(f"image not found: {image}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"cannot read image {image}: {exc}") from None
    rgb = np.asarray(img, dtype=np.float32)
    bgr = rgb[:, :, ::-1] - MEAN_BGR
    return np.ascontiguousarray(bgr.transpose(2, 0, 1))


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
