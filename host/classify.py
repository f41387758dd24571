"""The work behind ``python -m host.infer``: load a model, run images on a device, report.

Two modes (``--mode``): **streamed** (the host walks the compiled program tile by tile,
``fpga.compiler.program.execute``: every weight and activation crosses the link) and **resident**
(the program is placed in the board's DRAM by ``fpga.compiler.resident.compile_resident``, loaded
once per session — skipped when the board already holds it — and the device's sequencer runs it; the
link carries the image and the logits, while the device computes the previous or next image:
``Device.run_resident_many``). The default is resident when IDENTIFY reports DRAM.

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

from fpga.compiler.program import compile_network, execute, tile_count
from fpga.compiler.resident import compile_resident
from fpga.compiler.traffic import device_cycles
from fpga.spec import golden
from fpga.spec.arch import check_variant
from fpga.spec.boards import DEFAULT_BOARD, get_board
from fpga.spec.config import RESIDENCY_MODES
from fpga.spec.errors import UserError
from fpga.spec.graph import check_input_size
from fpga.spec.image import load_image, model_labels, preprocess, top5
from fpga.spec.protocol import DeviceInfo, LinkKind, LinkRate
from fpga.spec.sqz import load_for_device
from host.driver import Device
from host.simulated import BoardProcess, build_binary


def load_network(args):
    """The QuantizedNetwork and its compressed weights (codebook, indices) per conv layer.

    A ``.sqz`` model needs only the spec layer. Without ``--model`` the variant is quantized and
    written at 8 bits without pruning by the toolflow (``python -m fpga.compress``, torch),
    run as a separate process: the host itself never imports torch.
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


class ModeError(UserError, ValueError):
    """``--mode resident`` on a device without DRAM."""


def choose_mode(requested: str | None, info: DeviceInfo) -> str:
    """The mode to run in: ``requested``, or by default resident when the device has DRAM."""
    if requested is None:
        return "resident" if info.dram_bytes else "streamed"
    if requested not in RESIDENCY_MODES:
        raise ModeError(f"unknown mode {requested!r}; choose one of {', '.join(RESIDENCY_MODES)}")
    if requested == "resident" and not info.dram_bytes:
        raise ModeError(
            "--mode resident needs a board with DRAM, and this device reports none "
            "(IDENTIFY dram_bytes 0): use --mode streamed, or a bitstream built with its memory"
        )
    return requested


def predicted_images_per_s(
    cycles: int, clock_hz: float, link_s: float, overlap: bool = False
) -> float:
    """Images/s of a device at ``clock_hz`` that spends ``cycles`` per image and whose link
    needs ``link_s`` seconds per image (``fpga.spec.protocol.LinkRate.seconds`` of the image's
    framed link bytes and frames).

    Without ``overlap`` compute and transfer follow each other: the period is their sum (the
    streamed mode, and a resident run per image, ``Device.run_resident``). With ``overlap``
    the link and the device work at the same time (``Device.run_resident_many``: the next
    image's input and the last one's logits cross the link while the device computes), so the
    period is the longer of the two: ``max(cycles / clock_hz, link_s)``. That is the steady
    state of a stream of images (the first input and the last logits are not overlapped); the
    RUN_RESIDENT and RESIDENT_WAIT frames are inside the link's bytes."""
    compute = cycles / clock_hz
    return 1 / (max(compute, link_s) if overlap else compute + link_s)


def prediction_link(info: DeviceInfo, fallback_baud: int) -> LinkRate:
    """The link to predict images/s over: the one the device answered on (IDENTIFY ``link`` and
    ``link_bps``: its UART, or its Ethernet), else (a stream with no line rate, such as the
    simulated board's socket or PCIe) a UART at ``fallback_baud``, the board's (``--board``,
    default the Arty's)."""
    if info.link_kind != LinkKind.STREAM and info.link_bps:
        return LinkRate(info.link_kind, info.link_bps)
    return LinkRate(LinkKind.UART, fallback_baud)


def result_link(result: dict) -> LinkRate:
    """The link a resident result's images/s were predicted over."""
    return LinkRate(LinkKind[result["link_kind"].upper()], result["link_bps"])


def classify_on_device(
    device: Device,
    network,
    compressed,
    images,
    progress=True,
    weights_mode="indices",
    mode: str | None = "streamed",
    baud: int | None = None,
) -> list[dict]:
    """Classify ``images``; one result dict per image (see :func:`print_results`).

    ``mode``: "streamed", "resident", or None for the device's default (:func:`choose_mode`).
    ``baud``: the UART rate resident mode predicts images/s over when the device's link has no
    line rate (:func:`prediction_link`; default: the Arty A7's)."""
    session = Session(device, network, compressed, weights_mode, mode, baud)
    return session.classify(images, progress)


