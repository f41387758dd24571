"""The simulated board as a process: it never outlives the process that started it, and its
clock (what the host's timeouts count) follows the board's CPU time, not the wall clock."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host.simulated import BoardProcess, run_group

STARTER = """
import sys, time
from host.simulated import BoardProcess
board = BoardProcess(sys.argv[1]).start()
if sys.argv[2] == "connect":
    device = board.open_device()
    device.identify()
print(board.process.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("phase", ["waiting", "connect"])
def test_an_orphaned_board_exits(board_binary, phase):
    """SIGKILL the process that started the board (as ``ray.kill`` does to an actor): the
    board exits by itself, before a client connected and with one connected."""
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(board_binary), phase],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    board_pid = int(starter.stdout.readline())
    assert not _gone(board_pid, 0.5), "the board ended while its parent lived"
    starter.kill()
    starter.wait()
    assert _gone(board_pid, 5), f"board {board_pid} outlived the process that started it"


def test_the_board_clock_is_its_cpu_time(board_binary):
    """A board waiting for the host (blocked in poll, no CPU) moves its clock by about a tenth
    of the wall clock, so a timeout still ends; one that simulates moves it by its CPU time."""
    with BoardProcess(board_binary) as board:
        device = board.open_device()
        try:
            device.identify()
            start_clock, start_wall = board.clock(), time.monotonic()
            time.sleep(1.0)
            idle = (board.clock() - start_clock) / (time.monotonic() - start_wall)
            assert 0.09 < idle < 0.3, idle
        finally:
            device.close()


def test_an_interrupted_build_leaves_no_process(tmp_path):
    """``run_group`` (the host's ``python -m sim.board build``): Ctrl-C ends the command and
    everything it started, not just the command itself."""
    marker = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(marker) + '.tmp'!r}, 'w').write(str(child.pid))\n"
        f"import os; os.replace({str(marker) + '.tmp'!r}, {str(marker)!r})\n"
        "time.sleep(600)\n"
    )

    def interrupt_once_started(*_):
        if marker.exists():  # the grandchild is running: now the user presses Ctrl-C
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt_once_started)
    signal.setitimer(signal.ITIMER_REAL, 0.2, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_group([sys.executable, "-c", script])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    grandchild = int(marker.read_text())
    assert _gone(grandchild, 5), "the command's own child outlived the interrupt"
