"""fpga.build.litedram: the litedram_gen YAML comes from the board registry, the generated core is
cached (and reused), the ULX3S sdram_dq fix holds, the native port contract is parsed."""

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from fpga.build import litedram
from fpga.spec.boards import (
    INIT_CPU,
    INIT_CPU_DSPS,
    INIT_CPU_VARIANT,
    get_board,
)
from hw.board import resources

needs_litedram = pytest.mark.skipif(
    importlib.util.find_spec("litedram") is None, reason="litedram is not installed (dev extra)"
)


#: the Arty board core (VexRiscv + BIOS compile, ~25-40 s here): skipped without the tools
needs_cpu_tools = pytest.mark.skipif(
    bool(litedram.missing_tools(cpu=litedram.INIT_CPU)),
    reason=f"{litedram.missing_tools(cpu=litedram.INIT_CPU)} (make arty-dram-tools)",
)

#: the Arty A7 board core's top-level ports (litedram 2024.12, cpu: vexriscv), as parse_ports
#: reads them: the hand-written reference for the pad-mapping tests
ARTY_BOARD_CORE_PORTS = {
    "clk": ("input", 1), "rst": ("input", 1), "pll_locked": ("output", 1),
    "ddram_a": ("output", 14), "ddram_ba": ("output", 3), "ddram_cas_n": ("output", 1),
    "ddram_cke": ("output", 1), "ddram_clk_n": ("output", 1), "ddram_clk_p": ("output", 1),
    "ddram_cs_n": ("output", 1), "ddram_dm": ("output", 2), "ddram_dq": ("inout", 16),
    "ddram_dqs_n": ("inout", 2), "ddram_dqs_p": ("inout", 2), "ddram_odt": ("output", 1),
    "ddram_ras_n": ("output", 1), "ddram_reset_n": ("output", 1), "ddram_we_n": ("output", 1),
    "init_done": ("output", 1), "init_error": ("output", 1),
    "uart_rx": ("input", 1), "uart_tx": ("output", 1),
    "user_clk": ("output", 1), "user_rst": ("output", 1),
    "user_port_native_0_cmd_addr": ("input", 24), "user_port_native_0_cmd_ready": ("output", 1),
    "user_port_native_0_cmd_valid": ("input", 1), "user_port_native_0_cmd_we": ("input", 1),
    "user_port_native_0_rdata_data": ("output", 128),
    "user_port_native_0_rdata_ready": ("input", 1),
    "user_port_native_0_rdata_valid": ("output", 1),
    "user_port_native_0_wdata_data": ("input", 128),
    "user_port_native_0_wdata_ready": ("output", 1),
    "user_port_native_0_wdata_valid": ("input", 1), "user_port_native_0_wdata_we": ("input", 16),
}  # fmt: skip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZEFPGA_CACHE", str(tmp_path))
    return tmp_path / "litedram"


def test_yaml_is_derived_from_the_board_registry():
    arty, ulx3s = get_board("arty_a7"), get_board("ulx3s")
    config = json.loads(litedram.core_yaml("arty_a7", sim=True))  # JSON is YAML
    part = arty.memory
    assert config["sdram_module"] == part.module == "MT41K128M16"
    assert config["sdram_phy"] == part.phy == "A7DDRPHY"
    assert config["memtype"] == "DDR3"
    assert config["sdram_module_nb"] == part.data_width // 8 == 2
    assert config["sys_clk_freq"] == part.controller_clock_mhz * 1e6 == 100e6
    assert config["cpu"] == "None"
    assert config["user_ports"] == {"native_0": {"type": "native", "block_until_ready": False}}
    sdr = json.loads(litedram.core_yaml(ulx3s))
    assert sdr["sdram_phy"] == "GENSDRPHY" and sdr["sdram_module"] == "MT48LC16M16"
    assert sdr["cpu"] == "None"  # the SDR init sequence is hardware
    # the Arty board core: LiteDRAM's init CPU (SERV) runs the DDR3 init/leveling; the port
    # never blocks (the SoC waits for init_done itself)
    board = json.loads(litedram.core_yaml("arty_a7"))
    assert board["cpu"] == INIT_CPU == "serv"
    # SERV: no multiplier, so no DSP48E1 (the engine takes the part's)
    assert board["cpu_variant"] == INIT_CPU_VARIANT == "standard"
    assert INIT_CPU_DSPS == 0
    assert "cpu_variant" not in config and "cpu_variant" not in sdr  # no CPU, no variant
    assert board["user_ports"] == config["user_ports"]
    assert {k: v for k, v in board.items() if k not in ("cpu", "cpu_variant")} == {
        k: v for k, v in config.items() if k != "cpu"
    }
    assert sdr["device"] == ulx3s.part  # litedram_gen requires it for the SDR PHY
    assert "iodelay_clk_freq" not in sdr
    # boards without DRAM say so in a sentence
    streamed = get_board("arty_a7").in_mode("streamed")
    assert streamed.memory is None
    with pytest.raises(litedram.LiteDRAMError, match="no external DRAM"):
        litedram.core_config(streamed)


