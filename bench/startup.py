"""Host start-up: how long ``python -m host.infer --help`` takes, with and without torch.

Goal (issue 11): under 0.5 s, so a small lab machine driving a board is not kept waiting. The
host never imports torch or Amaranth; the torch-less run blocks both (as on a host-only install).
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.test_layers import BLOCKER, HOST_ONLY_BLOCKED

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7


def _time(env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "host.infer", "--help"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def main() -> dict:
    import os

    with tempfile.TemporaryDirectory() as site:
        Path(site, "sitecustomize.py").write_text(BLOCKER.format(blocked=HOST_ONLY_BLOCKED))
        blocked_env = {**os.environ, "PYTHONPATH": os.pathsep.join([site, str(ROOT)])}
        full = [_time() for _ in range(RUNS)]
        host_only = [_time(blocked_env) for _ in range(RUNS)]
    bare = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
    result = {
        "help_s_min": min(full),
        "help_s_median": statistics.median(full),
        "help_without_torch_s_median": statistics.median(host_only),
        "python_startup_s_median": statistics.median(bare),
    }
    print(
        f"python -m host.infer --help, best of {RUNS}: {min(full):.2f} s "
        f"(median {statistics.median(full):.2f} s; torch and amaranth blocked: "
        f"{statistics.median(host_only):.2f} s; bare python: {statistics.median(bare):.2f} s)"
    )
    print(f"goal < 0.5 s: {'met' if statistics.median(full) < 0.5 else 'NOT met'}")
    return result
