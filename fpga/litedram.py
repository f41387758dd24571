"""LiteDRAM generator step: board registry -> ``litedram_gen`` YAML -> cached Verilog core.

The DRAM controller is LiteDRAM's (PyPI ``litedram``), generated as one Verilog file and
instantiated from Amaranth as a black box (``hw.dram.LiteDRAMNative``). This module owns the
generator input: the YAML is *derived* from the board's ``memory`` entry (``fpga.boards.DramPart``),
never hand-written, and the output is cached under
``$SQUEEZEFPGA_CACHE/litedram/<key>`` (default ``~/.cache/squeezefpga/litedram/<key>``), where
``key`` is the SHA-256 of the YAML text, the litedram version and the ``sim`` flag. A cache entry is
written into a temporary directory and renamed into place, so a reader never sees half a core.

Two variants per board:

- ``sim=True``: ``litedram_gen --sim``: no CPU, ``block_until_ready: False``, the real controller
  (refresh, bank machines, crossbar) with LiteDRAM's DFI-level ``SDRAMPHYModel`` and the whole
  memory as Verilog arrays; one ``clk`` input (``user_clk`` is the same net), no init firmware.
- ``sim=False``: the board's PHY (``A7DDRPHY`` with its own PLL, ``GENSDRPHY``) and pads. Without a
  CPU the DDR3 calibration must be driven through the ``wb_ctrl`` CSR bus by the SoC; that and the
  pads/PLLs are the board issue's, not verified here.

Post-processing of the ULX3S SDR core: LiteDRAM declares ``sdram_dq`` as ``input`` although the
ECP5 ``BB`` tristate buffers drive it; we rewrite it to ``inout`` (a test guards it). That core has
no SDRAM clock output: the board top must drive ``sdram_clk`` from a phase-shifted PLL output.

litex/litedram are imported only lazily (in a subprocess), so the rest of the build flow works
without them; a missing package raises :class:`LiteDRAMMissing` naming what to install.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fpga.boards import Board, DramPart, get_board
from fpga.errors import UserError, run_cli

#: name of the generated Verilog module
CORE_NAME = "litedram_core"

#: the pip line that installs the generator (pinned in pyproject.toml's dev extra)
PIP_HINT = "pip install litex==2024.12 litedram==2024.12 migen"
#: packages ``litedram_gen`` imports: always, and in addition for ``--sim``
_NEEDED = {"litex": "litex", "litedram": "litedram", "migen": "migen", "yaml": "pyyaml"}
_NEEDED_SIM = {"liteeth": "liteeth", "litescope": "litescope", "pythondata_misc_tapcfg":
               "pythondata-misc-tapcfg"}  # fmt: skip

#: electrical settings of the board's DDR3 (ODT / drive strength, from LiteX's Arty target)
_DDR3_ELECTRICAL = {"rtt_nom": "60ohm", "rtt_wr": "60ohm", "ron": "34ohm"}
#: the Arty A7's oscillator feeds the A7DDRPHY's PLL; its IDELAYCTRL needs 200 MHz
_A7_INPUT_CLOCK_HZ = 100e6
_A7_IODELAY_CLOCK_HZ = 200e6
#: commands LiteDRAM buffers per bank machine (keeps several native-port commands in flight)
CMD_BUFFER_DEPTH = 16


class LiteDRAMError(UserError):
    """The LiteDRAM core could not be generated (the message says why and how to fix it)."""


class LiteDRAMMissing(LiteDRAMError):
    """litex/litedram (or a package ``litedram_gen --sim`` imports) is not installed."""


@dataclass(frozen=True)
class NativePort:
    """LiteDRAM's native user port as the generated Verilog declares it (the port contract).

    ``data_width`` bits per word (128 on the Arty's DDR3 at 1:4, 16 on the ULX3S SDR);
    ``address_width`` bits of word address (one address = one ``data_width`` word);
    ``mask_width`` = byte-enable bits of ``wdata_we`` (``data_width // 8``).
    """

    data_width: int
    address_width: int

    @property
    def mask_width(self) -> int:
        return self.data_width // 8

    @property
    def word_bytes(self) -> int:
        return self.data_width // 8

    @property
    def size_bytes(self) -> int:
        return (1 << self.address_width) * self.word_bytes


@dataclass(frozen=True)
class GeneratedCore:
    """A generated (cached) core: the Verilog file and what the wrapper needs to know."""

    board: str
    sim: bool
    verilog: Path
    port: NativePort
    ports: dict  # every top-level port: name -> (direction, width)
    key: str
    notes: tuple[str, ...]
    generation_seconds: float  # 0.0 when it came from the cache
    cached: bool
    module: str = CORE_NAME


def memory_of(board: Board | str) -> tuple[Board, DramPart]:
    board = get_board(board) if isinstance(board, str) else board
    if board.memory is None:
        raise LiteDRAMError(
            f"board {board.name!r} has no external DRAM in the board registry (fpga.boards); "
            "resident mode needs a board with a `memory` entry"
        )
    return board, board.memory


def core_config(board: Board | str, sim: bool = False) -> dict:
    """The ``litedram_gen`` configuration for ``board`` (keys from ``litedram/gen.py``)."""
    board, part = memory_of(board)
    if part.data_width % 8:
        raise LiteDRAMError(f"{board.name}: DRAM data width {part.data_width} is not whole bytes")
    config: dict = {
        "cpu": "None",
        "memtype": part.memtype,
        "sdram_module": part.module,
        # LiteDRAM counts 8-bit data groups ("modules"): one x16 chip = 2
        "sdram_module_nb": part.data_width // 8,
        "sdram_phy": part.phy,
        "sys_clk_freq": part.controller_clock_mhz * 1e6,
        "cmd_buffer_depth": CMD_BUFFER_DEPTH,
        # without a CPU nothing would ever release a blocking port; the SoC watches init_done
        "user_ports": {"native_0": {"type": "native", "block_until_ready": False}},
    }
    if part.phy == "A7DDRPHY":
        config.update(
            speedgrade=-1,
            cmd_latency=0,
            sdram_rank_nb=1,
            input_clk_freq=_A7_INPUT_CLOCK_HZ,
            iodelay_clk_freq=_A7_IODELAY_CLOCK_HZ,
            **_DDR3_ELECTRICAL,
        )
    elif part.phy == "GENSDRPHY":
        config["device"] = board.part  # litedram_gen builds a LatticePlatform from it
    else:
        raise LiteDRAMError(f"{board.name}: LiteDRAM PHY {part.phy!r} is not supported here")
    return config


def core_yaml(board: Board | str, sim: bool = False) -> str:
    """The YAML text given to ``litedram_gen`` (JSON, which is YAML; stable key order)."""
    return json.dumps(core_config(board, sim), indent=2, sort_keys=True) + "\n"


def litedram_version() -> str:
    try:
        return importlib.metadata.version("litedram")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def check_installed(sim: bool) -> None:
    """Raise :class:`LiteDRAMMissing` naming the first pip package ``litedram_gen`` lacks."""
    needed = {**_NEEDED, **(_NEEDED_SIM if sim else {})}
    for module, package in needed.items():
        if importlib.util.find_spec(module) is None:
            raise LiteDRAMMissing(
                f"generating the LiteDRAM core needs the pip package {package!r}, which is not "
                f"installed: `{PIP_HINT}"
                + (" liteeth litescope pythondata-misc-tapcfg" if sim else "")
                + "` (or `make setup`, which installs the dev extra)"
            )


def cache_key(yaml_text: str, sim: bool) -> str:
    text = f"{yaml_text}\nlitedram=={litedram_version()}\nsim={sim}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def cache_root() -> Path:
    root = os.environ.get("SQUEEZEFPGA_CACHE") or Path.home() / ".cache" / "squeezefpga"
    return Path(root) / "litedram"


_PORT_RE = re.compile(r"^\s*(input|output|inout)\s+wire\s+(?:\[(\d+):(\d+)\]\s+)?(\w+)\s*,?\s*$")


def parse_ports(verilog: str, module: str = CORE_NAME) -> dict:
    """Top-level ports of ``module``: ``{name: (direction, width)}`` from its ANSI header."""
    start = verilog.find(f"module {module} (")
    if start < 0:
        raise LiteDRAMError(f"no `module {module}` in the generated Verilog")
    header = verilog[start : verilog.index(");", start)]
    ports = {}
    for line in header.splitlines()[1:]:
        match = _PORT_RE.match(line)
        if match:
            direction, msb, lsb, name = match.groups()
            width = int(msb) - int(lsb) + 1 if msb is not None else 1
            ports[name] = (direction, width)
    return ports


def native_port(ports: dict, name: str = "native_0") -> NativePort:
    """The port contract of user port ``name``, checked for consistency."""
    prefix = f"user_port_{name}_"
    try:
        data_width = ports[prefix + "wdata_data"][1]
        address_width = ports[prefix + "cmd_addr"][1]
        mask_width = ports[prefix + "wdata_we"][1]
        read_width = ports[prefix + "rdata_data"][1]
    except KeyError as missing:
        raise LiteDRAMError(f"generated core lacks native port signal {missing}") from None
    if read_width != data_width or mask_width * 8 != data_width:
        raise LiteDRAMError(
            f"inconsistent native port: wdata {data_width}, rdata {read_width}, we {mask_width}"
        )
    return NativePort(data_width, address_width)


_SDR_DQ_INPUT = re.compile(r"^(\s*)input(\s+wire\s+(?:\[\d+:\d+\]\s+)?sdram_dq\s*,)", re.M)


def fix_sdr_dq(verilog: str) -> str:
    """LiteDRAM 2024.12 declares the GENSDRPHY's ``sdram_dq`` ``input`` although ECP5 ``BB``
    buffers drive it: make it ``inout`` (idempotent; other cores pass through unchanged)."""
    return _SDR_DQ_INPUT.sub(r"\1inout\2", verilog)


def _run_generator(yaml_text: str, sim: bool, workdir: Path) -> Path:
    """Run ``python -m litedram.gen`` on ``yaml_text`` in ``workdir``; returns the Verilog path."""
    (workdir / "core.yml").write_text(yaml_text)
    command = [sys.executable, "-m", "litedram.gen", "core.yml", "--output-dir", "out",
               "--name", CORE_NAME] + (["--sim"] if sim else [])  # fmt: skip
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    (workdir / "litedram_gen.log").write_text(result.stdout + result.stderr)
    verilog = workdir / "out" / "gateware" / f"{CORE_NAME}.v"
    if result.returncode or not verilog.exists():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise LiteDRAMError(f"litedram_gen failed (exit {result.returncode}):\n{tail}")
    return verilog


def _notes(part: DramPart, sim: bool, ports: dict, dq_fixed: bool) -> tuple[str, ...]:
    notes = []
    if dq_fixed:
        notes.append("sdram_dq rewritten from `input` to `inout` (LiteDRAM declares it wrongly)")
    if part.phy == "GENSDRPHY":
        if not sim and not any(name.startswith("sdram_clk") for name in ports):
            notes.append(
                "no SDRAM clock output: the board top drives sdram_clk from a phase-shifted PLL"
            )
    if not sim and part.phy == "A7DDRPHY":
        notes.append(
            "no CPU: DDR3 write/read leveling and init_done go through the wb_ctrl CSR bus"
        )
    if sim:
        notes.append("SDRAMPHYModel at DFI level: no init needed; user_clk is the clk input")
    return tuple(notes)


def generate(board: Board | str, sim: bool = False) -> GeneratedCore:
    """Generate (or reuse from the cache) the LiteDRAM core for ``board``.

    Returns the cached Verilog path and the parsed native port contract, e.g.
    ``NativePort(data_width=128, address_width=24)`` for the Arty A7. Generation takes ~1-2 s.
    """
    board, part = memory_of(board)
    yaml_text = core_yaml(board, sim)
    key = cache_key(yaml_text, sim)
    target = cache_root() / key
    manifest = target / "manifest.json"
    seconds, cached = 0.0, True
    if not manifest.exists():
        check_installed(sim)
        cached = False
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f".{key[:12]}-", dir=target.parent) as work:
            work = Path(work)
            generated = _run_generator(yaml_text, sim, work)
            original = generated.read_text()
            verilog = fix_sdr_dq(original)
            ports = parse_ports(verilog)
            port = native_port(ports)
            seconds = time.monotonic() - started
            staging = work / "entry"
            staging.mkdir()
            (staging / f"{CORE_NAME}.v").write_text(verilog)
            (staging / "core.yml").write_text(yaml_text)
            shutil.copy(work / "litedram_gen.log", staging / "litedram_gen.log")
            info = {
                "board": board.name,
                "sim": sim,
                "litedram": litedram_version(),
                "port": asdict(port),
                "ports": ports,
                "notes": list(_notes(part, sim, ports, verilog != original)),
                "generation_seconds": round(seconds, 3),
            }
            (staging / "manifest.json").write_text(json.dumps(info, indent=2) + "\n")
            try:
                staging.rename(target)  # atomic: readers see no entry or a whole one
            except OSError:
                if not manifest.exists():  # not a concurrent writer's finished entry
                    raise
    info = json.loads(manifest.read_text())
    return GeneratedCore(
        board=board.name,
        sim=sim,
        verilog=target / f"{CORE_NAME}.v",
        port=NativePort(**info["port"]),
        ports={name: tuple(value) for name, value in info["ports"].items()},
        key=key,
        notes=tuple(info["notes"]),
        generation_seconds=seconds,
        cached=cached,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m fpga.litedram --board arty_a7 [--sim]``: generate and print the contract."""
    from fpga.cli import ArgumentParser

    parser = ArgumentParser(prog="python -m fpga.litedram", description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="arty_a7")
    parser.add_argument("--sim", action="store_true", help="litedram_gen --sim (SDRAMPHYModel)")
    parser.add_argument("--yaml", action="store_true", help="print the YAML only")
    args = parser.parse_args(argv)

    def run() -> int:
        if args.yaml:
            print(core_yaml(args.board, args.sim), end="")
            return 0
        core = generate(args.board, args.sim)
        print(f"{core.verilog}\n{core.port}  ({core.port.size_bytes >> 20} MiB)")
        for note in core.notes:
            print(f"note: {note}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