def test_cache_key_depends_on_yaml_version_and_sim():
    text = litedram.core_yaml("arty_a7")
    keys = {
        litedram.cache_key(text, False),
        litedram.cache_key(text, True),
        litedram.cache_key(litedram.core_yaml("ulx3s"), False),
    }
    assert len(keys) == 3


def test_cpu_core_bios_options_reach_the_generator_and_the_cache_key(monkeypatch):
    """The BIOS options (no console, LTO: a smaller ROM) are passed to litedram_gen for the core
    with a CPU only, and a change of them is a new cache entry."""
    board, sim = litedram.core_yaml("arty_a7"), litedram.core_yaml("arty_a7", sim=True)
    assert litedram.generator_options(board) == litedram.BIOS_OPTIONS
    assert litedram.BIOS_OPTIONS == ("--bios-console", "disable", "--bios-lto")
    assert litedram.generator_options(sim) == ()
    assert litedram.generator_options(litedram.core_yaml("ulx3s")) == ()
    before = litedram.cache_key(board, False), litedram.cache_key(sim, True)
    monkeypatch.setattr(litedram, "BIOS_OPTIONS", ("--bios-console", "full"))
    after = litedram.cache_key(board, False), litedram.cache_key(sim, True)
    assert after[0] != before[0] and after[1] == before[1]


def test_cpu_core_cache_key_follows_litex_and_the_cpu(monkeypatch):
    board, sim = litedram.core_yaml("arty_a7"), litedram.core_yaml("arty_a7", sim=True)
    before = litedram.cache_key(board, False), litedram.cache_key(sim, True)
    real = litedram._version
    monkeypatch.setattr(litedram, "_version", lambda name: "0" if name == "litex" else real(name))
    after = litedram.cache_key(board, False), litedram.cache_key(sim, True)
    assert after[0] != before[0]  # the BIOS is compiled from litex's sources
    assert after[1] == before[1]  # the CPU-less core does not depend on them


def test_missing_litex_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        litedram.importlib.util, "find_spec", lambda name: None if name == "litex" else real(name)
    )
    with pytest.raises(litedram.LiteDRAMMissing, match="pip package 'litex'.*pip install litex"):
        litedram.check_installed(sim=False)


def _missing_message(monkeypatch, *, module=None, program=None, gcc=False) -> str:
    real_spec, real_which = importlib.util.find_spec, litedram.shutil.which
    monkeypatch.setattr(
        litedram.importlib.util,
        "find_spec",
        lambda name: None if name == module else real_spec(name),
    )

    def which(name, path=None):
        if name == program or (gcc and name.endswith("-gcc")):
            return None
        return real_which(name, path=path) or f"/usr/bin/{name}"  # the others: present

    monkeypatch.setattr(litedram.shutil, "which", which)
    monkeypatch.setattr(litedram, "_NEEDED", {})  # litex itself: not the point here
    monkeypatch.setattr(
        litedram, "_NEEDED_CPU", {k: v for k, v in litedram._NEEDED_CPU.items() if k == module}
    )
    with pytest.raises(litedram.LiteDRAMMissing) as error:
        litedram.check_installed(sim=False, cpu=litedram.INIT_CPU)
    message = str(error.value)
    assert "\n" not in message and ". " not in message  # one sentence
    assert "make arty-dram-tools" in message
    return message


