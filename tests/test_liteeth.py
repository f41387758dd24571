"""fpga.build.liteeth: the liteeth_gen YAML comes from the board registry (and --ip), the
generated UDP core is cached and reused, and its ports are the raw UDP port's contract."""

import importlib.util
import json

import pytest

from fpga.build import liteeth
from fpga.spec.boards import BOARDS, MAC_PREFIX, BoardError, get_board, mac_address

needs_liteeth = pytest.mark.skipif(
    importlib.util.find_spec("liteeth") is None, reason="liteeth is not installed (dev extra)"
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZEFPGA_CACHE", str(tmp_path))
    return tmp_path / "liteeth"


@pytest.mark.parametrize("name", ["arty_a7", "arty_a7_100"])
def test_yaml_is_derived_from_the_board_registry(name):
    board = get_board(name)
    eth = board.ethernet
    config = json.loads(liteeth.core_yaml(name))
    assert config["phy"] == eth.phy == "LiteEthPHYMII"  # the DP83848 on MII
    assert (config["vendor"], config["toolchain"]) == ("xilinx", "vivado")
    assert config["device"] == board.part
    assert config["clk_freq"] == board.clock_mhz * 1e6  # the SoC's clock: the core runs in it
    assert config["core"] == "udp" and config["data_width"] == 8
    assert config["ip_address"] == eth.ip_address
    assert config["mac_address"] == mac_address(eth.ip_address)
    assert config["udp_ports"] == {"host": {"mode": "raw", "data_width": 8}}


def test_ip_sets_the_address_the_mac_and_the_cache_key():
    default = liteeth.core_yaml("arty_a7")
    other = liteeth.core_yaml("arty_a7", "10.1.2.3")
    config = json.loads(other)
    assert config["ip_address"] == "10.1.2.3"
    assert config["mac_address"] == MAC_PREFIX | 0x010203
    assert liteeth.cache_key(default) != liteeth.cache_key(other)
    # two boards on one network at two addresses get two MAC addresses
    assert mac_address("192.168.1.50") != mac_address("192.168.1.51")


@pytest.mark.parametrize(
    "ip", ["1.2.3", "192.168.1.256", "0.0.0.0", "224.0.0.1", "127.0.0.1", "10.0.0.255", "x"]
)
def test_a_bad_ip_is_one_clear_error(ip, capsys):
    with pytest.raises(BoardError, match="--ip"):
        liteeth.core_yaml("arty_a7", ip)
    assert liteeth.main(["--ip", ip, "--yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --ip") and len(err.strip().splitlines()) == 1


def test_a_board_without_ethernet_is_refused_naming_the_ones_with():
    without = [name for name, board in BOARDS.items() if board.ethernet is None]
    assert without == ["ulx3s"]
    with pytest.raises(liteeth.LiteEthError, match="has no Ethernet.*arty_a7, arty_a7_100"):
        liteeth.core_config("ulx3s")


def test_missing_liteeth_is_a_clear_error(monkeypatch, cache):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "liteeth" else real(name)
    )
    with pytest.raises(liteeth.LiteEthMissing, match="pip package 'liteeth'.*make setup"):
        liteeth.generate("arty_a7")


def test_contract_check_names_the_port_that_differs():
    ports = {
        **{f"mii_{n}": ("input", 1) for n in ("clocks_tx", "clocks_rx", "rx_dv")},
        "sys_clock": ("input", 1),
        "sys_reset": ("input", 1),
        "mii_rx_data": ("input", 4),
        "mii_tx_data": ("output", 4),
        "mii_tx_en": ("output", 1),
        "mii_rst_n": ("output", 1),
    }
    for field, width in liteeth.STREAM_FIELDS.items():
        ports[f"host_sink_{field}"] = ("output" if field == "ready" else "input", width)
        ports[f"host_source_{field}"] = ("input" if field == "ready" else "output", width)
    liteeth.check_contract(ports)
    narrow = {**ports, "host_source_ip_address": ("output", 16)}
    with pytest.raises(liteeth.LiteEthError, match="host_source_ip_address is .*16.*32"):
        liteeth.check_contract(narrow)
    del ports["mii_tx_en"]
    with pytest.raises(liteeth.LiteEthError, match="mii_tx_en is missing"):
        liteeth.check_contract(ports)


@needs_liteeth
def test_generated_core_is_cached_reused_and_keeps_its_contract(cache):
    first = liteeth.generate("arty_a7")
    assert not first.cached and first.verilog.is_file()
    assert first.verilog.parent.parent == cache
    again = liteeth.generate("arty_a7")
    assert again.cached and again.verilog == first.verilog and again.ports == first.ports
    text = first.verilog.read_text()
    assert "module liteeth_core (" in text
    # the raw port: each datagram's sender (address, ports) and length come with it
    assert first.ports["host_source_ip_address"] == ("output", 32)
    assert first.ports["host_sink_length"] == ("input", 16)
    assert (first.ip_address, first.udp_port) == ("192.168.1.50", 2000)
    # the address is built in: 192.168.1.50 = 0xc0a80132
    assert "32'd3232235826" in text or "c0a80132" in text.lower()
    other = liteeth.generate("arty_a7", "10.0.0.7")
    assert other.key != first.key and other.verilog != first.verilog
    assert json.loads((other.verilog.parent / "core.yml").read_text())["ip_address"] == "10.0.0.7"


def test_the_generated_core_has_the_arp_cache_fix():
    """The cached core answers an ARP lookup with the entry the search found (``ARP_CACHE_FIX``);
    a text the fix does not find exactly once is refused."""
    pytest.importorskip("liteeth")
    core = liteeth.generate("arty_a7")
    name, before, after = liteeth.ARP_CACHE_FIX
    text = core.verilog.read_text()
    assert after in text and before not in text
    with pytest.raises(liteeth.LiteEthError, match="ARP cache"):
        liteeth.apply_fixes(text)
