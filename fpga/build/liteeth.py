"""LiteEth generator step: board registry -> ``liteeth_gen`` YAML -> cached Verilog UDP core.

The Ethernet MAC, ARP/IPv4/ICMP/UDP stack and PHY interface are LiteEth's (PyPI ``liteeth``),
generated as one Verilog file like the DRAM core (``fpga.build.litedram``). This module owns the
generator input: the YAML is *derived* from the board's ``ethernet`` entry
(``fpga.spec.boards.EthernetPort``), never hand-written; ``--ip`` gives the board another address
(its MAC address follows, ``fpga.spec.boards.mac_address``). The output is cached under
``$SQUEEZEFPGA_CACHE/liteeth/<key>`` (``fpga.build.corecache``), ``key`` being the SHA-256 of the
YAML text and the liteeth and litex versions.

The core has one UDP port, ``host``, in LiteEth's ``raw`` mode: every datagram comes with its
sender's IPv4 address and ports (``host_source_*``) and goes out with its destination's
(``host_sink_*``: address, ports, length), so the SoC checks who sent a request and answers
there. LiteEth routes a received datagram to the port whose ``host_sink_dst_port`` it is
addressed to: the SoC drives it with the board's ``udp_port``, the port it listens on and the
host's port it answers (the host binds it). ARP (one table entry) and ICMP echo are in the core.
"""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fpga.build import corecache
from fpga.build.corecache import package_version
from fpga.spec.boards import BOARDS, Board, BoardError, EthernetPort, get_board, mac_address
from fpga.spec.errors import UserError, run_cli

#: name of the generated Verilog module
CORE_NAME = "liteeth_core"
#: the core's UDP port (its ``host_sink_*`` / ``host_source_*`` streams)
PORT_NAME = "host"
#: the pip line that installs the generator (pinned in pyproject.toml's dev extra)
PIP_HINT = "pip install liteeth==2024.12 litex==2024.12 migen"
#: packages ``liteeth_gen`` imports: module -> pip package
_NEEDED = {"litex": "litex", "liteeth": "liteeth", "migen": "migen", "yaml": "pyyaml"}
#: the stream fields of a raw UDP port, each way (``host_sink_*`` into the core, to send;
#: ``host_source_*`` out of it, received), and their widths
STREAM_FIELDS = {
    "valid": 1, "ready": 1, "last": 1, "last_be": 1, "data": 8,
    "ip_address": 32, "src_port": 16, "dst_port": 16, "length": 16,
}  # fmt: skip
#: part prefix -> (vendor, toolchain) of the platform ``liteeth_gen`` builds the core for
_VENDORS = {"xc7": ("xilinx", "vivado"), "LFE5": ("lattice", "trellis")}


class LiteEthError(UserError):
    """The LiteEth core could not be generated (the message says why and how to fix it)."""


class LiteEthMissing(LiteEthError):
    """liteeth/litex (or a package ``liteeth_gen`` imports) is not installed."""


@dataclass(frozen=True)
class EthernetCore:
    """A generated (cached) UDP core: its Verilog, every top-level port (name -> (direction,
    width)), the address it answers at, its cache key and where it came from."""

    board: str
    verilog: Path
    ports: dict
    ip_address: str
    mac_address: int
    udp_port: int
    key: str
    generation_seconds: float  # 0.0 when it came from the cache
    cached: bool
    module: str = CORE_NAME


def ethernet_of(board: Board | str) -> tuple[Board, EthernetPort]:
    board = get_board(board) if isinstance(board, str) else board
    if board.ethernet is None:
        raise LiteEthError(
            f"board {board.name!r} has no Ethernet in the board registry (fpga.spec.boards); "
            "boards with Ethernet: "
            + ", ".join(name for name, b in BOARDS.items() if b.ethernet is not None)
        )
    return board, board.ethernet


