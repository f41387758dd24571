"""The deepest LUT path between registers of a netlist mapped to Xilinx 7-series cells.

A proxy for the critical path until Vivado runs (``fpga.build.flow`` on a machine without it): the
number of LUTs on the longest combinational path between two timing boundaries of the Yosys
JSON netlist that ``synth_xilinx`` mapping produced. Counted:

* ``LUT1`` .. ``LUT6`` and a distributed RAM's read (address -> data, ``RAM64M``, ``RAM32X1D``,
  ...): one level each;
* ``CARRY4``, ``MUXF7``, ``MUXF8``: no level (they sit inside the slice), but the path reports
  how many ``CARRY4`` it crosses, because a long carry chain costs time too.

Boundaries (a path starts at their outputs and ends at their inputs): flip-flops, SRLs, block
RAMs, DSP48E1s (the engine registers every DSP's inputs and outputs), I/O and clock cells, the
top's ports, and any cell this module does not know. A distributed RAM's write side (data, write
enable) is a boundary too: only its read is combinational.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

#: cells that add one LUT level from their (address) inputs to their outputs
_LUT = re.compile(r"LUT[1-6]")
_LUTRAM = re.compile(r"RAM\d+(M|X1[SD])")
#: a distributed RAM's inputs that reach its outputs combinationally: the read addresses
_LUTRAM_READ = re.compile(r"(ADDR[A-H]\d*|A\d*|DPRA\d*)")
#: its write data, which ends paths (with ``WE``)
_LUTRAM_WRITE = re.compile(r"(DI[A-H]?\d*|D)")
#: cells that pass a path on without a LUT level
_CARRY = "CARRY4"
_MUXES = ("MUXF7", "MUXF8")


class NetlistError(ValueError):
    """The netlist is not a flattened Yosys JSON netlist or has a combinational loop."""


@dataclass(frozen=True)
class LutPath:
    """The deepest path: ``levels`` LUTs, ``carry4`` CARRY4 cells, from the net ``start``
    (a boundary's output) to the net ``end`` (a boundary's input)."""

    levels: int
    carry4: int
    start: str
    end: str

    def as_dict(self) -> dict:
        return {"levels": self.levels, "carry4": self.carry4, "from": self.start, "to": self.end}


def _weight(cell_type: str) -> int | None:
    """LUT levels a combinational cell adds; ``None`` for a boundary."""
    if _LUT.fullmatch(cell_type) or _LUTRAM.fullmatch(cell_type):
        return 1
    if cell_type == _CARRY or cell_type in _MUXES:
        return 0
    return None


def _comb_inputs(cell: dict) -> list:
    """The input bits of a combinational cell that reach its outputs."""
    directions = cell.get("port_directions", {})
    lutram = _LUTRAM.fullmatch(cell["type"]) is not None
    bits = []
    for port, value in cell["connections"].items():
        if directions.get(port) != "input":
            continue
        if lutram and not _LUTRAM_READ.fullmatch(port):
            continue
        bits.extend(value)
    return bits


def design_module(netlist: dict) -> dict:
    """The design's module of a Yosys JSON netlist: the one whose ``top`` attribute is set
    (synthesis marks it), or, in a netlist without the mark, the one with the most cells."""
    modules = netlist.get("modules") if isinstance(netlist, dict) else None
    if not isinstance(modules, dict) or not modules:
        raise NetlistError("not a Yosys JSON netlist (no modules)")
    tops = []
    for name, module in modules.items():
        mark = str(module.get("attributes", {}).get("top", "0")).strip()
        try:
            marked = int(mark, 2 if set(mark) <= {"0", "1"} else 10) != 0
        except ValueError:
            raise NetlistError(f"module {name!r}: a top attribute {mark!r}") from None
        if marked:
            tops.append(name)
    if len(tops) > 1:
        raise NetlistError(f"the netlist has {len(tops)} top modules, not one")
    top = tops[0] if tops else max(modules, key=lambda name: len(modules[name].get("cells", {})))
    return modules[top]


def deepest_lut_path(netlist: dict, top: str | None = None) -> LutPath:
    """The deepest LUT path of the flattened module ``top`` (default: :func:`design_module`)."""
    if top is None:
        module = design_module(netlist)
    else:
        module = netlist["modules"][top]
    cells = module.get("cells", {})
    names: dict = {}
    for name, net in module.get("netnames", {}).items():
        for bit in net["bits"]:
            # the most readable name: hidden ($...) names last, then the shortest
            key = (name.startswith("$") or net.get("hide_name", 0) == 1, len(name))
            if bit not in names or key < names[bit][0]:
                names[bit] = (key, name)

    driver: dict = {}  # bit -> (weight, carry, input bits) of the combinational cell driving it
    sinks: list = []  # boundary inputs
    for cell in cells.values():
        weight = _weight(cell["type"])
        directions = cell.get("port_directions", {})
        if weight is None:
            for port, value in cell["connections"].items():
                if directions.get(port) == "input":
                    sinks.extend(value)
            continue
        inputs = tuple(bit for bit in _comb_inputs(cell) if isinstance(bit, int))
        carry = int(cell["type"] == _CARRY)
        for port, value in cell["connections"].items():
            if directions.get(port) == "output":
                for bit in value:
                    if isinstance(bit, int):
                        driver[bit] = (weight, carry, inputs)
        if _LUTRAM.fullmatch(cell["type"]):  # its write side ends paths
            sinks.extend(bit for bit in cell["connections"].get("WE", []))
            for port, value in cell["connections"].items():
                if directions.get(port) == "input" and _LUTRAM_WRITE.fullmatch(port):
                    sinks.extend(value)
    for port in module.get("ports", {}).values():
        if port["direction"] != "input":
            sinks.extend(port["bits"])

    # depth[bit] = (levels, carry4, start bit): longest path ending at bit, iteratively
    depth: dict = {}
    on_stack: set = set()
    for root in sinks:
        if not isinstance(root, int) or root in depth:
            continue
        stack = [root]
        while stack:
            bit = stack[-1]
            if bit in depth:
                stack.pop()
                continue
            if bit not in driver:
                depth[bit] = (0, 0, bit)
                stack.pop()
                continue
            weight, carry, inputs = driver[bit]
            pending = [b for b in inputs if b not in depth]
            if pending:
                if bit in on_stack:
                    raise NetlistError(f"combinational loop through {names.get(bit, (0, bit))[1]}")
                on_stack.add(bit)
                stack.extend(pending)
                continue
            on_stack.discard(bit)
            best = max((depth[b] for b in inputs), default=(0, 0, bit), key=lambda d: d[:2])
            depth[bit] = (best[0] + weight, best[1] + carry, best[2])
            stack.pop()

    ends = [bit for bit in sinks if isinstance(bit, int)]
    if not ends:
        return LutPath(0, 0, "", "")
    end = max(ends, key=lambda bit: depth[bit][:2])
    levels, carry, start = depth[end]
    return LutPath(
        levels, carry, names.get(start, (0, str(start)))[1], names.get(end, (0, str(end)))[1]
    )


def deepest_lut_path_of_file(path: Path) -> LutPath:
    """:func:`deepest_lut_path` of a JSON file written by Yosys's ``write_json``."""
    try:
        netlist = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise NetlistError(f"{path}: cannot read the netlist: {error}") from None
    return deepest_lut_path(netlist)
