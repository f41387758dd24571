"""One configuration object for the accelerator; every other size is derived from it.

Like VTA's ``hw_spec`` / Gemmini's config: the array shape, data widths and buffer capacities are
chosen here, everything else (address widths, word widths, tile limits) is a derived property,
and :meth:`AcceleratorConfig.check` explains which constraint failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from fpga.spec.errors import UserError

#: how conv weights travel to the device: codebook-index bytes, or canonical Huffman streams
#: that the on-chip decoder (hw.soc.huffman) turns into index bytes
WEIGHTS_MODES = ("indices", "huffman")
#: where the model lives during inference: in the board's DRAM, the device running the program
#: (resident; the default on a device with DRAM), or on the host, every tile over the link
RESIDENCY_MODES = ("resident", "streamed")


class ConfigError(UserError, ValueError):
    """An accelerator configuration that cannot be built; the message names the constraint."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class AcceleratorConfig:
    """Sizes of the conv engine.

    ``rows`` is the number of input-channel lanes and ``cols`` the number of output-channel lanes
    of the MAC array: ``rows * cols`` int8 x int8 multipliers (one DSP48E1 each on Xilinx).
    Buffer sizes are in bytes (activations are int8, one byte each).
    """

    rows: int = 8
    cols: int = 8
    act_bits: int = 8
    weight_bits: int = 8
    acc_bits: int = 32
    index_bits_max: int = 8  # widest codebook index the weight buffer stores (4/6/8 supported)
    act_in_bytes: int = 32 * 1024  # input activation tile buffer (two operands for bypass add)
    act_out_bytes: int = 32 * 1024  # output activation tile buffer
    weight_bytes: int = 32 * 1024  # weight buffer (int8, decoded from codebook indices)
    max_out_channels: int = 1024  # per-channel bias/requant parameter entries
    clock_mhz: float = 100.0
    #: the engine's own clock domain's clock; None: the engine runs on ``clock_mhz``
    engine_clock_mhz: float | None = None
    max_payload: int = 1024  # link frame payload bytes (the device buffers one frame)
    #: the SoC decodes Huffman-coded weights on chip (``hw.soc.huffman``); without it (a part
    #: whose LUTs are spent: the A7-35T) the device takes index weights only
    huffman_decoder: bool = True

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first violated constraint."""
        _require(self.rows >= 1 and self.cols >= 1, "rows and cols must be >= 1")
        _require(
            self.rows == self.cols,
            "rows must equal cols: pooling/add move whole channel vectors from the input "
            "buffer's words (rows lanes) to the output buffer's words (cols lanes)",
        )
        _require(self.rows & (self.rows - 1) == 0, "rows/cols must be a power of two")
        _require(self.act_bits == 8 and self.weight_bits == 8, "the numerics are int8 (decided)")
        _require(self.acc_bits == 32, "accumulators are int32 (decided)")
        _require(self.index_bits_max in (4, 6, 8), "index_bits_max must be 4, 6 or 8")
        for name in ("act_in_bytes", "act_out_bytes", "weight_bytes"):
            value = getattr(self, name)
            _require(value > 0 and value & (value - 1) == 0, f"{name} must be a power of two")
        _require(
            self.act_in_bytes % self.rows == 0,
            "act_in_bytes must hold whole channel vectors (multiple of rows)",
        )
        _require(
            self.weight_bytes * 8 >= self.rows * self.cols * self.index_bits_max * 9,
            "weight buffer must hold at least one 3x3 block of rows x cols indices",
        )
        _require(self.max_out_channels >= 1000, "conv10 has 1000 output channels")
        _require(1 <= self.max_payload <= 65535, "max_payload must fit the 16-bit frame length")

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def pes(self) -> int:
        """Number of multiply-accumulate units."""
        return self.rows * self.cols

    @property
    def act_in_addr_bits(self) -> int:
        return int(math.log2(self.act_in_bytes))

    @property
    def act_out_addr_bits(self) -> int:
        return int(math.log2(self.act_out_bytes))

    @property
    def weight_addr_bits(self) -> int:
        return int(math.log2(self.weight_bytes))

    @property
    def product_bits(self) -> int:
        return self.act_bits + self.weight_bits

    @property
    def act_in_words(self) -> int:
        """Input buffer depth in channel vectors (``rows`` bytes each)."""
        return self.act_in_bytes // self.rows

    @property
    def act_out_words(self) -> int:
        """Output buffer depth in channel vectors (``cols`` bytes each)."""
        return self.act_out_bytes // self.cols

    @property
    def weight_words(self) -> int:
        """Weight buffer depth in ``rows x cols`` index words."""
        return self.weight_bytes // self.pes

    @property
    def param_words(self) -> int:
        """Parameter memory depth in output-channel blocks (``cols`` channels each)."""
        return -(-self.max_out_channels // self.cols)

    @property
    def act_in_word_bits(self) -> int:
        return max(1, (self.act_in_words - 1).bit_length())

    @property
    def act_out_word_bits(self) -> int:
        return max(1, (self.act_out_words - 1).bit_length())

    @property
    def weight_word_bits(self) -> int:
        return max(1, (self.weight_words - 1).bit_length())

    @property
    def param_word_bits(self) -> int:
        return max(1, (self.param_words - 1).bit_length())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Short stable hash of the configuration (sent by IDENTIFY, keys build caches)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def compute_mhz(self) -> float:
        """The clock the engine computes at (its cycles are counted in it)."""
        return self.engine_clock_mhz or self.clock_mhz

    def replace(self, **changes) -> AcceleratorConfig:
        return dataclasses.replace(self, **changes)


#: Fits an Arty A7-35T (90 DSP48E1, 50 RAMB36) with margin: 64 DSPs for the array, the
#: buffers take ~96 KiB of the 225 KiB block RAM.
DEFAULT_CONFIG = AcceleratorConfig()

#: The Arty A7-35T's resident config: the default 8 x 8 with a 16 KiB output buffer (4 RAMB36
#: instead of 8), so that the resident SoC (with the DDR3 core and its init CPU) fits the part's 50
#: RAMB36 with room (docs/build.md "35T fit"). The input buffer keeps 32 KiB (v1.0@227's conv1
#: needs it: one output row's inputs), and the weight buffer too (its 15 diagonal banks take as
#: many block RAMs at 256 words as at 512). Cost in the cycle model (sequential resident
#: device cycles, ``fpga.compiler.traffic.sequential_cycles``): v1.0@227 +0.43 %, v1.1@224
#: +0.76 %, from more output tiles' stores and reloads.
#: It also leaves out the on-chip Huffman decoder (1.36 k LUTs by the Yosys fit), the lever
#: that brings the SoC under 85 % of the part's LUTs: the 35T takes index weights (in resident
#: mode they cost the same device cycles or fewer; Huffman only shrinks the one model load).
#: Its frame payload is 1016 bytes, not 1024: the link's frame buffer (``frame_bytes``, the payload
#: and a block of slack) is then 1024 bytes, 128 of its 8-byte words, which the fabric's 64-deep
#: LUT RAMs hold in two banks instead of three (the room the Ethernet core needs, issue 33).
ARTY35_CONFIG = AcceleratorConfig(act_out_bytes=16 * 1024, huffman_decoder=False, max_payload=1016)

#: The smallest useful engine (2x2): quick builds and simulations (CI's ULX3S bitstream, link
#: tests); SqueezeNet at full size does not tile on it.
SMALL_CONFIG = AcceleratorConfig(
    rows=2,
    cols=2,
    act_in_bytes=8 * 1024,
    act_out_bytes=8 * 1024,
    weight_bytes=2048,
    clock_mhz=12.0,
)

#: 16 x 16 PEs with the default config's buffers (the same bytes in wider words): for the
#: A7-100T (240 DSP48E1) and the ECP5-85F (156 MULT18X18D), whose engine spends every DSP and
#: builds the PEs beyond them in fabric (``fpga.spec.layout.fabric_pes``). SqueezeNet's channel
#: counts are multiples of 16, so it tiles as on 8 x 8 (docs/build.md "Configs per board").
WIDE_CONFIG = AcceleratorConfig(rows=16, cols=16)

#: For parts with >= 256 multipliers and ~1 MiB of block RAM (e.g. xc7a200t: 740 DSP48E1).
LARGE_CONFIG = AcceleratorConfig(
    rows=16, cols=16, act_in_bytes=128 * 1024, act_out_bytes=128 * 1024, weight_bytes=128 * 1024
)
