"""Board registry: part, capacity, clock, link, toolchain and the accelerator config that fits."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from fpga.spec.config import ARTY35_CONFIG, DEFAULT_CONFIG, WIDE_CONFIG, AcceleratorConfig
from fpga.spec.errors import UserError


class BoardError(UserError, ValueError):
    """Unknown board name (the message lists the known ones)."""


@dataclass(frozen=True)
class DramPart:
    """The board's external memory, as LiteDRAM's generator needs it (``fpga.build.litedram``)."""

    module: str  # LiteDRAM module class (litedram.modules), e.g. "MT41K128M16"
    memtype: str  # "SDR" / "DDR3"
    phy: str  # LiteDRAM PHY class (litedram.phy), e.g. "A7DDRPHY"
    chips: int  # DRAM chips on the board
    data_width: int  # DRAM data bus in bits, all chips together (16 = two byte lanes)
    size_bytes: int
    controller_clock_mhz: float  # LiteDRAM's sys clock = the native user port's clock


@dataclass(frozen=True)
class EthernetPort:
    """The board's Ethernet PHY and the UDP endpoint its SoC serves, as LiteEth's generator needs
    them (``fpga.build.liteeth``). ``ip_address``: the board's default address
    (``fpga.build --ip`` gives another; the MAC address follows it, :func:`mac_address`);
    ``udp_port``: the port the board listens on and the host's port it answers."""

    phy: str  # LiteEth PHY class (liteeth.phy), e.g. "LiteEthPHYMII"
    chip: str  # the PHY chip on the board, e.g. "TI DP83848"
    rate_mbps: int  # the line rate
    ip_address: str
    udp_port: int


#: LiteX's MAC prefix (its targets' default 10:e2:d5:00:00:00), the low 24 bits from the address
MAC_PREFIX = 0x10E2D5000000


def mac_address(ip_address: str) -> int:
    """The MAC address of a board at ``ip_address`` (dotted quad): :data:`MAC_PREFIX` with the
    address's last three bytes, so boards on one network at different addresses differ."""
    low = int.from_bytes(bytes(int(part) for part in ip_address.split(".")[1:]), "big")
    return MAC_PREFIX | low


#: the 10/100 Ethernet on both Arty A7 variants: a DP83848 on MII, its 25 MHz reference clock
#: driven by the FPGA (``eth_ref_clk``, pin G18)
_ARTY_ETHERNET = EthernetPort("LiteEthPHYMII", "TI DP83848", 100, "192.168.1.50", 2000)


#: the ULX3S's fabric clock: the ECP5 PLL's output from the 25 MHz oscillator (hw.board.pll), below
#: the resident SoC's measured nextpnr Fmax (docs/build.md)
_ULX3S_MHZ = 40.0
#: the ULX3S engine's own clock (a third output of the same PLL), below the engine's measured
#: nextpnr Fmax in the resident SoC (docs/build.md: 116.0 MHz placed for 100, once the block
#: RAMs' output registers capture the buffers' reads; the PLL makes 80 and 100 exactly beside
#: the 40 MHz fabric clock, nothing between)
_ULX3S_ENGINE_MHZ = 100.0

#: one x16 MT41K128M16 DDR3L chip (256 MiB) on both Arty A7 variants
_ARTY_DDR3 = DramPart("MT41K128M16", "DDR3", "A7DDRPHY", 1, 16, 256 << 20, 100.0)


#: The Arty DDR3 core's init CPU (``cpu`` and ``cpu_variant`` of its ``litedram_gen`` YAML,
#: ``fpga.build.litedram``): SERV, the bit-serial RV32I, runs the same LiteX BIOS DDR3 init,
#: write/read leveling and memtest from its ROM as a VexRiscv does, slower (it only runs at
#: power-on), in 0.85 k fewer LUTs and 1 RAMB36 fewer than the minimal VexRiscv (2.1 k and
#: 6.5 fewer than the standard one, whose multiplier also took 4 DSP48E1): the lever that
#: brings the resident 35T under 85 % of its LUTs (Yosys fit, docs/build.md "35T fit")
INIT_CPU = "serv"
INIT_CPU_VARIANT = "standard"
#: DSP48E1s of the init CPU (SERV has no multiplier)
INIT_CPU_DSPS = 0