@pytest.mark.parametrize(
    "missing, expected",
    [
        ({"module": "pythondata_cpu_serv"}, "pip package 'pythondata-cpu-serv'"),
        ({"module": "pythondata_software_picolibc"}, "pip package 'pythondata-software-picolibc'"),
        ({"program": "meson"}, "`meson` on PATH \\(pip package 'meson'\\)"),
        ({"program": "ninja"}, "`ninja` on PATH"),
        ({"gcc": True}, "RISC-V GCC \\(`riscv64-unknown-elf-gcc`\\).*gcc-riscv64-unknown-elf"),
    ],
)
def test_missing_cpu_tools_are_one_clear_sentence(monkeypatch, missing, expected):
    assert re.search(expected, _missing_message(monkeypatch, **missing))


def test_cpu_tools_are_checked_only_for_the_cpu_variant(monkeypatch, cache):
    monkeypatch.setattr(litedram.shutil, "which", lambda name, path=None: None)
    if importlib.util.find_spec("litedram") is not None:
        litedram.check_installed(sim=False)  # no CPU (ULX3S, sim): gcc is not needed
    with pytest.raises(litedram.LiteDRAMMissing, match="RISC-V GCC|pip package"):
        litedram.generate("arty_a7")  # the board core: fails before running anything
    assert not cache.exists() or not any(cache.iterdir())


def test_the_generator_finds_the_venvs_tools():
    assert litedram.tool_path().split(litedram.os.pathsep)[0] == str(
        Path(litedram.sys.executable).parent
    )


def test_readmemh_paths_become_plain_file_names():
    text = (
        '\t$readmemh("/tmp/x/out/gateware/litedram_core_rom.init", rom);\n'
        '\t$readmemh("litedram_core_sram.init", sram);\n'
        '\t$readmemb ( "C:\\\\build\\\\mem.init", mem);\n'
    )
    fixed = litedram.fix_readmemh_paths(text)
    assert litedram.readmem_files(fixed) == [
        "litedram_core_rom.init",
        "litedram_core_sram.init",
        "mem.init",
    ]
    assert '$readmemh("litedram_core_rom.init", rom);' in fixed
    assert litedram.fix_readmemh_paths(fixed) == fixed


def test_parse_ports_reads_reg_outputs_and_tcl_sources():
    header = (
        "module litedram_core (\n    input  wire          uart_rx,\n"
        "    output reg           uart_tx,\n    output wire   [13:0] ddram_a\n);"
    )
    assert litedram.parse_ports(header) == {
        "uart_rx": ("input", 1),
        "uart_tx": ("output", 1),
        "ddram_a": ("output", 14),
    }
    tcl = "read_verilog {/venv/pythondata_cpu_vexriscv/verilog/VexRiscv.v}\nread_verilog {/o/c.v}\n"
    assert litedram.tcl_sources(tcl) == [
        "/venv/pythondata_cpu_vexriscv/verilog/VexRiscv.v",
        "/o/c.v",
    ]


def test_sdr_dq_fix_on_a_declaration():
    header = "module litedram_core (\n    input  wire   [15:0] sdram_dq,\n    input  wire  clk\n);"
    fixed = litedram.fix_sdr_dq(header)
    assert "    inout  wire   [15:0] sdram_dq," in fixed and "input  wire  clk" in fixed
    assert litedram.fix_sdr_dq(fixed) == fixed


@needs_litedram
def test_generated_sim_core_is_cached_and_reused(cache):
    first = litedram.generate("arty_a7", sim=True)
    assert not first.cached and first.generation_seconds > 0
    assert first.port == litedram.NativePort(data_width=128, address_width=24)
    assert first.port.size_bytes == get_board("arty_a7").memory.size_bytes == 256 << 20
    assert first.ports["clk"] == ("input", 1) and "sim_trace" in first.ports
    mtime = first.verilog.stat().st_mtime_ns
    second = litedram.generate("arty_a7", sim=True)
    assert second.cached and second.verilog == first.verilog
    assert second.verilog.stat().st_mtime_ns == mtime  # not rewritten
    assert [p.name for p in cache.iterdir()] == [first.key]  # no temporary directory left
    assert (first.verilog.parent / "core.yml").read_text() == litedram.core_yaml("arty_a7", True)