class Session:
    """One open device and one model: IDENTIFY, the compile and (resident mode) the model load
    happen once, here; :meth:`classify` then costs only the images (host.batch keeps one per
    board). Arguments as :func:`classify_on_device`."""

    def __init__(
        self,
        device: Device,
        network,
        compressed,
        weights_mode="indices",
        mode: str | None = "streamed",
        baud: int | None = None,
    ):
        self.device, self.network = device, network
        self.info = info = device.identify()
        self.mode = choose_mode(mode, info)
        # resident: double-buffered tiles (SPLIT runs compute while the next tile moves)
        self.program = compile_network(
            network,
            info.config(),
            compressed,
            weights_mode=weights_mode,
            split=self.mode == "resident",
        )
        # the model's own class names (an imported model's --labels; else ImageNet's)
        self.labels = model_labels(network)
        if self.mode == "resident":
            self.link = prediction_link(info, baud or get_board(DEFAULT_BOARD).baud)
            self.image = compile_resident(
                self.program, dram_size=info.dram_bytes, input_size=network.input_size
            )
            self.load = device.load_model(self.image)
            self.load_reported = False  # the first image's result carries the load
            # the engine with nothing to wait for
            self.engine_alone = sum(self.program.predicted_cycles().values())
            # the cost model's device cycles (fpga.compiler.traffic.device_cycles)
            self.model_cycles = device_cycles(self.image)["total"]

    def _preprocess(self, path):
        """A photo as the model's input: its size and its preprocessing (the .sqz file's)."""
        return preprocess(path, self.network.input_size, self.network.preprocessing)

    def prepare(self, path):
        """The device's input for the photo at ``path`` (preprocessed, quantized): the host's
        work before :meth:`stream` (host.batch does it off the link's thread)."""
        return self.network.quantize_input(self._preprocess(path))

    def stream(self, inputs):
        """Resident mode: ``Device.run_resident_many`` over ``inputs`` (an iterable that may
        block for its next input): ``(output, stats)`` per input, in order; hand them to
        :meth:`resident_result`."""
        return self.device.run_resident_many(self.image, inputs)

    def classify(self, images, progress=True) -> list[dict]:
        if self.mode == "resident":
            return self._resident(images)
        return self._streamed(images, progress)

    def _streamed(self, images, progress) -> list[dict]:
        pes = self.info.config().pes
        results = []
        for path in images:
            image = self.network.quantize_input(self._preprocess(path))
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(
                    total=tile_count(self.program),
                    desc=str(path),
                    unit="tile",
                    leave=False,
                    file=sys.stderr,
                    disable=not sys.stderr.isatty(),
                )
            start = time.perf_counter()
            tensors, stats = execute(self.program, self.device, image, bar.update if bar else None)
            wall = time.perf_counter() - start
            if bar:
                bar.close()
            sums = tensors[self.program.output]
            expected = golden.run_network(self.network, image, keep=False)
            expected = expected[self.network.output.name]
            results.append(
                {
                    "image": str(path),
                    "mode": "streamed",
                    "top5": top5(self.network.logits(sums), self.labels),
                    "golden_match": bool(np.array_equal(sums, expected)),
                    "cycles": sum(s.cycles for s in stats),
                    "link_bytes": sum(s.link_bytes for s in stats),
                    "minimum_link_bytes": self.program.minimum_link_bytes,
                    "weights_mode": self.program.weights_mode,
                    "wall_s": wall,
                    "layers": [
                        {
                            "name": s.name,
                            "cycles": s.cycles,
                            "predicted_cycles": s.predicted_cycles,
                            "link_bytes": s.link_bytes,
                            "macs": s.macs,
                            "utilization": s.macs / (s.cycles * pes) if s.cycles else 0.0,
                        }
                        for s in stats
                    ],
                }
            )
        return results

    def _resident(self, paths) -> list[dict]:
        """The images through ``Device.run_resident_many``: each image's input and the previous
        one's logits cross the link while the device computes."""
        inputs = [self.prepare(p) for p in paths]
        done = []
        start = time.perf_counter()
        for sums, stats in self.stream(inputs):
            # wall: since the previous image's logits came back (the first: since the start)
            now = time.perf_counter()
            done.append((sums, stats, now - start))
            start = now
        # the golden check after the stream: it does not delay the device
        return [
            self.resident_result(path, x, sums, stats, wall)
            for path, x, (sums, stats, wall) in zip(paths, inputs, done, strict=True)
        ]

    def resident_result(self, path, x, sums, stats: dict, wall: float) -> dict:
        """One image's result (top-5, the fpga.spec.golden check, the device's figures) from
        :meth:`stream`'s ``(sums, stats)`` for input ``x``; ``wall``: seconds it took."""
        info, image, network = self.info, self.image, self.network
        expected = golden.run_network(network, x, keep=False)[network.output.name]
        cycles = stats["cycles"]
        first, self.load_reported = not self.load_reported, True
        link_s = self.link.seconds(stats["link_bytes"], stats["link_frames"])
        figures = (cycles, info.clock_hz, link_s)
        return {
            "image": str(path),
            "mode": "resident",
            "top5": top5(network.logits(sums), self.labels),
            "golden_match": bool(np.array_equal(sums, expected)),
            **stats,
            "link_ratio": stats["link_bytes"] / stats["minimum_link_bytes"],
            "engine_alone_cycles": self.engine_alone,
            "model_cycles": self.model_cycles,
            # in time: the engine's cycles may be of its own clock (IDENTIFY engine_clock_hz)
            "device_engine_ratio": (cycles / info.clock_hz)
            / (self.engine_alone / info.engine_clock_hz),
            "engine_share": stats["engine_cycles"] / cycles if cycles else 0.0,
            "dma_wait_share": stats["dma_wait_cycles"] / cycles if cycles else 0.0,
            "other_share": stats["other_cycles"] / cycles if cycles else 0.0,
            "clock_hz": info.clock_hz,
            # the link the images/s are predicted over (prediction_link) and the device's own
            "link_kind": self.link.kind.label,
            "link_bps": self.link.bps,
            "device_link": info.link_kind.label,
            # link and compute overlapped (run_resident_many's steady state)
            "predicted_images_per_s": predicted_images_per_s(*figures, overlap=stats["overlapped"]),
            # one image after the other, nothing overlapped
            "predicted_sequential_images_per_s": predicted_images_per_s(*figures),
            # the model load happens once per session, before the first image
            "model_load": {
                "loaded": self.load.loaded and first,
                "link_bytes": self.load.link_bytes if first else 0,
                "link_frames": self.load.link_frames if first else 0,
                "bytes": image.load_size,
                "fingerprint": image.fingerprint(),
            },
            "weights_mode": self.program.weights_mode,
            "wall_s": wall,
        }


