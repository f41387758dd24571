"""The work behind ``python -m host.infer``: load a model, run images on a device, report.

Kept apart from the CLI front (``host.infer``) so that ``--help`` and argument errors do not
pay for NumPy and the compiler.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fpga import golden
from fpga.arch import check_variant
from fpga.compile import compile_network, execute, tile_count
from fpga.errors import UserError
from fpga.graph import check_input_size
from fpga.image import load_image, load_labels, preprocess, top5
from fpga.sqz import load_for_device
from host.driver import Device
from host.simulated import BoardProcess, build_binary


def load_network(args):
    """The QuantizedNetwork and its compressed weights (codebook, indices) per conv layer.

    A ``.sqz`` model needs only the spec layer. Without ``--model`` the variant is quantized and
    written at 8 bits without pruning by the toolflow (``python -m fpga.compress``, torch), run
    as a separate process: the host itself never imports torch.
    """
    if args.model:
        return load_for_device(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / f"{args.variant}-{args.size}.sqz"
        command = [sys.executable, "-m", "fpga.compress", "--variant", args.variant]
        command += ["--bits", "8", "--density", "1", "--size", str(args.size), "-o", str(model)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not model.exists():
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(
                f"quantizing --variant {args.variant} needs the toolflow (torch) and failed "
                f"({detail}): pass a compressed model with --model FILE.sqz (make one with "
                "`python -m fpga.compress`), or install the toolflow: "
                "pip install 'squeezefpga[toolflow]'"
            )
        return load_for_device(model)


def classify_on_device(
    device: Device, network, compressed, images, progress=True, weights_mode="indices"
) -> list[dict]:
    info = device.identify()
    config = info.config()
    program = compile_network(network, config, compressed, weights_mode=weights_mode)
    labels = load_labels()
    results = []
    for path in images:
        image = network.quantize_input(preprocess(path, network.input_size))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=tile_count(program),
                desc=str(path),
                unit="tile",
                leave=False,
                file=sys.stderr,
                disable=not sys.stderr.isatty(),
            )
        start = time.perf_counter()
        tensors, stats = execute(program, device, image, bar.update if bar else None)
        wall = time.perf_counter() - start
        if bar:
            bar.close()
        sums = tensors[program.output]
        expected = golden.run_network(network, image, keep=False)[network.output.name]
        results.append(
            {
                "image": str(path),
                "top5": top5(network.logits(sums), labels),
                "golden_match": bool(np.array_equal(sums, expected)),
                "cycles": sum(s.cycles for s in stats),
                "link_bytes": sum(s.link_bytes for s in stats),
                "minimum_link_bytes": program.minimum_link_bytes,
                "weights_mode": weights_mode,
                "wall_s": wall,
                "layers": [
                    {
                        "name": s.name,
                        "cycles": s.cycles,
                        "predicted_cycles": s.predicted_cycles,
                        "link_bytes": s.link_bytes,
                        "macs": s.macs,
                        "utilization": s.macs / (s.cycles * config.pes) if s.cycles else 0.0,
                    }
                    for s in stats
                ],
            }
        )
    return results


def print_results(results: list[dict], pes: int) -> None:
    for r in results:
        print(r["image"])
        for rank, entry in enumerate(r["top5"], 1):
            print(f"  {rank}. {entry['prob']:7.2%}  {entry['index']:4d} {entry['label']}")
        print(f"  {'layer':<16} {'cycles':>11} {'util':>6} {'link bytes':>12}")
        for layer in r["layers"]:
            print(
                f"  {layer['name']:<16} {layer['cycles']:>11,} {layer['utilization']:>6.1%} "
                f"{layer['link_bytes']:>12,}"
            )
        macs = sum(layer["macs"] for layer in r["layers"])
        print(
            f"  {'total':<16} {r['cycles']:>11,} {macs / (r['cycles'] * pes):>6.1%} "
            f"{r['link_bytes']:>12,}  (minimum {r['minimum_link_bytes']:,}, "
            f"weights as {r['weights_mode']})"
        )
        verdict = "yes, bit for bit" if r["golden_match"] else "NO - MISMATCH"
        print(f"  equals fpga.golden: {verdict}   wall time {r['wall_s']:.1f} s")


def run(args, baud_for_serial) -> int:
    """Classify ``args.images`` (parsed by host.infer); exit code 0 when all are bit-exact."""
    board = None
    try:
        check_variant(args.variant)
        check_input_size(args.size, "--size")
        for path in args.images:  # fail early on a bad image, before any device work
            load_image(path)
        network, compressed = load_network(args)
        if args.device == "sim":
            board = BoardProcess(build_binary(quiet=args.json)).start()
            url, baud = board.url, None
        else:
            url, baud = args.device, baud_for_serial(args)
        device = Device.open(url, baud=baud)
        try:
            results = classify_on_device(
                device,
                network,
                compressed,
                args.images,
                progress=not args.no_progress,
                weights_mode=args.weights_mode,
            )
        finally:
            device.close()
    finally:
        if board is not None:
            board.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_results(results, device.info.rows * device.info.cols)
    return 0 if all(r["golden_match"] for r in results) else 1
