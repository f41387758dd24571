"""The simulated board as the host sees it: a process serving the SoC's RTL on a local socket.

The host never imports the gateware: ``python -m sim.board build`` (run as a subprocess, it
needs Amaranth and Verilator) builds or reuses the Verilator binary and prints its path; this
module starts that binary, reads the port it listens on and stops it again.

Two links (``host.infer --link``, :data:`SIM_LINKS`): ``uart`` (the default) is the byte stream
the harness plays the UART's other end with: the binary, started as ``simboard 0``, prints
``PORT <n>``, serves ``socket://127.0.0.1:<n>`` and ends when the host disconnects.
``ethernet`` is the SoC's LiteEth core with the harness playing the MII PHY and the network:
built by ``python -m sim.board build --ethernet``, the binary prints ``UDP <n>``, serves
``udp://127.0.0.1:<n>`` and ends on SIGTERM (:meth:`BoardProcess.stop` sends it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fpga.spec.errors import UserError

#: the kernel's clock ticks per second (``/proc/PID/stat`` times), None where there is none
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else None


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first, then the parent's
    PID, ...: ``man proc``), None when there is no such process (or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


class SimulatedBoardError(UserError, RuntimeError):
    """The simulated board could not be built or started."""


#: the simulated board's links: link -> (the build's extra argument, the word of the line the
#: binary prints once it serves, the URL scheme of what it serves)
SIM_LINKS = {
    "uart": ([], "PORT", "socket"),
    "ethernet": (["--ethernet"], "UDP", "udp"),
}


def check_link(link: str) -> str:
    if link not in SIM_LINKS:
        raise SimulatedBoardError(
            f"unknown link {link!r} for the simulated board: choose one of {', '.join(SIM_LINKS)}"
        )
    return link


def run_group(command: list[str]) -> subprocess.CompletedProcess:
    """Run ``command`` (stdout captured, stderr passed through) as a process group of its own,
    and end the whole group at once on Ctrl-C or any other exception: the tools it starts
    (LiteDRAM's generator, Verilator, make, the C++ compiler) never outlive an interrupted host,
    whether the SIGINT came from a terminal (to every process of the foreground group) or to
    this process alone."""
    # stdout into a file, not a pipe: Ctrl-C then lands in waitpid(), never inside a half-done
    # read of a pipe (a CI run saw an interrupted CLI end with SIGSEGV after its exit 130)
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, text=True, start_new_session=True)
        try:
            process.wait()
        except BaseException:
            kill_group(process)
            raise
        out.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, out.read())


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL ``process``'s process group (it leads one: ``start_new_session``) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def build_binary(quiet: bool = True, link: str = "uart") -> Path:
    """Build (or reuse from the cache) the simulated board with ``link`` (:data:`SIM_LINKS`);
    its binary's path."""
    command = [sys.executable, "-m", "sim.board", "build", *SIM_LINKS[check_link(link)][0]]
    command += ["--quiet"] if quiet else []
    done = run_group(command)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SimulatedBoardError(
            "the simulated board could not be built (it needs the simulation install: "
            "`make setup`, or pip install 'squeezefpga[sim]'); see the messages above"
        )
    return Path(lines[-1])


class BoardProcess:
    """One running simulated board; ``url`` is ``socket://127.0.0.1:PORT`` (``link`` "uart") or
    ``udp://127.0.0.1:PORT`` ("ethernet") once started."""

    def __init__(self, binary: Path | str, link: str = "uart"):
        self.binary = Path(binary)
        self.link = check_link(link)
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.cycles: int | None = None

    def start(self) -> BoardProcess:
        _, ready, scheme = SIM_LINKS[self.link]
        self.process = subprocess.Popen(
            [str(self.binary), "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = self.process.stdout.readline()
        except BaseException:
            self.kill()
            raise
        if not line.startswith(f"{ready} "):
            self.stop()
            raise SimulatedBoardError(f"simulated board did not start: {line!r}")
        self.url = f"{scheme}://127.0.0.1:{int(line.split()[1])}"
        return self

    def clock(self) -> float:
        """Seconds on the board's own clock, for the host's timeouts (``host.driver.Device``):
        the board process's CPU time plus a tenth of the wall clock.

        A simulated board's cycles per wall second fall without bound on a busy machine (three
        boards and a busy loop per core on 2 cores: below the driver's 25 k assumption), and a
        wall-clock timeout then resends commands the board is still executing. Its cycles per
        CPU second do not. The wall-clock tenth keeps a board that waits in ``poll()`` (using no
        CPU) from waiting forever for a response that will not come. Without ``/proc`` (not
        Linux): the wall clock."""
        wall = time.monotonic()
        if self.process is None or _CLOCK_TICKS is None:
            return wall
        fields = proc_stat(self.process.pid)
        if fields is None:
            return wall
        cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime
        return cpu + wall / 10

    def open_device(self, **kwargs):
        """A :class:`host.driver.Device` on this board, its timeouts on :meth:`clock`."""
        from host.driver import Device
        from host.transport import open_transport

        return Device(open_transport(self.url), clock=self.clock, **kwargs)

    def stop(self) -> None:
        """End the board and read its cycle count: a UART board ends when the host has
        disconnected, an Ethernet one (no connection to end) on SIGTERM."""
        if self.process is None:
            return
        try:
            if self.link == "ethernet":
                self.process.terminate()
            _, err = self.process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        except BaseException:  # Ctrl-C while it winds down: pull the plug
            self.kill()
            raise
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
