"""``python -m fpga.compress``: compress, inspect, size table, import the original release.

python -m fpga.compress --variant v1.0 --bits 6 [--density 0.337] [--min-agreement 1.0] -o model.sqz
python -m fpga.compress inspect model.sqz [--json]
python -m fpga.compress table [--json]
python -m fpga.compress import-deepcompression FILE.net -o model.sqz
python -m fpga.compress import-onnx MODEL.onnx -o model.sqz --calibration DIR [--preprocess ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from fpga.spec import floatgraph
from fpga.spec.arch import DATA_DIR, VARIANTS, check_variant
from fpga.spec.cli import ArgumentParser
from fpga.spec.errors import UserError, run_cli
from fpga.spec.graph import check_input_size
from fpga.spec.image import bundled_photos, preprocess
from fpga.spec.sqz import CODING_FIXED, CODING_HUFFMAN, read_model, write_model
from fpga.toolflow import quant
from fpga.toolflow.compress import onnx_command
from fpga.toolflow.compress.core import compress_network
from fpga.toolflow.compress.report import (
    FidelityError,
    check_fraction,
    check_output,
    print_inspect,
)
from fpga.toolflow.quant import load_weights

#: AlexNet as in the Caffe reference model (grouped conv2/4/5), from its layer shapes
ALEXNET_LAYERS = [
    (96, 3, 11, 11),
    (256, 48, 5, 5),
    (384, 256, 3, 3),
    (384, 192, 3, 3),
    (256, 192, 3, 3),
    (4096, 9216),
    (4096, 4096),
    (1000, 4096),
]


def alexnet_params() -> int:
    return sum(int(np.prod(shape)) + shape[0] for shape in ALEXNET_LAYERS)


def measure_and_check(network, min_agreement: float | None) -> dict:
    """Fidelity of ``network`` against the float model on the bundled photos, printed; raises
    :class:`FidelityError` when top-1 agreement is below ``min_agreement``."""
    fid = fidelity(network)
    print(
        f"fidelity vs float {network.variant} on {fid['images']} bundled photos at "
        f"{network.input_size} px: top-1 agreement {fid['top1_agreement']:.0%}, "
        f"top-5 agreement {fid['top5_agreement']:.0%}, logit SNR {fid['snr_db']:.1f} dB"
    )
    if min_agreement is not None and fid["top1_agreement"] < min_agreement:
        raise FidelityError(
            f"top-1 agreement {fid['top1_agreement']:.0%} is below --min-agreement "
            f"{min_agreement:.0%}; no file written (raise --density or --bits)"
        )
    return fid


def compress_command(args) -> int:
    check_variant(args.variant)
    check_input_size(args.size)
    check_fraction(args.density, "--density", low_open=True)
    check_fraction(args.min_agreement, "--min-agreement", low_open=False)
    check_output(args.output)
    network, shared, info = compress_network(args.variant, args.bits, args.density, args.size)
    fid = measure_and_check(network, args.min_agreement)
    coding = CODING_FIXED if args.no_huffman else CODING_HUFFMAN
    sizes = write_model(
        args.output,
        network,
        shared,
        args.bits,
        coding,
        meta={
            "keep_ratios": info["keep_ratios"],
            "bits": args.bits,
            "fidelity": {k: fid[k] for k in ("images", "top1_agreement", "top5_agreement")},
        },
    )
    _, _, read_info = read_model(args.output)
    print_inspect(read_info, sizes)
    return 0


def fidelity(network) -> dict:
    """int8 ``network`` against the float model of its variant on the bundled photos.

    The float logits come from :mod:`fpga.spec.floatgraph` (fixed summation order), so the record
    the model file carries is the same on every machine."""
    images = [preprocess(p, network.input_size) for p in bundled_photos()]
    weights = load_weights(network.variant)
    ref = [floatgraph.logits(network.variant, weights, img) for img in images]
    cand = [quant.int8_logits(network, img) for img in images]
    return quant.agreement(ref, cand)


def size_table() -> list[dict]:
    """The paper's size table beside ours, every size from a file written here."""
    alexnet = alexnet_params() * 4
    rows = []

    def row(name, nbytes, fid=None):
        rows.append(
            {
                "name": name,
                "bytes": int(nbytes),
                "ratio_vs_alexnet": alexnet / nbytes,
                "top1_agreement": None if fid is None else fid["top1_agreement"],
                "top5_agreement": None if fid is None else fid["top5_agreement"],
            }
        )

    row("AlexNet fp32 (Caffe reference, 60,965,224 params)", alexnet)
    with tempfile.TemporaryDirectory() as tmp:
        weights = load_weights("v1.0")
        raw = Path(tmp) / "fp32.bin"
        raw.write_bytes(b"".join(w.astype("<f4").tobytes() for w in weights.values()))
        exact = {"top1_agreement": 1.0, "top5_agreement": 1.0}
        row("SqueezeNet v1.0 fp32", raw.stat().st_size, exact)
        release = DATA_DIR / "compressed_SqueezeNet.net"
        row(
            "Deep Compression release (8-bit, no Huffman)",
            release.stat().st_size,
            fidelity(quant.quantize_network("v1.0")),
        )
        for bits in (8, 6, 4):
            network, shared, _ = compress_network("v1.0", bits)
            fid = fidelity(network)
            for coding, label in ((CODING_FIXED, "fixed-width"), (CODING_HUFFMAN, "Huffman")):
                if bits == 4 and coding == CODING_FIXED:
                    continue
                path = Path(tmp) / f"v10_{bits}_{coding}.sqz"
                write_model(path, network, shared, bits, coding)
                decoded, _, _ = read_model(path)
                assert all(
                    np.array_equal(a.weight, b.weight)
                    for a, b in zip(network.conv_layers, decoded.conv_layers, strict=True)
                )
                row(f"ours v1.0 {bits}-bit {label} (.sqz)", path.stat().st_size, fid)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<50} {'bytes':>12} {'MB':>7} {'vs AlexNet':>10} {'top-1':>6} {'top-5':>6}")
    for r in rows:
        t1 = "" if r["top1_agreement"] is None else f"{r['top1_agreement']:.0%}"
        t5 = "" if r["top5_agreement"] is None else f"{r['top5_agreement']:.0%}"
        print(
            f"{r['name']:<50} {r['bytes']:>12,} {r['bytes'] / 1e6:>7.3f} "
            f"{r['ratio_vs_alexnet']:>9.0f}x {t1:>6} {t5:>6}"
        )
    print(
        "paper: SqueezeNet 4.8 MB; Deep Compression 8-bit 0.66 MB (363x), 6-bit 0.47 MB (510x);"
        " agreement = int8 vs float on the bundled photos"
    )