def _print_resident(r: dict) -> None:
    load = r["model_load"]
    if load["link_bytes"]:
        what = (
            f"loaded {load['bytes']:,} bytes into DRAM"
            if load["loaded"]
            else "already on the device"
        )
        print(f"  model {load['fingerprint']}: {what} ({load['link_bytes']:,} link bytes)")
    print(
        f"  device cycles {r['cycles']:>13,}  engine {r['engine_share']:.1%}  "
        f"DMA wait {r['dma_wait_share']:.1%}  other {r['other_share']:.1%}"
    )
    print(
        f"  engine alone  {r['engine_alone_cycles']:>13,}  (the device needs "
        f"{r['device_engine_ratio']:.2f}x its time)"
    )
    print(
        f"  link bytes    {r['link_bytes']:>13,}  (minimum {r['minimum_link_bytes']:,}: input "
        f"+ logits; {r['link_ratio']:.2f}x, weights as {r['weights_mode']})"
    )
    where = f"at {r['clock_hz'] / 1e6:g} MHz over {result_link(r).describe()}"
    label = "link and compute overlapped" if r.get("overlapped") else "nothing overlapped"
    print(f"  predicted     {r['predicted_images_per_s']:>13.2f} images/s ({label}) {where}")
    print(
        f"  sequential    {r['predicted_sequential_images_per_s']:>13.2f} images/s (compute, "
        "then transfer)"
    )
    print(f"  host cycles   {r['host_cycles']:>13,}  (the device serving the link during the run)")


def print_results(results: list[dict], pes: int) -> None:
    for r in results:
        print(r["image"])
        for rank, entry in enumerate(r["top5"], 1):
            print(f"  {rank}. {entry['prob']:7.2%}  {entry['index']:4d} {entry['label']}")
        if r["mode"] == "resident":
            _print_resident(r)
            verdict = "yes, bit for bit" if r["golden_match"] else "NO - MISMATCH"
            print(f"  equals fpga.spec.golden: {verdict}   wall time {r['wall_s']:.1f} s")
            continue
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
        print(f"  equals fpga.spec.golden: {verdict}   wall time {r['wall_s']:.1f} s")


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
            link = args.link or "uart"
            board = BoardProcess(build_binary(quiet=args.json, link=link), link).start()
            device = board.open_device()
        else:
            device = Device.open(args.device, baud=baud_for_serial(args), board=args.board)
        try:
            results = classify_on_device(
                device,
                network,
                compressed,
                args.images,
                progress=not args.no_progress,
                weights_mode=args.weights_mode,
                mode=args.mode,
                baud=baud_for_serial(args),
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