@needs_litedram
def test_ulx3s_board_core_has_inout_dq_and_its_contract(cache):
    core = litedram.generate("ulx3s")
    text = core.verilog.read_text()
    assert core.ports["sdram_dq"] == ("inout", 16)
    assert "input  wire   [15:0] sdram_dq" not in text
    assert core.port == litedram.NativePort(data_width=16, address_width=24)
    assert core.port.size_bytes == get_board("ulx3s").memory.size_bytes
    assert not any(name.startswith("sdram_clk") for name in core.ports)
    assert any("no SDRAM clock output" in note for note in core.notes)


# -- the Arty A7's DDR3 pins (hw.board.resources)
# ------------------------------------------------------


def _fake_pads(table: dict, ports: dict, builtin: bool) -> SimpleNamespace:
    """A ``platform.request(..., dir="-")`` stand-in: IO values are strings of the right width."""
    pads = {}
    for port, target in table.items():
        sub, half = target if builtin else (target, None)
        width = ports[port][1]
        if half is None:
            pads[sub] = SimpleNamespace(io="x" * width)
        else:
            pads.setdefault(sub, SimpleNamespace())
            setattr(pads[sub], half, half * width)
    return SimpleNamespace(**pads)


@pytest.mark.parametrize("builtin", [False, True], ids=["ARTY_DDR3", "amaranth-boards ddr3"])
def test_every_core_pad_port_gets_a_pin_and_no_pin_is_left(builtin):
    table = resources.BUILTIN_DDR3_PADS if builtin else resources.ARTY_DDR3_PADS
    ports = ARTY_BOARD_CORE_PORTS
    pads = resources.ddr3_pads(_fake_pads(table, ports, builtin), ports)
    assert set(pads) == {name for name in ports if name.startswith("ddram_")}
    assert all(len(value) == ports[name][1] for name, value in pads.items())
    if builtin:
        assert pads["ddram_clk_n"] == "n" and pads["ddram_dqs_p"] == "pp"
    with pytest.raises(resources.PadMappingError, match="without a DDR3 pin: ddram_x"):
        resources.ddr3_pads(_fake_pads(table, ports, builtin), {**ports, "ddram_x": ("output", 1)})
    fewer = {name: spec for name, spec in ports.items() if name != "ddram_odt"}
    with pytest.raises(resources.PadMappingError, match="does not drive: ddram_odt"):
        resources.ddr3_pads(_fake_pads(table, ports, builtin), fewer)
    with pytest.raises(resources.PadMappingError, match="ddram_a: the core has 13 bits"):
        resources.ddr3_pads(_fake_pads(table, ports, builtin), {**ports, "ddram_a": ("output", 13)})


def _pins(platform, name: str) -> dict:
    """core port -> pin names of resource ``name`` (LiteX names or amaranth-boards' own)."""
    resource = platform.lookup(name, 0)
    subs = {sub.name: sub for sub in resource.ios}
    result = {}
    if name == resources.ARTY_DDR3_NAME:
        for port, sub in resources.ARTY_DDR3_PADS.items():
            result[port] = subs[sub].ios[0].names
    else:
        for port, (sub, half) in resources.BUILTIN_DDR3_PADS.items():
            phys = subs[sub].ios[0]
            result[port] = (getattr(phys, half) if half else phys).names
    return result


