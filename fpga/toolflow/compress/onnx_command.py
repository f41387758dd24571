"""``python -m fpga.compress import-onnx MODEL.onnx -o OUT.sqz --calibration DIR ...``.

The user's ONNX SqueezeNet (``fpga.toolflow.onnx_import.read_onnx``: refused with one sentence
before any work when it has a construct the engine does not run) -> calibration on their images
with their preprocessing -> int8 quantization -> Deep Compression -> a ``.sqz`` file carrying the
classes, labels, input size and preprocessing the host needs (docs/onnx.md).

onnxruntime runs the same file on the same preprocessed tensors as the reference: the float
graph's largest logit difference and the int8 and compressed models' top-1/top-5 agreement with
it are printed, and ``--min-agreement`` refuses to write a model whose compressed top-1
agreement is below it. No torch anywhere on this path.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from fpga.spec import floatgraph
from fpga.spec.arch import IMPORTED
from fpga.spec.errors import UserError
from fpga.spec.graph import MAX_LABEL
from fpga.spec.image import load_image, preprocess, softmax
from fpga.spec.preprocessing import PRESETS, PreprocessError, Preprocessing, check_preprocess
from fpga.spec.sqz import CODING_FIXED, CODING_HUFFMAN, read_model, write_model
from fpga.toolflow import quant
from fpga.toolflow.compress.core import compress_network
from fpga.toolflow.compress.report import (
    FidelityError,
    check_fraction,
    check_output,
    print_inspect,
)
from fpga.toolflow.onnx_import import ImportedGraph, read_onnx

#: image files read from --calibration (sorted by name)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: a labels file larger than this is not a labels file
MAX_LABELS_BYTES = 16 * 1024 * 1024


def add_arguments(parser) -> None:
    """The ``import-onnx`` subcommand's options."""
    parser.add_argument("model", metavar="MODEL.onnx")
    parser.add_argument("-o", "--output", required=True, help="the .sqz file to write")
    parser.add_argument(
        "--calibration",
        required=True,
        metavar="DIR",
        help="a folder of images to calibrate the activation scales on and to measure agreement "
        "with onnxruntime (jpg/png/...; use photos like the ones the model will see)",
    )
    parser.add_argument(
        "--preprocess",
        choices=sorted(PRESETS),
        default="caffe",
        help="caffe: BGR, mean 104/117/123, whole image resized (default); torchvision: RGB / "
        "255, ImageNet mean/std, short side to size/0.875 and centre crop",
    )
    parser.add_argument("--mean", metavar="R,G,B", help="per-channel mean in pixel units 0..255")
    parser.add_argument("--std", metavar="R,G,B", help="per-channel std in pixel units 0..255")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--bgr", action="store_true", help="the model takes B, G, R channels")
    order.add_argument("--rgb", action="store_true", help="the model takes R, G, B channels")
    parser.add_argument(
        "--resize",
        choices=("stretch", "center-crop"),
        help="stretch: the whole image to S x S; center-crop: short side to S / --crop-fraction, "
        "centre S x S",
    )
    parser.add_argument("--crop-fraction", type=float, help="center-crop's S / short side")
    parser.add_argument(
        "--labels", metavar="FILE", help="class names, one per line, in output order"
    )
    parser.add_argument("--bits", type=int, choices=(4, 6, 8), default=8)
    parser.add_argument(
        "--density",
        type=float,
        help="prune to this nonzero fraction, in (0, 1] (default: no pruning: without "
        "retraining, pruning costs fidelity)",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        metavar="FRACTION",
        help="fail, writing nothing, if the compressed model's top-1 agreement with onnxruntime "
        "on the calibration images is below FRACTION (0..1)",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=64,
        help="use at most this many calibration images (the first by name; default 64)",
    )
    parser.add_argument("--no-huffman", action="store_true", help="fixed-width streams")