def check_ip(text: str, option: str = "--ip") -> str:
    """``text`` as a board's IPv4 address (dotted quad, a unicast address a LAN can route), else
    a :class:`BoardError` naming ``option``."""
    try:
        address = ipaddress.IPv4Address(text)
    except (ipaddress.AddressValueError, ValueError):
        raise BoardError(
            f"{option} {text!r}: expected an IPv4 address such as 192.168.1.50"
        ) from None
    last = int(address) & 0xFF
    if address.is_multicast or address.is_unspecified or address.is_loopback or last in (0, 255):
        raise BoardError(
            f"{option} {text}: not an address a board can have (multicast, loopback, 0.0.0.0, "
            "or a network/broadcast address ending in .0 or .255)"
        )
    return str(address)


def platform(board: Board) -> tuple[str, str]:
    """(vendor, toolchain) of ``liteeth_gen``'s platform for the board's part."""
    for prefix, names in _VENDORS.items():
        if board.part.startswith(prefix):
            return names
    raise LiteEthError(f"{board.name}: no LiteEth platform for part {board.part}")


def core_config(board: Board | str, ip: str | None = None) -> dict:
    """The ``liteeth_gen`` configuration for ``board`` at ``ip`` (default: the registry's)."""
    board, eth = ethernet_of(board)
    ip = check_ip(ip or eth.ip_address)
    vendor, toolchain = platform(board)
    return {
        "phy": eth.phy,
        "vendor": vendor,
        "toolchain": toolchain,
        "device": board.part,
        "clk_freq": board.clock_mhz * 1e6,
        "core": "udp",
        "mac_address": mac_address(ip),
        "ip_address": ip,
        "data_width": 8,
        "udp_ports": {PORT_NAME: {"mode": "raw", "data_width": 8}},
    }


def core_yaml(board: Board | str, ip: str | None = None) -> str:
    """The YAML text given to ``liteeth_gen`` (JSON, which is YAML; stable key order)."""
    return json.dumps(core_config(board, ip), indent=2, sort_keys=True) + "\n"


def cache_key(yaml_text: str) -> str:
    versions = (f"{name}=={package_version(name)}" for name in ("liteeth", "litex"))
    text = "\n".join((yaml_text, *versions, *ARP_CACHE_FIX)) + "\n"
    return hashlib.sha256(text.encode()).hexdigest()


#: LiteEth 2024.12's ARP cache (``LiteEthARPCache``) reads its table at address 0 in the state
#: that answers a lookup, so a hit in its second entry returns the first entry's MAC address: a
#: board that has answered two hosts sends one host's datagrams to the other's MAC (measured in
#: tests/sim/test_eth_network.py). The fix, applied to the generated Verilog before it is
#: cached: the answering state reads the entry the search found. ``(name, before, after)``.
ARP_CACHE_FIX = (
    "ARP cache: answer with the entry found",
    "        3'd4: begin\n            arp_table_cache_request_ready <= 1'd1;\n",
    "        3'd4: begin\n            arp_table_cache_mem_rd_port_adr <= "
    "arp_table_cache_search_count;\n            arp_table_cache_request_ready <= 1'd1;\n",
)


def apply_fixes(verilog: str) -> str:
    """The generated core with :data:`ARP_CACHE_FIX` applied; :class:`LiteEthError` when the
    text it fixes is not there exactly once (another LiteEth: check whether it still needs it)."""
    name, before, after = ARP_CACHE_FIX
    if verilog.count(before) != 1:
        raise LiteEthError(
            f"the generated LiteEth core (liteeth {package_version('liteeth')}) does not have the "
            f"code fpga.build.liteeth's fix '{name}' changes: see ARP_CACHE_FIX"
        )
    return verilog.replace(before, after)


def check_installed() -> None:
    """Raise :class:`LiteEthMissing` naming the first package ``liteeth_gen`` lacks."""
    for module, package in _NEEDED.items():
        if importlib.util.find_spec(module) is None:
            raise LiteEthMissing(
                f"generating the LiteEth core needs the pip package {package!r}, which is not "
                f"installed: `{PIP_HINT}` (or `make setup`, which installs the dev extra)"
            )


