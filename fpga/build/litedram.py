"""LiteDRAM generator step: board registry -> ``litedram_gen`` YAML -> cached Verilog core.

The DRAM controller is LiteDRAM's (PyPI ``litedram``), generated as one Verilog file and
instantiated from Amaranth as a black box (``hw.soc.dram.LiteDRAMNative``). This module owns the
generator input: the YAML is *derived* from the board's ``memory`` entry
(``fpga.spec.boards.DramPart``), never hand-written, and the output is cached under
``$SQUEEZEFPGA_CACHE/litedram/<key>`` (default ``~/.cache/squeezefpga/litedram/<key>``), where
``key`` is the SHA-256 of the YAML text, the litedram version and the ``sim`` flag (and, for a core
with a CPU, the litex and VexRiscv versions and the BIOS options). A cache entry is
written into a temporary directory and renamed into place, so a reader never sees half a core.

Two variants per board:

- ``sim=True``: ``litedram_gen --sim``: no CPU, ``block_until_ready: False``, the real controller
  (refresh, bank machines, crossbar) with LiteDRAM's DFI-level ``SDRAMPHYModel`` and the whole
  memory as Verilog arrays; one ``clk`` input (``user_clk`` is the same net), no init firmware.
- ``sim=False``: the board's PHY (``A7DDRPHY`` with its own PLL, ``GENSDRPHY``) and pads.

  - Arty A7 (``A7DDRPHY``): LiteDRAM's CPU variant (as LiteDRAM's own ``examples/arty.yml``,
    with ``cpu``/``cpu_variant`` ``fpga.spec.boards.INIT_CPU``/``INIT_CPU_VARIANT``: SERV, the
    bit-serial RV32I). The core contains the CPU and a ROM with LiteX's BIOS (built with
    :data:`BIOS_OPTIONS`: no interactive console, LTO), which runs the DDR3 init sequence,
    write/read leveling and a 2 MiB memtest at power-on, then sets ``init_done`` (and
    ``init_error`` on failure). The native port stays ``block_until_ready:
    False``: the SoC (``hw.soc.dram``) gates its commands on ``init_done``. Files a build needs
    (:attr:`GeneratedCore.files`): ``litedram_core.v``, the CPU's Verilog (SERV's ``serv_*.v``,
    copied from ``pythondata_cpu_serv``) and the ROM/SRAM ``$readmemh`` files
    ``litedram_core_*.init``, all in one cache entry and referenced by plain file name
    (build-directory relative). Its BIOS
    prints its log (banner, leveling, memtest) on a 115200-baud UART on the core's ``uart_tx``
    port; ``uart_rx`` may be tied to 0 or 1 (the receiver waits for a falling edge; with the
    console disabled nothing reads it after the init). Generating it compiles the BIOS:
    ``make arty-dram-tools`` installs what that needs (:data:`CPU_TOOLS_HINT`).
  - ULX3S (``GENSDRPHY``): no CPU, the SDR init sequence runs in the core's hardware.

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
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fpga.build import corecache
from fpga.build.corecache import package_version
from fpga.spec.boards import INIT_CPU, INIT_CPU_VARIANT, Board, DramPart, get_board
from fpga.spec.errors import UserError, run_cli

#: name of the generated Verilog module
CORE_NAME = "litedram_core"

#: the pip line that installs the generator (pinned in pyproject.toml's dev extra)
PIP_HINT = "pip install litex==2024.12 litedram==2024.12 migen"
#: how to install what the CPU variant (BIOS compile) needs besides litex/litedram
CPU_TOOLS_HINT = "`make arty-dram-tools`"
#: LiteDRAM's CPU for the DDR3 init/leveling firmware (``sim=False`` on an ``A7DDRPHY``) and its
#: variant are the board registry's (``fpga.spec.boards.INIT_CPU``/``INIT_CPU_VARIANT``, which
#: also say how many DSP48E1 it takes); the pip package of its Verilog
INIT_CPU_PACKAGE = "pythondata-cpu-serv"
#: LiteX builder options for the init CPU's BIOS (``litex.soc.integration.builder``'s
#: ``--bios-*``): no interactive console (the BIOS still prints its banner, runs the DDR3 init,
#: leveling and memtest and sets init_done, then stops instead of prompting) and link-time
#: optimization: the ROM, which LiteX sizes to the BIOS, is 5,383 words with SERV (7,381 for the
#: minimal VexRiscv's full-console BIOS; docs/build.md "35T fit"). Part of the cache key.
BIOS_OPTIONS = ("--bios-console", "disable", "--bios-lto")
#: Python modules the CPU variant needs: module -> pip package
_NEEDED_CPU = {
    "pythondata_cpu_serv": INIT_CPU_PACKAGE,
    "pythondata_software_picolibc": "pythondata-software-picolibc",
    "pythondata_software_compiler_rt": "pythondata-software-compiler-rt",
}
#: programs the BIOS build runs: program -> what provides it
_NEEDED_CPU_PROGRAMS = {"meson": "pip package 'meson'", "ninja": "pip package 'ninja'"}
#: the RISC-V GCC LiteX accepts (litex.soc.cores.cpu.CPU_GCC_TRIPLE_RISCV32, 2024.12); Debian's
#: gcc-riscv64-unknown-elf provides the first
RISCV_GCC_TRIPLES = (
    "riscv64-unknown-elf", "riscv64-pc-linux-musl", "riscv64-unknown-linux-gnu", "riscv64-elf",
    "riscv64-linux", "riscv64-linux-gnu", "riscv-sifive-elf", "riscv64-none-elf",
    "riscv32-pc-linux-musl", "riscv32-unknown-elf", "riscv32-unknown-linux-gnu", "riscv32-elf",
    "riscv32-linux", "riscv32-linux-gnu", "riscv32-none-elf", "riscv-none-embed", "riscv-none-elf",
)  # fmt: skip
RISCV_GCC_APT = "gcc-riscv64-unknown-elf"
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
    """litex/litedram (or a package ``litedram_gen --sim`` imports, or a tool the CPU variant's
    BIOS build runs) is not installed."""


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
    """A generated (cached) core: the Verilog file and what the wrapper needs to know.

    ``verilog`` is the core's own file; ``files`` is every file a build adds to its tree under its
    plain name (``path.name``), the core first: Verilog (``litedram_core.v``, the CPU's
    ``VexRiscv_Min.v``) and ``$readmemh`` data (``litedram_core_rom.init``, ...). ``cpu``:
    LiteDRAM's init CPU or None.
    """

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
    files: tuple[Path, ...] = ()  # every file of the core (Verilog + init), all in one directory
    cpu: str | None = None

    @property
    def verilog_files(self) -> tuple[Path, ...]:
        return tuple(path for path in self.files if path.suffix in (".v", ".sv"))

    @property
    def init_files(self) -> tuple[Path, ...]:
        return tuple(path for path in self.files if path.suffix == ".init")


def memory_of(board: Board | str) -> tuple[Board, DramPart]:
    board = get_board(board) if isinstance(board, str) else board
    if board.memory is None:
        raise LiteDRAMError(
            f"board {board.name!r} has no external DRAM in the board registry (fpga.spec.boards); "
            "resident mode needs a board with a `memory` entry"
        )
    return board, board.memory


def core_config(board: Board | str, sim: bool = False) -> dict:
    """The ``litedram_gen`` configuration for ``board`` (keys from ``litedram/gen.py``)."""
    board, part = memory_of(board)
    if part.data_width % 8:
        raise LiteDRAMError(f"{board.name}: DRAM data width {part.data_width} is not whole bytes")
    cpu = init_cpu(part, sim)
    config: dict = {
        "cpu": cpu or "None",
        **({"cpu_variant": INIT_CPU_VARIANT} if cpu else {}),
        "memtype": part.memtype,
        "sdram_module": part.module,
        # LiteDRAM counts 8-bit data groups ("modules"): one x16 chip = 2
        "sdram_module_nb": part.data_width // 8,
        "sdram_phy": part.phy,
        "sys_clk_freq": part.controller_clock_mhz * 1e6,
        "cmd_buffer_depth": CMD_BUFFER_DEPTH,
        # the SoC gates commands on init_done itself (hw.soc.dram), so the port never blocks (and
        # the CPU-less cores, which nothing would release, need it)
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


def init_cpu(part: DramPart, sim: bool) -> str | None:
    """LiteDRAM's init CPU for ``part``: SERV (BIOS leveling) for a real DDR3 PHY, else None
    (the simulation model needs no init; the SDR init sequence is hardware)."""
    return INIT_CPU if (not sim and part.phy == "A7DDRPHY") else None


def core_yaml(board: Board | str, sim: bool = False) -> str:
    """The YAML text given to ``litedram_gen`` (JSON, which is YAML; stable key order)."""
    return json.dumps(core_config(board, sim), indent=2, sort_keys=True) + "\n"


def litedram_version() -> str:
    return _version("litedram")


def tool_path() -> str:
    """``PATH`` for ``litedram_gen``: this interpreter's bin directory first (the venv's meson and
    ninja are found even when the venv is not activated)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def riscv_gcc() -> str | None:
    """The RISC-V GCC LiteX would use for the BIOS, or None."""
    for triple in RISCV_GCC_TRIPLES:
        found = shutil.which(f"{triple}-gcc", path=tool_path())
        if found:
            return found
    return None