def _check_mhz(mhz: float, what: str) -> None:
    if not (math.isfinite(mhz) and 1.0 <= mhz <= 400.0):
        raise BoardError(f"{what} {mhz!r} MHz: expected a number of MHz in 1..400")
    if round(mhz * 1e6) / 1e6 != mhz:  # IDENTIFY and the UART's bit timer count whole Hz
        raise BoardError(f"{what} {mhz!r} MHz: give a whole number of Hz (at most 6 decimals)")


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    part: str
    platform: str  # amaranth_boards module:class
    capacity: dict  # lut, ff, dsp, bram36 (RAMB36 or equivalent)
    clock_mhz: float  # the fabric clock the SoC runs at (a PLL output, not the oscillator)
    link: str
    baud: int  # UART bit rate the SoC is built for and the host opens the port at (need not
    # divide the clock: hw.soc.uart's bit timer is fractional); the USB-UART chip's top rate
    toolchain: str
    config: AcceleratorConfig
    memory: DramPart | None = None  # external DRAM (resident mode); None: host-streamed only
    #: the engine's own clock (its ``engine`` clock domain, a PLL output beside the fabric
    #: clock), or None: the engine runs on the fabric clock
    engine_clock_mhz: float | None = None
    # the SoC ``fpga.build.flow`` builds unless told: "resident" (needs ``memory``) or "streamed"
    default_mode: str = "resident"
    #: the config that spends the part's DSPs (the PEs beyond them in fabric) where it is not
    #: ``config`` yet, because its build does not meet the board's clocks (docs/build.md);
    #: None: ``config`` is that config
    max_config: AcceleratorConfig | None = None
    #: the Ethernet PHY and UDP endpoint (``fpga.build.liteeth``), or None: no Ethernet
    ethernet: EthernetPort | None = None

    @property
    def spending_config(self) -> AcceleratorConfig:
        """The config that spends the part's DSPs: ``max_config``, else ``config``."""
        return self.max_config or self.config

    def engine_dsps(self) -> int:
        """Hardware multipliers the engine may take: the part's, less the Arty DDR3 core's
        LiteDRAM init CPU's (:data:`INIT_CPU_DSPS`, 0 for SERV) when this board is built with it
        (resident). The engine spends them on its
        requantizers and ADD, then on PEs; the PEs beyond them multiply in fabric
        (``fpga.spec.layout.fabric_pes``)."""
        cpu = self.memory is not None and self.memory.phy == "A7DDRPHY"
        return self.capacity["dsp"] - (INIT_CPU_DSPS if cpu else 0)

    def with_clock(self, mhz: float) -> Board:
        """This board with its fabric clock at ``mhz``: the SoC runs in the DRAM controller's
        user clock, so the controller's clock moves with it (LiteDRAM derives its timings)."""
        _check_mhz(mhz, "clock")
        memory = self.memory and dataclasses.replace(self.memory, controller_clock_mhz=mhz)
        return dataclasses.replace(self, clock_mhz=mhz, memory=memory)

    def with_engine_clock(self, mhz: float) -> Board:
        """This board with the engine's own clock at ``mhz`` (only where the board has one)."""
        _check_mhz(mhz, "engine clock")
        if self.engine_clock_mhz is None:
            raise BoardError(
                f"board {self.name!r} has no engine clock of its own: its engine runs on the "
                "fabric clock (--clock-mhz)"
            )
        return dataclasses.replace(self, engine_clock_mhz=mhz)

    def in_mode(self, mode: str | None) -> Board:
        """This board as built in ``mode`` (None: its ``default_mode``): "streamed" drops the
        DRAM (the host sends every activation), "resident" needs it."""
        mode = mode or (self.default_mode if self.memory is not None else "streamed")
        if mode not in ("resident", "streamed"):
            raise BoardError(f"unknown mode {mode!r}; known modes: resident, streamed")
        if mode == "streamed":
            return dataclasses.replace(self, memory=None)
        if self.memory is None:
            raise BoardError(f"board {self.name!r} has no DRAM: it builds the streamed SoC only")
        return self


BOARDS = {
    b.name: b
    for b in (
        Board(
            "arty_a7",
            "Digilent Arty A7-35T",
            "xc7a35ticsg324-1L",
            "amaranth_boards.arty_a7:ArtyA7_35Platform",
            {"lut": 20800, "ff": 41600, "dsp": 90, "bram36": 50},
            100.0,
            "uart 12 Mbaud (FT2232H)",
            12_000_000,
            "vivado",
            # 8 x 8 with a 16 KiB output buffer and no Huffman decoder: the resident SoC, with
            # the DDR3 core and its SERV init CPU, fits the 35T (Yosys fit, docs/build.md "35T fit")
            ARTY35_CONFIG,
            _ARTY_DDR3,
            ethernet=_ARTY_ETHERNET,
        ),
        Board(
            "arty_a7_100",
            "Digilent Arty A7-100T",
            "xc7a100ticsg324-1L",
            "amaranth_boards.arty_a7:ArtyA7_100Platform",
            {"lut": 63400, "ff": 126800, "dsp": 240, "bram36": 135},
            100.0,
            "uart 12 Mbaud (FT2232H)",
            12_000_000,
            "vivado",
            # 16 x 16: 304 multipliers, of which the 236 DSP48E1 the init CPU leaves take the
            # requantizers', the ADD's and 188 PEs'; 68 PEs multiply in fabric (docs/build.md)
            WIDE_CONFIG,
            _ARTY_DDR3,
            ethernet=_ARTY_ETHERNET,
        ),
        Board(
            "ulx3s",
            "Radiona ULX3S ECP5-85F",
            "LFE5U-85F-6BG381C",
            "amaranth_boards.ulx3s:ULX3S_85F_Platform",
            {"lut": 83640, "ff": 83640, "dsp": 156, "bram36": 104},
            _ULX3S_MHZ,
            "uart 3 Mbaud (FT231X)",
            3_000_000,
            "yosys+nextpnr-ecp5",
            DEFAULT_CONFIG,
            # one x16 MT48LC16M16 SDR SDRAM (32 MiB), its controller in the fabric clock
            DramPart("MT48LC16M16", "SDR", "GENSDRPHY", 1, 16, 32 << 20, _ULX3S_MHZ),
            engine_clock_mhz=_ULX3S_ENGINE_MHZ,
            # 16 x 16 (`--config wide`): the 156 MULT18X18D take the requantizers', the ADD's and
            # 108 PEs', 148 PEs multiply in fabric; its SoC fits (75 % of the LUT4s) but its
            # engine domain routed at 93.9 MHz against the 100 MHz engine clock (docs/build.md)
            max_config=WIDE_CONFIG,
        ),
    )
}


#: the board the host assumes (its UART baud, its DRAM) when none is named
DEFAULT_BOARD = "arty_a7"


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise BoardError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name]