def check_contract(ports: dict) -> None:
    """The generated core has the MII pins, the clock and reset, and the raw UDP port's two
    streams with every field at its width; else :class:`LiteEthError` naming what differs."""
    expected = {"sys_clock": ("input", 1), "sys_reset": ("input", 1)}
    expected.update({f"mii_{n}": ("input", 1) for n in ("clocks_tx", "clocks_rx", "rx_dv")})
    expected.update({"mii_rx_data": ("input", 4), "mii_tx_data": ("output", 4)})
    expected.update({"mii_tx_en": ("output", 1), "mii_rst_n": ("output", 1)})
    for field, width in STREAM_FIELDS.items():
        into, out = ("output", "input") if field == "ready" else ("input", "output")
        expected[f"{PORT_NAME}_sink_{field}"] = (into, width)
        expected[f"{PORT_NAME}_source_{field}"] = (out, width)
    for name, want in expected.items():
        if ports.get(name) != want:
            raise LiteEthError(
                f"the generated LiteEth core's port {name} is {ports.get(name, 'missing')}, "
                f"expected {want} (liteeth {package_version('liteeth')})"
            )


def generate(board: Board | str, ip: str | None = None) -> EthernetCore:
    """Generate (or reuse from the cache) the LiteEth UDP core for ``board`` at ``ip`` (about a
    second; nothing vendor-specific runs)."""
    board, eth = ethernet_of(board)
    yaml_text = core_yaml(board, ip)
    config = json.loads(yaml_text)
    key = cache_key(yaml_text)
    target = corecache.cache_root("liteeth") / key
    manifest = target / "manifest.json"
    seconds, cached = 0.0, True
    if not manifest.exists():
        check_installed()
        cached = False
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f".{key[:12]}-", dir=target.parent) as work:
            work = Path(work)
            generated = corecache.run_generator(
                "liteeth", yaml_text, work, CORE_NAME, error=LiteEthError
            )
            ports = corecache.parse_ports(generated.read_text(), CORE_NAME, LiteEthError)
            check_contract(ports)
            seconds = time.monotonic() - started
            staging = work / "entry"
            staging.mkdir()
            verilog = apply_fixes(generated.read_text())
            (staging / f"{CORE_NAME}.v").write_text(verilog)
            xdc = f"{CORE_NAME}.xdc"
            (staging / xdc).write_bytes((generated.parent / xdc).read_bytes())
            (staging / "core.yml").write_text(yaml_text)
            (staging / "liteeth_gen.log").write_text((work / "liteeth_gen.log").read_text())
            info = {
                "board": board.name,
                "liteeth": package_version("liteeth"),
                "ports": ports,
                "generation_seconds": round(seconds, 3),
            }
            (staging / "manifest.json").write_text(json.dumps(info, indent=2) + "\n")
            corecache.publish(staging, target)
    info = json.loads(manifest.read_text())
    return EthernetCore(
        board=board.name,
        verilog=target / f"{CORE_NAME}.v",
        ports={name: tuple(value) for name, value in info["ports"].items()},
        ip_address=config["ip_address"],
        mac_address=config["mac_address"],
        udp_port=eth.udp_port,
        key=key,
        generation_seconds=seconds,
        cached=cached,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m fpga.build.liteeth --board arty_a7 [--ip A.B.C.D] [--yaml]``: generate the
    core (or print its YAML) and print where it is and the address it answers at."""
    from fpga.spec.cli import ArgumentParser

    prog = "python -m fpga.build.liteeth"
    parser = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="arty_a7")
    parser.add_argument("--ip", help="the board's IPv4 address (default: the board registry's)")
    parser.add_argument("--yaml", action="store_true", help="print the YAML only")
    args = parser.parse_args(argv)

    def run() -> int:
        if args.yaml:
            print(core_yaml(args.board, args.ip), end="")
            return 0
        core = generate(args.board, args.ip)
        mac = ":".join(f"{b:02x}" for b in core.mac_address.to_bytes(6, "big"))
        print(f"{core.verilog}\n{core.ip_address} udp {core.udp_port}, MAC {mac}")
        print(f"{'cached' if core.cached else f'generated in {core.generation_seconds:.1f} s'}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