def check_installed(sim: bool, cpu: str | None = None) -> None:
    """Raise :class:`LiteDRAMMissing` naming the first thing ``litedram_gen`` lacks: a pip
    package, or (``cpu``, the BIOS build) a pip package, meson/ninja or the RISC-V GCC."""
    needed = {**_NEEDED, **(_NEEDED_SIM if sim else {})}
    for module, package in needed.items():
        if importlib.util.find_spec(module) is None:
            raise LiteDRAMMissing(
                f"generating the LiteDRAM core needs the pip package {package!r}, which is not "
                f"installed: `{PIP_HINT}"
                + (" liteeth litescope pythondata-misc-tapcfg" if sim else "")
                + "` (or `make setup`, which installs the dev extra)"
            )
    if cpu is None:
        return
    why = f"generating the LiteDRAM core with its {cpu} init CPU (its BIOS calibrates the DDR3)"
    for module, package in _NEEDED_CPU.items():
        if importlib.util.find_spec(module) is None:
            raise LiteDRAMMissing(
                f"{why} needs the pip package {package!r}, which is not installed: run "
                f"{CPU_TOOLS_HINT} (or `pip install {' '.join(_NEEDED_CPU.values())} meson ninja`)"
            )
    for program, provider in _NEEDED_CPU_PROGRAMS.items():
        if shutil.which(program, path=tool_path()) is None:
            raise LiteDRAMMissing(
                f"{why} needs `{program}` on PATH ({provider}), which is not installed: run "
                f"{CPU_TOOLS_HINT} (or `pip install {program}`)"
            )
    if riscv_gcc() is None:
        raise LiteDRAMMissing(
            f"{why} needs a RISC-V GCC (`riscv64-unknown-elf-gcc`) on PATH, which is not "
            f"installed: run {CPU_TOOLS_HINT} as root (or `apt-get install {RISCV_GCC_APT}`)"
        )


