"""The UDP echo board: the generated LiteEth core (``fpga.build.liteeth``, raw port ``host``) with
an echo (``eth_loopback.v``) under Verilator, on the simulated network of ``ethernet.h``: the
stand-alone test of the simulated board's Ethernet (``tests/sim/test_eth_network.py``).

``build(board)`` builds the binary once per input (cached under ``$SQUEEZEFPGA_CACHE/simeth``
by a hash of the core's Verilog, the top, the FDPE model, the C++ sources, the flags and the tool
versions, like ``sim.board.build``) and returns ``(binary, core)``; ``args(core)`` gives the
device's address as the binary's arguments. Running it: ``ethloop --ip .. --mac .. --port ..``
prints ``UDP <port>``, the 127.0.0.1 port to send datagrams to.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from sim.board import MAKEFLAGS, VERILATE, verilate
from sim.runner import tool_versions

HERE = Path(__file__).parent
#: the sources besides the generated core (ethernet.h is included by the .cpp)
SOURCES = ("eth_loopback.v", "fdpe.v", "eth_loopback.cpp", "ethernet.h")
#: Verilator's flags (paths aside): the build takes ~10 s at -j 2; -O2 runs the echo board at
#: ~3.6 M cycles/s (-O1: ~2.8 M) for the same build time
VERILATOR_FLAGS = (
    *VERILATE,
    "-Wno-fatal",
    "-Wno-lint",
    "-Wno-style",
    "-Wno-MULTIDRIVEN",
    "--top-module",
    "eth_loopback",
    "--prefix",
    "Veth_loopback",
    "-CFLAGS",
    "-O2",
)


def cache_dir() -> Path:
    root = os.environ.get("SQUEEZEFPGA_CACHE") or Path.home() / ".cache" / "squeezefpga"
    return Path(root) / "simeth"


def args(core) -> list[str]:
    """The binary's arguments for the device address of ``core`` (an ``EthernetCore``)."""
    mac = f"{core.mac_address:012x}"
    return ["--ip", core.ip_address, "--mac", mac, "--port", str(core.udp_port)]


def build(board: str = "arty_a7", quiet: bool = True):
    """Build (or reuse) the echo board for ``board``'s LiteEth core; returns ``(binary, core)``.
    Raises ``fpga.build.liteeth.LiteEthMissing`` without liteeth, ``BoardError`` without
    Verilator or when the build fails."""
    from fpga.build.liteeth import generate

    core = generate(board)
    texts = [core.verilog.read_text(), *((HERE / name).read_text() for name in SOURCES)]
    parts = [*texts, " ".join(VERILATOR_FLAGS), MAKEFLAGS, tool_versions("verilator")]
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    sources = [core.verilog, *(HERE / name for name in SOURCES if not name.endswith(".h"))]
    command = [*VERILATOR_FLAGS, "-CFLAGS", f"-I{HERE}", *map(str, sources)]
    binary = verilate(cache_dir() / digest, "ethloop", command, "the Ethernet echo board", quiet)
    return binary, core


def main(argv: list[str] | None = None) -> int:
    """``python -m sim.board.ethloop [--board arty_a7] [ARG...]``: build (or reuse) the echo board
    and run it at the board's address; ARGs go to the binary (``--host-port 2000``, ``--pcap
    FILE``, ``--verbose``...). It prints ``UDP <port>``; Ctrl-C ends it."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    board = "arty_a7"
    if args_in[:1] == ["--board"] and len(args_in) > 1:
        board, args_in = args_in[1], args_in[2:]
    from fpga.spec.errors import run_cli

    def run() -> int:
        binary, core = build(board, quiet=False)
        os.execv(binary, [str(binary), *args(core), *args_in])

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
