"""Classify images on the accelerator: ``python -m host.infer IMAGE... [options]``.

``--device sim`` (the default) builds/starts the simulated board — the SoC's real RTL under
Verilator behind a local socket (``--link uart``, the default) or its LiteEth core behind a UDP
port on 127.0.0.1 (``--link ethernet``) — and stops it afterwards; any other value is a device
URL (``/dev/ttyUSB1``, ``socket://HOST:PORT``, ``udp://IP:PORT`` — ``udp://`` alone is the
``--board``'s default address —, ``pcie:///dev/xdma0``). Prints per image the top-5
labels, the device cycles and link bytes per layer, and whether the int32 class sums equal
``fpga.spec.golden`` bit for bit. ``--weights-mode huffman`` sends each layer's weights as canonical
Huffman streams that the device decodes on chip (hw.soc.huffman) instead of one byte per index.

``--mode resident`` (the default on a device whose IDENTIFY reports DRAM) loads the model into
the board's DRAM once — skipped when the board already holds it — and lets the device's
sequencer run it: the link carries the image and the logits, and the report splits the device
cycles into engine / DMA wait / other and compares the link bytes with that minimum.
``--mode streamed`` (the default without DRAM) sends every tile's weights and activations.
"""

from __future__ import annotations

from fpga.spec.arch import VARIANTS
from fpga.spec.boards import BOARDS, DEFAULT_BOARD, get_board
from fpga.spec.cli import ArgumentParser
from fpga.spec.config import RESIDENCY_MODES, WEIGHTS_MODES
from fpga.spec.errors import UserError, exit_process, run_cli
from host import batch
from host.simulated import SIM_LINKS


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m host.infer", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--variant", default="v1.0", help=f"one of {', '.join(VARIANTS)}")
    parser.add_argument("--model", help="a compressed .sqz model (overrides --variant)")
    parser.add_argument(
        "--device",
        default="sim",
        help="'sim' (default) or a device URL: /dev/ttyUSB1, socket://HOST:PORT, udp://IP:PORT "
        "(udp:// alone: the --board's address), pcie:///dev/xdma0",
    )
    parser.add_argument(
        "--link",
        choices=SIM_LINKS,
        help="the simulated board's link (--device sim, --devices N): uart (default) or "
        "ethernet (its LiteEth core over UDP on 127.0.0.1)",
    )
    parser.add_argument("--size", type=int, default=227, help="input side in pixels")
    parser.add_argument(
        "--weights-mode",
        choices=WEIGHTS_MODES,
        default="indices",
        help="send weights as codebook-index bytes, or as Huffman streams decoded on chip",
    )
    parser.add_argument(
        "--mode",
        choices=RESIDENCY_MODES,
        help="resident: the model lives in the board's DRAM (default when the device has "
        "DRAM); streamed: the host sends every tile",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--board",
        choices=sorted(BOARDS),
        help="the board behind --device: a serial port's UART baud, udp://'s address "
        f"(default {DEFAULT_BOARD})",
    )
    parser.add_argument("--baud", type=int, help="UART baud rate (overrides --board's)")
    parser.add_argument("--no-progress", action="store_true")
    batch.add_arguments(parser)  # --devices, --ray-address, --csv: many boards with Ray
    args = parser.parse_args(argv)
    return run_cli(lambda: _run(args))


def serial_baud(args) -> int:
    """The baud to open a serial device at: --baud, else the board registry's."""
    if args.baud is not None:
        if args.baud <= 0:
            raise UserError(f"--baud must be positive, not {args.baud}")
        return args.baud
    return get_board(args.board or DEFAULT_BOARD).baud


def check_link(args) -> None:
    """``--link`` chooses the simulated board's link; a device URL names its own."""
    simulated = args.device == "sim" and (not args.devices or args.devices.isdigit())
    if args.link and not simulated:
        raise UserError(
            f"--link {args.link} chooses the simulated board's link (--device sim, --devices N); "
            "a device URL names its own: udp://IP:PORT for Ethernet, a serial port for the UART"
        )


def _run(args) -> int:
    check_link(args)
    if args.devices or args.ray_address or args.csv:
        return batch.run(args, serial_baud)
    # the work (NumPy, compiler, driver) is imported only once the arguments are good
    from host.classify import run

    return run(args, serial_baud)


if __name__ == "__main__":
    exit_process(main())