def missing_tools(sim: bool = False, cpu: str | None = None) -> str | None:
    """What :func:`check_installed` would raise, as text, or None when everything is there."""
    try:
        check_installed(sim, cpu)
    except LiteDRAMMissing as error:
        return str(error)
    return None


_version = package_version  # a module name of its own: the tests stand in another


def generator_options(yaml_text: str) -> tuple[str, ...]:
    """The options ``litedram_gen`` runs with besides the YAML, ``--sim`` and the output names:
    the BIOS's (:data:`BIOS_OPTIONS`) for a core with a CPU, none for the others."""
    return BIOS_OPTIONS if json.loads(yaml_text).get("cpu", "None") != "None" else ()


def cache_key(yaml_text: str, sim: bool) -> str:
    text = f"{yaml_text}\nlitedram=={litedram_version()}\nsim={sim}\n"
    if json.loads(yaml_text).get("cpu", "None") != "None":  # BIOS + CPU Verilog come from these
        text += f"litex=={_version('litex')}\ncpu=={_version(INIT_CPU_PACKAGE)}\n"
        text += f"options={' '.join(generator_options(yaml_text))}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def cache_root() -> Path:
    return corecache.cache_root("litedram")


def parse_ports(verilog: str, module: str = CORE_NAME) -> dict:
    """Top-level ports of ``module``: ``{name: (direction, width)}`` from its ANSI header."""
    return corecache.parse_ports(verilog, module, LiteDRAMError)


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


_READMEMH = re.compile(r'(\$readmem[hb]\s*\(\s*")([^"]*[/\\])([^"/\\]+")')


def fix_readmemh_paths(verilog: str) -> str:
    """``$readmemh("/any/dir/x.init", ...)`` -> ``$readmemh("x.init", ...)``: the init files are
    found in the build directory, beside the core (idempotent)."""
    return _READMEMH.sub(r"\1\3", verilog)


def readmem_files(verilog: str) -> list[str]:
    """The file names the Verilog's ``$readmemh``/``$readmemb`` calls load."""
    return re.findall(r'\$readmem[hb]\s*\(\s*"([^"]+)"', verilog)


_READ_VERILOG = re.compile(r"^\s*read_verilog\s+(?:-\w+\s+)*\{?([^}\s]+)\}?\s*$", re.M)


def tcl_sources(tcl: str) -> list[str]:
    """The Verilog sources the generated Vivado script reads (``read_verilog {path}``)."""
    return _READ_VERILOG.findall(tcl)


def _run_generator(yaml_text: str, sim: bool, workdir: Path) -> Path:
    """Run ``python -m litedram.gen`` on ``yaml_text`` in ``workdir``; returns the Verilog path."""
    options = (*(["--sim"] if sim else []), *generator_options(yaml_text))
    env = {**os.environ, "PATH": tool_path()}
    return corecache.run_generator(
        "litedram", yaml_text, workdir, CORE_NAME, options, env, LiteDRAMError
    )


