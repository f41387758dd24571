"""What the LiteX-family core generator steps share (``fpga.build.litedram``,
``fpga.build.liteeth``): the cache folder, the package versions a cache key names, the ports of a
generated Verilog top, and publishing a cache entry atomically.

A core is cached under ``$SQUEEZEFPGA_CACHE/<kind>/<key>`` (default
``~/.cache/squeezefpga/<kind>/<key>``): each step builds the entry in a temporary directory beside
it and renames it into place, so a reader sees no entry or a whole one, never half a core.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path


def cache_root(kind: str) -> Path:
    """The folder of ``kind``'s cache entries (``"litedram"``, ``"liteeth"``)."""
    root = os.environ.get("SQUEEZEFPGA_CACHE") or Path.home() / ".cache" / "squeezefpga"
    return Path(root) / kind


def package_version(package: str) -> str:
    """The installed version of pip package ``package``, ``"missing"`` when it is not."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


_PORT_RE = re.compile(
    r"^\s*(input|output|inout)\s+(?:wire|reg)\s+(?:\[(\d+):(\d+)\]\s+)?(\w+)\s*,?\s*$"
)


def parse_ports(verilog: str, module: str, error: type[Exception] = ValueError) -> dict:
    """Top-level ports of ``module``: ``{name: (direction, width)}`` from its ANSI header (as
    LiteX writes it: one port a line); ``error`` is raised when the module is not there."""
    start = verilog.find(f"module {module} (")
    if start < 0:
        raise error(f"no `module {module}` in the generated Verilog")
    header = verilog[start : verilog.index(");", start)]
    ports = {}
    for line in header.splitlines()[1:]:
        match = _PORT_RE.match(line)
        if match:
            direction, msb, lsb, name = match.groups()
            width = int(msb) - int(lsb) + 1 if msb is not None else 1
            ports[name] = (direction, width)
    return ports


def run_generator(
    package: str,
    yaml_text: str,
    workdir: Path,
    core_name: str,
    options: tuple[str, ...] = (),
    env: dict | None = None,
    error: type[Exception] = RuntimeError,
) -> Path:
    """Run ``python -m <package>.gen core.yml --output-dir out --name <core_name> <options>`` on
    ``yaml_text`` in ``workdir`` (its output in ``<package>_gen.log`` there); returns the
    generated Verilog, else raises ``error`` with the output's last lines."""
    (workdir / "core.yml").write_text(yaml_text)
    command = [sys.executable, "-m", f"{package}.gen", "core.yml", "--output-dir", "out",
               "--name", core_name, *options]  # fmt: skip
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)
    (workdir / f"{package}_gen.log").write_text(result.stdout + result.stderr)
    verilog = workdir / "out" / "gateware" / f"{core_name}.v"
    if result.returncode or not verilog.exists():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise error(f"{package}_gen failed (exit {result.returncode}):\n{tail}")
    return verilog


def publish(staging: Path, target: Path) -> None:
    """Rename the finished entry ``staging`` to ``target`` (atomic); a concurrent writer's
    finished entry already there wins (its ``manifest.json`` present)."""
    try:
        staging.rename(target)
    except OSError:
        if not (target / "manifest.json").exists():
            raise