def _triple(text: str | None, option: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise UserError(f"{option} takes three numbers R,G,B (e.g. 123.7,116.3,103.5), not {text}")
    return values


def preprocessing_from_args(args) -> Preprocessing:
    """--preprocess's preset with --mean/--std/--bgr/--rgb/--resize/--crop-fraction applied."""
    spec = PRESETS[args.preprocess].to_json()
    mean, std = _triple(args.mean, "--mean"), _triple(args.std, "--std")
    if mean is not None:
        spec["mean"] = list(mean)
    if std is not None:
        spec["std"] = list(std)
    if args.bgr or args.rgb:
        spec["channel_order"] = "BGR" if args.bgr else "RGB"
    if args.resize is not None:
        spec["resize"] = args.resize
        if args.resize == "stretch":
            spec["crop_fraction"] = 1.0
        elif args.crop_fraction is None and spec["crop_fraction"] == 1.0:
            spec["crop_fraction"] = 0.875
    if args.crop_fraction is not None:
        spec["crop_fraction"] = args.crop_fraction
    try:
        return check_preprocess(spec)
    except PreprocessError as exc:
        raise UserError(f"preprocessing: {exc}") from None


def read_labels(path: str | None) -> list[str] | None:
    """Class names from a text file, one per line (trailing blank lines ignored)."""
    if path is None:
        return None
    file = Path(path)
    try:
        if file.stat().st_size > MAX_LABELS_BYTES:
            raise UserError(f"--labels {path}: more than {MAX_LABELS_BYTES:,} bytes")
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--labels {path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"--labels {path} is a folder; name the labels file") from None
    except UnicodeDecodeError:
        raise UserError(f"--labels {path}: not UTF-8 text") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    for number, label in enumerate(labels, 1):
        if not 0 < len(label) <= MAX_LABEL:
            raise UserError(
                f"--labels {path}: line {number} is empty or longer than {MAX_LABEL} characters"
            )
    if not labels:
        raise UserError(f"--labels {path}: no labels")
    return labels


def calibration_paths(folder: str, limit: int) -> list[Path]:
    """The image files of ``folder`` (sorted, at most ``limit``), or one UserError."""
    if limit < 1:
        raise UserError(f"--max-images must be at least 1, not {limit}")
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--calibration {folder}: not a folder (give a folder of images)")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(
            f"--calibration {folder}: no images ({', '.join(IMAGE_SUFFIXES)}); the calibration "
            "needs a few photos like the ones the model will classify"
        )
    return paths[:limit]


class Reference:
    """onnxruntime running the ONNX file on one preprocessed image at a time (the oracle)."""

    def __init__(self, path, graph: ImportedGraph):
        try:
            import onnxruntime
        except ImportError:
            raise UserError(
                "the reference run needs onnxruntime: pip install 'squeezefpga[toolflow]'"
            ) from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # the same sums every run, and one core
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{path}: onnxruntime cannot run it ({first[:200]})") from None
        self.graph = graph

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """float (3, S, S) -> the ONNX output as float64 (classes,)."""
        feed = {self.graph.input_name: np.asarray(image, dtype=np.float32)[None]}
        (out,) = self.session.run([self.graph.output_name], feed)
        return np.asarray(out, dtype=np.float64).reshape(-1)


def float_logits(graph: ImportedGraph, image: np.ndarray) -> np.ndarray:
    """The project's float graph (fpga.spec.floatgraph) on one preprocessed image."""
    return floatgraph.run(graph.nodes, graph.weights, image)[graph.output_layer]


def comparable(graph: ImportedGraph, logits: np.ndarray) -> np.ndarray:
    """Our logits in the form the ONNX output has (softmax'ed when the model ends in one)."""
    return softmax(logits) if graph.softmax else logits


def oracle_difference(graph, reference, images) -> dict:
    """Largest |float graph - onnxruntime| over ``images``, absolute and relative to the largest
    |onnxruntime output|, and the two sets of outputs."""
    ours = [comparable(graph, float_logits(graph, image)) for image in images]
    theirs = [reference(image) for image in images]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    peak = max(float(np.abs(b).max()) for b in theirs)
    return {
        "max_abs_diff": diff,
        "relative": diff / peak if peak > 0 else diff,
        "ours": ours,
        "reference": theirs,
    }