def _extra_files(generated: Path) -> list[Path]:
    """The files beside ``litedram_core.v`` a build needs: the other Verilog sources the generated
    Vivado script reads (the CPU's, from ``pythondata_cpu_serv``) and the ``$readmemh``
    files (the BIOS ROM), all checked to exist."""
    gateware = generated.parent
    extra: list[Path] = []
    tcl = gateware / f"{CORE_NAME}.tcl"
    if tcl.exists():
        for source in tcl_sources(tcl.read_text()):
            path = Path(source) if Path(source).is_absolute() else gateware / source
            if path.name != generated.name:
                extra.append(path)
    for name in readmem_files(generated.read_text()):
        extra.append(gateware / Path(name).name if not Path(name).is_absolute() else Path(name))
    for path in extra:
        if not path.is_file():
            raise LiteDRAMError(f"litedram_gen output lacks {path} (the core needs it)")
    names = [path.name for path in extra]
    if len(set(names)) != len(names) or generated.name in names:
        raise LiteDRAMError(f"two files of the generated core share a name: {names}")
    return extra


def _notes(
    part: DramPart, sim: bool, ports: dict, dq_fixed: bool, cpu: str | None = None
) -> tuple[str, ...]:
    notes = []
    if dq_fixed:
        notes.append("sdram_dq rewritten from `input` to `inout` (LiteDRAM declares it wrongly)")
    if part.phy == "GENSDRPHY":
        if not sim and not any(name.startswith("sdram_clk") for name in ports):
            notes.append(
                "no SDRAM clock output: the board top drives sdram_clk from a phase-shifted PLL"
            )
    if not sim and part.phy == "A7DDRPHY":
        if cpu:
            notes.append(
                f"{cpu} + BIOS ROM: DDR3 init, write/read leveling and a 2 MiB memtest at "
                "power-on, then init_done (init_error on failure); the memtest leaves its "
                "pattern in the first 2 MiB"
            )
        else:
            notes.append(
                "no CPU: DDR3 write/read leveling and init_done go through the wb_ctrl CSR bus"
            )
    if "uart_tx" in ports:
        notes.append(
            "BIOS log on uart_tx at 115200 baud, no interactive console (leave uart_tx open, "
            "tie uart_rx)"
        )
    if sim:
        notes.append("SDRAMPHYModel at DFI level: no init needed; user_clk is the clk input")
    return tuple(notes)


def generate(board: Board | str, sim: bool = False) -> GeneratedCore:
    """Generate (or reuse from the cache) the LiteDRAM core for ``board``.

    Returns the cached Verilog path(s) and the parsed native port contract, e.g.
    ``NativePort(data_width=128, address_width=24)`` for the Arty A7. Generation takes ~1-2 s
    without a CPU, ~25 s with the Arty's init CPU (the BIOS is compiled).
    """
    board, part = memory_of(board)
    cpu = init_cpu(part, sim)
    yaml_text = core_yaml(board, sim)
    key = cache_key(yaml_text, sim)
    target = cache_root() / key
    manifest = target / "manifest.json"
    seconds, cached = 0.0, True
    if not manifest.exists():
        check_installed(sim, cpu)
        cached = False
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f".{key[:12]}-", dir=target.parent) as work:
            work = Path(work)
            generated = _run_generator(yaml_text, sim, work)
            extra = _extra_files(generated)
            original = generated.read_text()
            verilog = fix_readmemh_paths(fix_sdr_dq(original))
            ports = parse_ports(verilog)
            port = native_port(ports)
            seconds = time.monotonic() - started
            staging = work / "entry"
            staging.mkdir()
            (staging / f"{CORE_NAME}.v").write_text(verilog)
            for path in extra:
                shutil.copyfile(path, staging / path.name)
            (staging / "core.yml").write_text(yaml_text)
            shutil.copy(work / "litedram_gen.log", staging / "litedram_gen.log")
            info = {
                "board": board.name,
                "sim": sim,
                "litedram": litedram_version(),
                "port": asdict(port),
                "ports": ports,
                "cpu": cpu,
                "files": [f"{CORE_NAME}.v"] + [path.name for path in extra],
                "notes": list(_notes(part, sim, ports, fix_sdr_dq(original) != original, cpu)),
                "generation_seconds": round(seconds, 3),
            }
            (staging / "manifest.json").write_text(json.dumps(info, indent=2) + "\n")
            corecache.publish(staging, target)  # atomic: readers see no entry or a whole one
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
        files=tuple(target / name for name in info.get("files", [f"{CORE_NAME}.v"])),
        cpu=info.get("cpu"),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m fpga.build.litedram --board arty_a7 [--sim]``: generate and print the
    contract."""
    from fpga.spec.cli import ArgumentParser

    prog = "python -m fpga.build.litedram"
    parser = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
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
        for path in core.files[1:]:
            print(f"with: {path}")
        for note in core.notes:
            print(f"note: {note}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
