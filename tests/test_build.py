"""Board registry and the Arty A7 build tree (Vivado flow through amaranth-boards)."""

import json
import subprocess
import sys

import pytest

from fpga.boards import BOARDS, BoardError, get_board
from fpga.build import NO_BITSTREAM


def test_unknown_board_lists_the_boards():
    with pytest.raises(BoardError, match="known boards: arty_a7"):
        get_board("zedboard")
    out = subprocess.run(
        [sys.executable, "-m", "fpga.build", "--board", "zedboard"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "unknown board 'zedboard'" in out.stderr
    assert "Traceback" not in out.stderr


def test_registry_configs_fit_the_dsp_budget():
    for board in BOARDS.values():
        assert board.config.pes <= board.capacity["dsp"], board.name


def test_arty_build_tree_has_part_clock_and_uart_pins(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpga.build",
            "--board",
            "arty_a7",
            "--out",
            str(tmp_path),
            "--no-report",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == NO_BITSTREAM  # no Vivado here: tree written, no bitstream
    result = json.loads(out.stdout)
    assert result["bitstream"] is None and result["part"].startswith("xc7a35t")
    tree = tmp_path / "arty_a7"
    tcl = (tree / "top.tcl").read_text()
    xdc = (tree / "top.xdc").read_text()
    assert "-part xc7a35ticsg324-1L" in tcl
    assert "create_clock" in xdc and "-period 10.0" in xdc
    assert "set_property LOC E3" in xdc  # 100 MHz oscillator pin from the board file
    assert "uart_0__rx" in xdc and "uart_0__tx" in xdc
    assert "module top" in (tree / "top.v").read_text()