def test_arty_ddr3_pins_match_amaranth_boards_and_the_xdc_has_the_standards():
    from amaranth import Elaboratable, Instance, Module
    from amaranth_boards.arty_a7 import ArtyA7_35Platform

    platform = ArtyA7_35Platform()
    platform.add_resources(resources.ARTY_DDR3)
    # LiteX's pin facts agree with amaranth-boards' own (independent) Arty ddr3 resource
    assert _pins(platform, "ddram") == _pins(platform, "ddr3")
    ports = ARTY_BOARD_CORE_PORTS

    class Top(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            pads = resources.ddr3_pads(platform.request("ddram", 0, dir="-"), ports)
            prefix = {"input": "i_", "output": "o_", "inout": "io_"}
            connections = {prefix[ports[name][0]] + name: value for name, value in pads.items()}
            m.submodules.core = Instance("litedram_core", **connections)
            return m

    plan = platform.prepare(Top(), name="top")
    xdc = plan.files["top.xdc"]

    def props(port):
        pattern = rf'set_property (\w+) "?([^"\s]+)"? \[get_ports "{re.escape(port)}"\]'
        return dict(re.findall(pattern, xdc))

    assert props(r"ddram_0__dqs_p__io\[1]") == {
        "LOC": "U2", "SLEW": "FAST", "IOSTANDARD": "DIFF_SSTL135", "IN_TERM": "UNTUNED_SPLIT_40"
    }  # fmt: skip
    assert props(r"ddram_0__dq__io\[15]")["IN_TERM"] == "UNTUNED_SPLIT_40"
    assert props("ddram_0__clk_n__io") == {
        "LOC": "V9", "SLEW": "FAST", "IOSTANDARD": "DIFF_SSTL135"
    }  # fmt: skip
    assert props(r"ddram_0__a__io\[13]") == {"LOC": "T8", "SLEW": "FAST", "IOSTANDARD": "SSTL135"}
    top = plan.files["top.v"]
    assert "inout [15:0] ddram_0__dq__io;" in top and ".ddram_reset_n(ddram_0__reset_n__io)" in top


def test_arty_xdc_sets_the_ddr3_vref_and_quiet_core_constraints():
    xdc = (Path(__file__).resolve().parent.parent / "constraints" / "arty_a7.xdc").read_text()
    assert "set_property INTERNAL_VREF 0.675 [get_iobanks 34]" in xdc
    section = xdc[xdc.index("DDR3L") :]
    queries = re.findall(r"\[(get_\w+)([^\[\]]*)", section)
    assert len(queries) >= 6
    for command, arguments in queries:
        if command != "get_iobanks":
            assert "-quiet" in arguments, command  # matches nothing in a streamed build


# -- the Arty board core (VexRiscv init CPU): slow, needs `make arty-dram-tools` -----------------


@pytest.fixture(scope="module")
def arty_board_core(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("cache")
        patch.setenv("SQUEEZEFPGA_CACHE", str(cache))
        first = litedram.generate("arty_a7")
        second = litedram.generate("arty_a7")
        yield first, second, cache / "litedram"


@pytest.mark.slow
@needs_litedram
@needs_cpu_tools
def test_arty_board_core_has_its_init_cpu_and_every_file(arty_board_core):
    core, again, cache = arty_board_core
    assert core.cpu == "serv" and not core.cached and again.cached
    assert core.port == litedram.NativePort(data_width=128, address_width=24)
    assert core.ports == ARTY_BOARD_CORE_PORTS  # the hand-written reference above holds
    names = [path.name for path in core.files]
    assert names[0] == "litedram_core.v" and core.files[0] == core.verilog
    cpu_file = "serv_top.v"  # SERV's Verilog (boards.INIT_CPU), one of its files
    assert cpu_file in names and "litedram_core_rom.init" in names
    assert {path.parent for path in core.files} == {core.verilog.parent}
    assert all(path.is_file() for path in core.files) and again.files == core.files
    assert core.verilog_files[0] == core.verilog
    assert core.verilog.parent / cpu_file in core.verilog_files
    text = core.verilog.read_text()
    assert set(litedram.readmem_files(text)) == {path.name for path in core.init_files}
    assert "module serv_top" in (core.verilog.parent / cpu_file).read_text()
    # the BIOS (no console, LTO): 5,383 words of ROM with litex 2024.12
    assert (core.verilog.parent / "litedram_core_rom.init").stat().st_size > 10_000
    assert any("init_done" in note for note in core.notes)
    assert [p.name for p in cache.iterdir()] == [core.key]


@pytest.mark.slow
@needs_litedram
@needs_cpu_tools
def test_arty_board_core_pads_map_one_to_one(arty_board_core):
    from amaranth_boards.arty_a7 import ArtyA7_35Platform

    core = arty_board_core[0]
    for name in (resources.ARTY_DDR3_NAME, "ddr3"):
        platform = ArtyA7_35Platform()
        platform.add_resources(resources.ARTY_DDR3)
        pads = resources.ddr3_pads(platform.request(name, 0, dir="-"), core.ports)
        assert set(pads) == {port for port in core.ports if port.startswith("ddram_")}