def import_command(args) -> int:
    check_input_size(args.size)
    check_fraction(args.min_agreement, "--min-agreement", low_open=False)
    check_output(args.output)
    from fpga.toolflow.compress.deepcompression import read_deepcompression  # torch

    weights, info = read_deepcompression(args.file)
    network, shared, _ = compress_network("v1.0", 8, None, args.size, weights=weights)
    fid = measure_and_check(network, args.min_agreement)
    write_model(
        args.output,
        network,
        shared,
        8,
        CODING_HUFFMAN,
        meta={
            "source": Path(args.file).name,
            "fidelity": {k: fid[k] for k in ("images", "top1_agreement", "top5_agreement")},
        },
    )
    _, _, read_info = read_model(args.output)
    print(
        f"{args.file}: {info['bytes']:,} bytes, "
        f"{sum(layer['stored'] for layer in info['layers']):,} stored entries, "
        f"{sum(layer['nonzero'] for layer in info['layers']):,} nonzero weights"
    )
    print(
        f"{args.output}: {read_info['bytes']:,} bytes "
        f"({read_info['bytes'] / info['bytes']:.1%} of the original file)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("inspect", "table", "import-deepcompression", "import-onnx")
    if not argv or argv[0] not in commands + ("-h", "--help"):
        argv = ["compress", *argv]
    parser = ArgumentParser(prog="python -m fpga.compress", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="prune, share and encode a model (the default command)")
    c.add_argument("--variant", default="v1.0", help=f"one of {', '.join(VARIANTS)}")
    c.add_argument("--bits", type=int, choices=(4, 6, 8), default=6)
    c.add_argument(
        "--density",
        type=float,
        help="prune to this nonzero fraction, in (0, 1] (default: no pruning; v1.0's release "
        "weights are pruned already, and pruning without retraining costs fidelity)",
    )
    c.add_argument(
        "--min-agreement",
        type=float,
        metavar="FRACTION",
        help="fail, writing nothing, if top-1 agreement with the float model on the bundled "
        "photos is below FRACTION (0..1)",
    )
    c.add_argument("--size", type=int, default=227, help="input size the model is calibrated for")
    c.add_argument("--no-huffman", action="store_true", help="fixed-width streams")
    c.add_argument("-o", "--output", required=True)
    i = sub.add_parser("inspect", help="header and per-layer sizes of a .sqz file")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    t = sub.add_parser("table", help="the paper's size table beside ours")
    t.add_argument("--json", action="store_true")
    m = sub.add_parser("import-deepcompression", help="convert the original release to .sqz")
    m.add_argument("file")
    m.add_argument("-o", "--output", required=True)
    m.add_argument("--size", type=int, default=227)
    m.add_argument("--min-agreement", type=float, metavar="FRACTION")
    o = sub.add_parser(
        "import-onnx",
        help="import your ONNX SqueezeNet (your classes, size, preprocessing) into a .sqz file",
    )
    onnx_command.add_arguments(o)
    args = parser.parse_args(argv)
    return run_cli(lambda: _run(args))


def _run(args) -> int:
    try:
        if args.command == "compress":
            return compress_command(args)
        if args.command == "inspect":
            _, _, info = read_model(args.file)
            print(json.dumps(info, indent=2)) if args.json else print_inspect(info)
            return 0
        if args.command == "table":
            rows = size_table()
            print(json.dumps(rows, indent=2)) if args.json else print_table(rows)
            return 0
        if args.command == "import-onnx":
            onnx_command.import_onnx(args)
            return 0
        return import_command(args)
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"{exc.filename or 'file'}: {exc.strerror or exc}") from None


if __name__ == "__main__":
    sys.exit(main())
