"""fpga.build.netlist: the deepest LUT path between registers of a mapped netlist."""

import json

import pytest

from fpga.build.netlist import (
    NetlistError,
    deepest_lut_path,
    deepest_lut_path_of_file,
    design_module,
)


def _cell(kind: str, inputs: dict, outputs: dict) -> dict:
    directions = {port: "input" for port in inputs} | {port: "output" for port in outputs}
    return {"type": kind, "port_directions": directions, "connections": inputs | outputs}


def _netlist(cells: dict, names: dict, ports: dict | None = None) -> dict:
    netnames = {name: {"bits": bits, "hide_name": 0} for name, bits in names.items()}
    top = {"ports": ports or {}, "cells": cells, "netnames": netnames}
    return {"modules": {"top": top, "LUT2": {"attributes": {"blackbox": 1}}}}


def _two_paths() -> dict:
    """q0 -> LUT2 -> LUT3 -> CARRY4 -> LUT1 -> ff1.D (3 LUTs, 1 CARRY4), and a shortcut
    q0 -> LUT1 -> ff2.D; a distributed RAM read (address from q0) -> LUT1 -> ff3.D."""
    return _netlist(
        {
            "ff0": _cell("FDRE", {"D": [2], "C": [1], "CE": ["1"], "R": ["0"]}, {"Q": [10]}),
            "a": _cell("LUT2", {"I0": [10], "I1": [2]}, {"O": [11]}),
            "b": _cell("LUT3", {"I0": [11], "I1": [10], "I2": ["0"]}, {"O": [12]}),
            "c": _cell(
                "CARRY4",
                {"CI": ["0"], "CYINIT": ["0"], "DI": [12, 0, 0, 0], "S": [12, 11, 10, 10]},
                {"O": [13, 14, 15, 16], "CO": [17, 18, 19, 20]},
            ),
            "d": _cell("LUT1", {"I0": [16]}, {"O": [21]}),
            "ff1": _cell("FDRE", {"D": [21], "C": [1], "CE": ["1"], "R": ["0"]}, {"Q": [22]}),
            "e": _cell("LUT1", {"I0": [10]}, {"O": [23]}),
            "ff2": _cell("FDRE", {"D": [23], "C": [1], "CE": ["1"], "R": ["0"]}, {"Q": [24]}),
            "ram": _cell(
                "RAM64X1D",
                {"A0": [10], "DPRA0": [10], "D": [21], "WE": [23], "WCLK": [1]},
                {"SPO": [25], "DPO": [26]},
            ),
            "f": _cell("LUT1", {"I0": [26]}, {"O": [27]}),
            "ff3": _cell("FDRE", {"D": [27], "C": [1], "CE": ["1"], "R": ["0"]}, {"Q": [28]}),
        },
        {"clk": [1], "x": [2], "counter": [10], "sum_d": [21], "$auto$hidden": [21], "q": [22]},
        {"clk": {"direction": "input", "bits": [1]}, "x": {"direction": "input", "bits": [2]}},
    )


def test_the_deepest_path_counts_luts_and_carries_between_registers():
    path = deepest_lut_path(_two_paths())
    assert (path.levels, path.carry4) == (3, 1)
    assert (path.start, path.end) == ("counter", "sum_d")  # readable names before hidden ones
    assert path.as_dict() == {"levels": 3, "carry4": 1, "from": "counter", "to": "sum_d"}


def test_a_distributed_ram_read_is_a_level_and_its_write_ends_paths():
    netlist = _two_paths()
    cells = netlist["modules"]["top"]["cells"]
    # drive the RAM's address through three more LUTs: the read path becomes the deepest
    cells["g1"] = _cell("LUT1", {"I0": [10]}, {"O": [30]})
    cells["g2"] = _cell("LUT1", {"I0": [30]}, {"O": [31]})
    cells["g3"] = _cell("LUT1", {"I0": [31]}, {"O": [32]})
    cells["ram"]["connections"]["DPRA0"] = [32]
    path = deepest_lut_path(netlist)
    assert (path.levels, path.start) == (5, "counter")  # 3 LUTs, the RAM read, LUT f
    # the write data (bit 21, 3 LUTs deep) does not pass through the RAM to its outputs
    cells["ram"]["connections"]["DPRA0"] = [10]
    assert deepest_lut_path(netlist).levels == 3


def test_a_combinational_loop_is_an_error():
    netlist = _two_paths()
    netlist["modules"]["top"]["cells"]["a"]["connections"]["I1"] = [12]  # a <- b <- a
    with pytest.raises(NetlistError, match="combinational loop"):
        deepest_lut_path(netlist)


def test_a_file_that_is_not_a_netlist_is_an_error(tmp_path):
    bad = tmp_path / "mapped.json"
    bad.write_text("{")
    with pytest.raises(NetlistError, match="cannot read"):
        deepest_lut_path_of_file(bad)
    bad.write_text(json.dumps({"creator": "yosys"}))
    with pytest.raises(NetlistError, match="no modules"):
        deepest_lut_path_of_file(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_two_paths()))
    assert deepest_lut_path_of_file(good).levels == 3


def test_the_design_module_is_the_marked_top_else_the_one_with_most_cells():
    big = {"cells": {"x": {}, "y": {}}}
    small = {"cells": {"x": {}}}
    # synthesis marks the top (Yosys writes the attribute as a bit string)
    marked = dict(small, attributes={"top": "00000000000000000000000000000001"})
    assert design_module({"modules": {"big": big, "top": marked}}) is marked
    # without the mark (write_json -selected): the module with the most cells
    assert design_module({"modules": {"small": small, "big": big}}) is big
    two = {"modules": {"a": dict(marked), "b": dict(marked)}}
    with pytest.raises(NetlistError, match="2 top modules"):
        design_module(two)
    with pytest.raises(NetlistError, match="top attribute"):
        design_module({"modules": {"a": {"attributes": {"top": "yes"}}}})
