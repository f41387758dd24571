"""The simulated board as the host sees it: a process serving the SoC's RTL on a local socket.

The host never imports the gateware: ``python -m sim.board build`` (run as a subprocess, it
needs Amaranth and Verilator) builds or reuses the Verilator binary and prints its path; this
module starts that binary, reads the port it listens on and stops it again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fpga.errors import UserError


class SimulatedBoardError(UserError, RuntimeError):
    """The simulated board could not be built or started."""


def build_binary(quiet: bool = True) -> Path:
    """Build (or reuse from the cache) the simulated board; its binary's path."""
    command = [sys.executable, "-m", "sim.board", "build"] + (["--quiet"] if quiet else [])
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SimulatedBoardError(
            "the simulated board could not be built (it needs the simulation install: "
            "`make setup`, or pip install 'squeezefpga[sim]'); see the messages above"
        )
    return Path(lines[-1])


class BoardProcess:
    """One running simulated board; ``url`` is ``socket://127.0.0.1:PORT`` once started."""

    def __init__(self, binary: Path | str):
        self.binary = Path(binary)
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.cycles: int | None = None

    def start(self) -> BoardProcess:
        self.process = subprocess.Popen(
            [str(self.binary), "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise SimulatedBoardError(f"simulated board did not start: {line!r}")
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

    def __enter__(self) -> BoardProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
