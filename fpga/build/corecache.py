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


def publish(staging: Path, target: Path) -> None:
    """Rename the finished entry ``staging`` to ``target`` (atomic); a concurrent writer's
    finished entry already there wins (its ``manifest.json`` present)."""
    try:
        staging.rename(target)
    except OSError:
        if not (target / "manifest.json").exists():
            raise
