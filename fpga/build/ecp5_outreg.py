"""Move the flip-flops that capture an ECP5 block RAM's read data into the RAM's output register.

A DP16KD has an output register of its own (``REGMODE_A`` / ``REGMODE_B`` = ``"OUTREG"``), but
Yosys's ECP5 memory mapping never uses it: a read port's data leaves the block RAM unregistered,
and nextpnr times that as 5.6-5.8 ns from the clock (speed 6) before any routing. With the output
register the same data leaves the RAM 0.97 ns after the clock. The engine captures every buffer
read in a register that reads nothing else (``hw/engine/engine.py``, stage 1a), so the two are the
same circuit: this pass, run on Yosys's JSON netlist before nextpnr, finds such registers and moves
them into the RAM.

A read port is converted only when every output bit it uses drives exactly one flip-flop and
nothing else, and each of those flip-flops

* is clocked by the port's clock, on the same edge;
* has no clock enable and no reset (``CEMUX`` 1, ``LSR`` 0): the output register loads every
  cycle (its ``OCE`` must be 1) and is never reset (its ``RST`` must be 0);
* starts at 0 (``REGSET`` ``RESET``), as the output register does.

Then the flip-flops are removed, the RAM's outputs drive the nets their outputs drove, and the
port's ``REGMODE`` becomes ``OUTREG``. In a 36-bit (pseudo dual port) RAM both halves of the
output belong to the read port B: both ``REGMODE``\\ s change and both output enables are 1, as
nextpnr's own ``PDPW16KD`` conversion does.

``python -m fpga.build.ecp5_outreg NETLIST.json`` rewrites a netlist in place (atomically) and
prints what it moved; ``fpga.build.flow`` runs it (:func:`absorb_file`) between Yosys and nextpnr.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from fpga.build.netlist import NetlistError, design_module
from fpga.spec.cli import ArgumentParser
from fpga.spec.errors import UserError, run_cli
from fpga.spec.files import atomic_write

RAM = "DP16KD"
FLIP_FLOP = "TRELLIS_FF"
DATA_BITS = 18  # DOA0..17, DOB0..17


class NetlistFormatError(UserError, ValueError):
    """The file is not a Yosys JSON netlist with one top module."""


@dataclass(frozen=True)
class Absorbed:
    """What :func:`absorb_output_registers` moved: read ports given their output register, and
    the flip-flops they replaced."""

    ports: int
    flip_flops: int

    def as_dict(self) -> dict:
        return {"ports": self.ports, "flip_flops": self.flip_flops}


def _param(cell: dict, name: str, default: str = "", kind: str = "parameters") -> str:
    """A cell parameter (or attribute) as a string: Yosys writes a string that looks like a bit
    vector with a trailing space, and integers as bit strings."""
    return str(cell.get(kind, {}).get(name, default)).strip()


def _int_param(cell: dict, name: str, default: int, kind: str = "parameters") -> int:
    value = _param(cell, name, kind=kind)
    if value and set(value) <= {"0", "1"}:
        return int(value, 2)
    return int(value) if value.isdigit() else default


def _bit(cell: dict, port: str):
    """The single bit connected to ``port`` (an int net, a constant string), or None."""
    bits = cell.get("connections", {}).get(port)
    return bits[0] if bits else None


def _is_constant(bit, value: str) -> bool:
    return bit is None and value == "0" or bit == value


def _sinks(module: dict) -> dict:
    """Net bit -> [(cell name, port)] of every cell input it drives; a top-level output or inout
    port counts as a sink named ``None``."""
    sinks = defaultdict(list)
    for name, cell in module.get("cells", {}).items():
        directions = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            if directions.get(port, "input") == "output":
                continue
            for bit in bits:
                if isinstance(bit, int):
                    sinks[bit].append((name, port))
    for port in module.get("ports", {}).values():
        if port.get("direction") != "input":
            for bit in port.get("bits", []):
                if isinstance(bit, int):
                    sinks[bit].append((None, None))
    return sinks


def _capture(module: dict, sinks: dict, bit, clock) -> str | None:
    """The flip-flop that is the only reader of RAM output ``bit`` and can become its output
    register (see the module's docstring), or None."""
    readers = sinks.get(bit, [])
    if len(readers) != 1 or readers[0][0] is None:
        return None
    name, port = readers[0]
    cell = module["cells"][name]
    if cell["type"] != FLIP_FLOP or port != "DI":
        return None
    ok = (
        _bit(cell, "CLK") == clock
        and _param(cell, "CLKMUX", "CLK") == "CLK"
        and _param(cell, "CEMUX", "1") == "1"
        and _is_constant(_bit(cell, "LSR"), "0")
        and _param(cell, "LSRMUX", "LSR") == "LSR"
        and _param(cell, "REGSET", "RESET") == "RESET"
        and isinstance(_bit(cell, "Q"), int)
    )
    return name if ok else None


def _read_ports(cell: dict) -> list[tuple[list[str], str, str]]:
    """A DP16KD's read ports: (its output pins, its side's letter, the letters of the output
    registers that capture them). In the 36-bit pseudo dual port mode all 36 outputs are port
    B's, and both halves' ``REGMODE`` is set (as nextpnr's own ``PDPW16KD`` conversion does)."""
    outputs = {side: [f"DO{side}{i}" for i in range(DATA_BITS)] for side in "AB"}
    if _int_param(cell, "DATA_WIDTH_A", 18) == 36:
        return [(outputs["A"] + outputs["B"], "B", "AB")]
    return [(outputs["A"], "A", "A"), (outputs["B"], "B", "B")]


def absorb_output_registers(netlist: dict) -> Absorbed:
    """Give every DP16KD read port whose data is captured by plain flip-flops its output register
    instead (in place; see the module's docstring). Returns what moved."""
    try:
        module = design_module(netlist)
    except NetlistError as exc:
        raise NetlistFormatError(str(exc)) from None
    cells = module.get("cells", {})
    sinks = _sinks(module)
    ports = flip_flops = 0
    for cell in list(cells.values()):
        if cell.get("type") != RAM:
            continue
        for pins, side, regmodes in _read_ports(cell):
            if _param(cell, f"REGMODE_{side}", "NOREG") != "NOREG":
                continue
            clock = _bit(cell, f"CLK{side}")
            if not isinstance(clock, int) or _param(cell, f"CLK{side}MUX", f"CLK{side}") != (
                f"CLK{side}"
            ):
                continue
            if not (
                _is_constant(_bit(cell, f"OCE{side}"), "1")
                and _is_constant(_bit(cell, f"RST{side}"), "0")
            ):
                continue
            used = [
                pin
                for pin in pins
                if isinstance(_bit(cell, pin), int) and sinks.get(_bit(cell, pin))
            ]
            captures = {pin: _capture(module, sinks, _bit(cell, pin), clock) for pin in used}
            if not used or None in captures.values():
                continue
            for pin, name in captures.items():
                cell["connections"][pin] = [_bit(cells[name], "Q")]
                del cells[name]
            for letter in regmodes:
                cell["parameters"][f"REGMODE_{letter}"] = "OUTREG"
                cell["connections"][f"OCE{letter}"] = ["1"]
            ports += 1
            flip_flops += len(captures)
    return Absorbed(ports, flip_flops)


def absorb_file(path: Path) -> Absorbed:
    """:func:`absorb_output_registers` on a JSON netlist file, rewritten atomically."""
    try:
        netlist = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NetlistFormatError(f"cannot read the netlist {path}: {exc}") from None
    moved = absorb_output_registers(netlist)
    atomic_write(path, json.dumps(netlist).encode())
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m fpga.build.ecp5_outreg",
        description="Move the flip-flops that capture ECP5 block RAM read data into the RAMs' "
        "output registers (REGMODE OUTREG), in a Yosys JSON netlist.",
    )
    parser.add_argument("netlist", type=Path, help="Yosys JSON netlist (rewritten in place)")

    def body() -> int:
        args = parser.parse_args(argv)
        moved = absorb_file(args.netlist)
        print(
            f"{moved.ports} block RAM read ports given their output register "
            f"({moved.flip_flops} flip-flops moved)"
        )
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
