"""fpga.litedram: the litedram_gen YAML comes from the board registry, the generated core is
cached (and reused), the ULX3S sdram_dq fix holds, the native port contract is parsed."""

import importlib.util
import json

import pytest

from fpga import litedram
from fpga.boards import BOARDS, get_board

needs_litedram = pytest.mark.skipif(
    importlib.util.find_spec("litedram") is None, reason="litedram is not installed (dev extra)"
)


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
    assert sdr["device"] == ulx3s.part  # litedram_gen requires it for the SDR PHY
    assert "iodelay_clk_freq" not in sdr
    # boards without DRAM say so in a sentence
    assert BOARDS["icebreaker"].memory is None
    with pytest.raises(litedram.LiteDRAMError, match="no external DRAM"):
        litedram.core_config("icebreaker")


def test_cache_key_depends_on_yaml_version_and_sim():
    text = litedram.core_yaml("arty_a7")
    keys = {
        litedram.cache_key(text, False),
        litedram.cache_key(text, True),
        litedram.cache_key(litedram.core_yaml("ulx3s"), False),
    }
    assert len(keys) == 3


def test_missing_litex_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        litedram.importlib.util, "find_spec", lambda name: None if name == "litex" else real(name)
    )
    with pytest.raises(litedram.LiteDRAMMissing, match="pip package 'litex'.*pip install litex"):
        litedram.check_installed(sim=False)


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


@needs_litedram
def test_arty_board_core_contract(cache):
    core = litedram.generate("arty_a7")
    assert core.port == litedram.NativePort(data_width=128, address_width=24)
    assert core.ports["ddram_dq"] == ("inout", 16) and core.ports["rst"] == ("input", 1)
    assert core.ports["user_clk"] == ("output", 1)
