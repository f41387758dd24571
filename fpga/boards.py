"""Board registry: part, capacity, clock, link, toolchain and the accelerator config that fits."""

from __future__ import annotations

from dataclasses import dataclass

from fpga.config import DEFAULT_CONFIG, SMALL_CONFIG, AcceleratorConfig
from fpga.errors import UserError


class BoardError(UserError, ValueError):
    """Unknown board name (the message lists the known ones)."""


@dataclass(frozen=True)
class DramPart:
    """The board's external memory, as LiteDRAM's generator needs it (``fpga.litedram``)."""

    module: str  # LiteDRAM module class (litedram.modules), e.g. "MT41K128M16"
    memtype: str  # "SDR" / "DDR3"
    phy: str  # LiteDRAM PHY class (litedram.phy), e.g. "A7DDRPHY"
    chips: int  # DRAM chips on the board
    data_width: int  # DRAM data bus in bits, all chips together (16 = two byte lanes)
    size_bytes: int
    controller_clock_mhz: float  # LiteDRAM's sys clock = the native user port's clock


#: one x16 MT41K128M16 DDR3L chip (256 MiB) on both Arty A7 variants
_ARTY_DDR3 = DramPart("MT41K128M16", "DDR3", "A7DDRPHY", 1, 16, 256 << 20, 100.0)


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    part: str
    platform: str  # amaranth_boards module:class
    capacity: dict  # lut, ff, dsp, bram36 (RAMB36 or equivalent)
    clock_mhz: float
    link: str
    baud: int  # UART bit rate the SoC is built for and the host opens the port at (need not
    # divide the clock: hw.uart's bit timer is fractional); the USB-UART chip's top rate
    toolchain: str
    config: AcceleratorConfig
    memory: DramPart | None = None  # external DRAM (resident mode); None: host-streamed only


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
            DEFAULT_CONFIG,
            _ARTY_DDR3,
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
            DEFAULT_CONFIG,
            _ARTY_DDR3,
        ),
        Board(
            "ulx3s",
            "Radiona ULX3S ECP5-85F",
            "LFE5U-85F-6BG381C",
            "amaranth_boards.ulx3s:ULX3S_85F_Platform",
            {"lut": 83640, "ff": 83640, "dsp": 156, "bram36": 104},
            25.0,
            "uart 3 Mbaud (FT231X)",
            3_000_000,
            "yosys+nextpnr-ecp5",
            DEFAULT_CONFIG,
            # one x16 MT48LC16M16 SDR SDRAM (32 MiB); its controller runs at 50 MHz
            DramPart("MT48LC16M16", "SDR", "GENSDRPHY", 1, 16, 32 << 20, 50.0),
        ),
        Board(
            "icebreaker",
            "1BitSquared iCEBreaker (iCE40 UP5K)",
            "iCE40UP5K-SG48",
            "amaranth_boards.icebreaker:ICEBreakerPlatform",
            {"lut": 5280, "ff": 5280, "dsp": 8, "bram36": 3},
            12.0,
            "uart 3 Mbaud (FT2232H)",
            3_000_000,
            "yosys+nextpnr-ice40",
            SMALL_CONFIG,
        ),
    )
}


#: the board the host assumes (its UART baud, its DRAM) when none is named
DEFAULT_BOARD = "arty_a7"


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise BoardError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name]