def _agreement(reference, candidate) -> dict:
    fid = quant.agreement(reference, candidate)
    return {k: fid[k] for k in ("images", "top1_agreement", "top5_agreement")}


def import_onnx(args) -> dict:
    """The whole import: checks, calibration, quantization, compression, agreement, write.
    Returns the numbers it printed (the bench and the tests read them)."""
    check_fraction(args.density, "--density", low_open=True)
    check_fraction(args.min_agreement, "--min-agreement", low_open=False)
    check_output(args.output)
    preprocessing = preprocessing_from_args(args)
    labels = read_labels(args.labels)
    paths = calibration_paths(args.calibration, args.max_images)
    for path in paths:  # a bad image fails before the model is read
        load_image(path)
    start = time.perf_counter()
    graph = read_onnx(args.model)
    if labels is not None and len(labels) != graph.classes:
        raise UserError(
            f"--labels {args.labels}: {len(labels)} labels, the model has {graph.classes} classes"
        )
    reference = Reference(args.model, graph)
    convs = sum(node["op"] == "conv" for node in graph.nodes)
    print(
        f"{args.model}: opset {graph.opset}, {len(graph.nodes)} layers ({convs} conv), "
        f"{graph.input_size} px input, {graph.classes} classes"
        f"{', softmax output' if graph.softmax else ''}"
    )
    print(f"preprocessing: {preprocessing.describe()}")
    images = [preprocess(p, graph.input_size, preprocessing) for p in paths]
    oracle = oracle_difference(graph, reference, images)
    print(
        f"float graph vs onnxruntime on {len(images)} calibration images: max |logit diff| "
        f"{oracle['max_abs_diff']:.3g} (relative {oracle['relative']:.3g})"
    )
    network, shared, info = compress_network(
        IMPORTED,
        args.bits,
        args.density,
        graph.input_size,
        weights=graph.weights,
        nodes=graph.nodes,
        calibration_images=images,
    )
    extra = {"labels": None if labels is None else tuple(labels), "preprocessing": preprocessing}
    network = dataclasses.replace(network, **extra)
    int8 = info["quantized"]
    ref = oracle["reference"]
    fid_int8 = _agreement(ref, [comparable(graph, quant.int8_logits(int8, x)) for x in images])
    fid = _agreement(ref, [comparable(graph, quant.int8_logits(network, x)) for x in images])
    for what, f in (("int8", fid_int8), (f"compressed ({args.bits}-bit)", fid)):
        print(
            f"{what} vs onnxruntime: top-1 agreement {f['top1_agreement']:.0%}, top-5 "
            f"agreement {f['top5_agreement']:.0%}"
        )
    if args.min_agreement is not None and fid["top1_agreement"] < args.min_agreement:
        raise FidelityError(
            f"top-1 agreement with onnxruntime {fid['top1_agreement']:.0%} is below "
            f"--min-agreement {args.min_agreement:.0%}; no file written (raise --bits or "
            "--density, or calibrate on more images)"
        )
    coding = CODING_FIXED if args.no_huffman else CODING_HUFFMAN
    meta = {
        "source": Path(args.model).name,
        "opset": graph.opset,
        "bits": args.bits,
        "keep_ratios": info["keep_ratios"],
        "onnx_nodes": graph.origin,
        "float_max_abs_diff": oracle["max_abs_diff"],
        "fidelity_vs_onnxruntime": {"int8": fid_int8, "compressed": fid},
    }
    write_model(args.output, network, shared, args.bits, coding, meta=meta)
    seconds = time.perf_counter() - start
    _, _, read_info = read_model(args.output)
    print_inspect(read_info)
    print(f"wrote {args.output} in {seconds:.1f} s")
    return {
        "seconds": seconds,
        "bytes": read_info["bytes"],
        "float_max_abs_diff": oracle["max_abs_diff"],
        "float_relative_diff": oracle["relative"],
        "int8": fid_int8,
        "compressed": fid,
    }
