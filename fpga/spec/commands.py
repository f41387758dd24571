"""The resident sequencer's command record: opcodes, flags, slots, the record's bytes (issue 12).

In resident mode the model lives in the board's DRAM and the device walks a command list
without the host: per image the host writes the input, starts the program, reads the logits.
This module is the one definition of that list's words, shared by the compiler that writes it
(:mod:`fpga.compiler.resident`), the checker that refuses a bad one (:mod:`fpga.compiler.check`),
the reference executor (:mod:`fpga.compiler.reference`), the host and the gateware
(``hw.soc.sequencer`` derives its ``data.StructLayout`` from :func:`command_fields` and its
flag check from :data:`FLAGS`).

**Command record** (:data:`COMMAND_RECORD`): 32 bytes, little-endian.

============== ======================================================================
``opcode``     :class:`Opcode`: LOAD, STORE, RUN, END, WAIT (0 is invalid: zeroed DRAM is an error,
               never a silent no-op)
``space``      :class:`fpga.spec.layout.BufferSpace` of a LOAD/STORE
``flags``      :class:`Flag`: WINDOWS (a LOAD whose rows overlap in DRAM reads their span once),
               INPUT (a LOAD's ``dram_addr`` is relative to the run's input slot), OUTPUT (a
               STORE's ``dram_addr`` is relative to the run's output slot), SPLIT and HIGH_*
               (a RUN's halves, below); :data:`FLAGS` says which opcode may carry which
``length``     bytes per row (a row is one contiguous DRAM range)
``dram_addr``  byte address of row 0 in DRAM
``buffer_offset`` byte offset of row 0 in the buffer space
``count``      rows; row r moves ``length`` bytes between ``dram_addr + r * dram_stride`` and
               ``buffer_offset + r * buffer_stride`` (a strided 2-D transfer: a channel-group
               slice of an HWC tensor, or the im2col windows of conv1)
============== ======================================================================

LOAD copies DRAM -> buffer (through the same byte-wide write port the link uses, so
``HUFFMAN_TABLE``/``HUFFMAN_STREAM`` go through the on-chip decoder like link writes), STORE
copies buffer (ACT_OUT, the readable space) -> DRAM, RUN starts the engine on the descriptor
already loaded into DESCRIPTOR, WAIT waits for the run under way, END waits for it and stops and
reports cycles. A LOAD/STORE with ``count == 0`` or ``length == 0`` moves nothing.

**Double buffering** (flag SPLIT): a RUN without it waits for its run to end, as before. A SPLIT
RUN starts the engine and goes on at once: it owns only one half of each of ACT_IN, ACT_OUT,
WEIGHT and PARAMS (:func:`run_claims`; the HIGH_* flags pick the halves, the engine maps its own
accesses there with :func:`run_address`), so the next tile's LOADs and the last tile's STOREs
use the other halves while it computes. A RUN while a run is under way first waits for it (one
engine). A LOAD or STORE that touches a byte the running run owns is refused (the checker before
the program runs, the engine while it runs): the program puts a WAIT before it.

**Relocation** (:func:`relocation`): the program's input LOADs (flag INPUT) and output STOREs
(flag OUTPUT) carry addresses relative to a slot; each run gets the absolute slot addresses
(RUN_RESIDENT's ``input_addr``/``output_addr``), so the host can write image n+1 into one input
slot while the device runs image n from the other. Every other address is absolute.
"""

from __future__ import annotations

import enum

import numpy as np

from fpga.spec.config import AcceleratorConfig
from fpga.spec.errors import UserError
from fpga.spec.layout import (
    CODEBOOK_ENTRIES,
    DESCRIPTOR_BYTES,
    HUFFMAN_HEADER_BYTES,
    HUFFMAN_TABLE_BYTES,
    PARAM_BYTES,
    BufferSpace,
    tile_capacity,
)
from fpga.spec.protocol import frame_bytes


class Opcode(enum.IntEnum):
    LOAD = 1
    STORE = 2
    RUN = 3
    END = 4
    #: wait until the engine has finished the run under way (none: go on at once)
    WAIT = 5


class Flag(enum.IntFlag):
    #: LOAD: the rows overlap in DRAM (conv1's im2col windows); read their whole span
    #: ``(count - 1) * dram_stride + length`` once (at most :data:`WINDOW_BYTES`) and cut the
    #: rows from it on chip. The bytes written are the same as without the flag.
    WINDOWS = 1
    #: LOAD: ``dram_addr`` is relative to the run's input slot (RUN_RESIDENT's ``input_addr``)
    INPUT = 2
    #: STORE: ``dram_addr`` is relative to the run's output slot (RUN_RESIDENT's ``output_addr``)
    OUTPUT = 4
    #: RUN: the run owns one half of each of :data:`HALF_SPACES` (the HIGH_* flags pick which),
    #: not every buffer: LOADs and STOREs may use the other halves while it computes (double
    #: buffering, :func:`run_claims`)
    SPLIT = 8
    #: RUN with SPLIT: the run's half of ACT_IN / ACT_OUT / WEIGHT / PARAMS is the upper one
    HIGH_ACT_IN = 16
    HIGH_ACT_OUT = 32
    HIGH_WEIGHT = 64
    HIGH_PARAMS = 128
    #: STORE: posted, the commands after it go on while the sequencer's store mover moves its
    #: rows (a LOAD that reads its bytes back, a RUN and END wait for it). The bytes stored are
    #: the same as without the flag. The compiler posts a STORE only when the commands after it
    #: hardly read DRAM (``fpga.compiler.resident.POST_READ_SHARE``): DDR3 pays a turnaround
    #: for every switch between reads and writes, so a STORE under full-rate LOADs made both
    #: slower
    POSTED = 256


#: input and output slots in the map: the host writes image n+1 into one input slot while the

#: the flags each opcode may carry, the one rule behind both refusals: the checker
#: (:func:`fpga.compiler.check.check_commands`) refuses a program with any other flag, the
#: sequencer (``hw.soc.sequencer``) stops with ``SequencerError.FLAGS`` on one
FLAGS = {
    Opcode.LOAD: Flag.WINDOWS | Flag.INPUT,
    Opcode.STORE: Flag.OUTPUT | Flag.POSTED,
    Opcode.RUN: Flag.SPLIT
    | Flag.HIGH_ACT_IN
    | Flag.HIGH_ACT_OUT
    | Flag.HIGH_WEIGHT
    | Flag.HIGH_PARAMS,
    Opcode.END: Flag(0),
    Opcode.WAIT: Flag(0),
}

#: device runs image n from the other, and reads image n's logits from one output slot while
#: image n+1's run writes the other
SLOTS = 2


class HostSpace(enum.IntEnum):
    """Spaces that only the link's own transfers use (``hw.link`` hands the sequencer one LOAD or
    STORE per MEM_READ/MEM_WRITE/MODEL_COMMIT); a program's command naming one is refused. Their
    codes follow the engine's :class:`fpga.layout.BufferSpace` codes."""

    LINK = 8  # the link's frame buffer: STORE from it (MEM_WRITE), LOAD into it (MEM_READ)
    CHECKSUM = 9  # MODEL_COMMIT: a LOAD into it feeds the bytes through a CRC-32


assert min(HostSpace) == max(BufferSpace) + 1

#: the spaces a STORE reads a block (``fpga.spec.layout.transfer_bytes``) a cycle from, not a
#: byte: the engine's output buffer and the link's frame buffer (MEM_WRITE's payload)
WIDE_STORES = (BufferSpace.ACT_OUT, HostSpace.LINK)


#: the largest span of a WINDOWS LOAD (the sequencer's on-chip window buffer): one padded image
#: row, so images up to ~1000 pixels wide
WINDOW_BYTES = 1024


#: one command, little-endian, in byte order: (field, numpy type). 32 bytes.
COMMAND_RECORD = (
    ("opcode", "u1"),
    ("space", "u1"),
    ("flags", "<u2"),
    ("length", "<u4"),
    ("dram_addr", "<u4"),
    ("buffer_offset", "<u4"),
    ("count", "<u4"),
    ("dram_stride", "<u4"),
    ("buffer_stride", "<u4"),
    ("reserved2", "<u4"),
)
COMMAND_DTYPE = np.dtype(list(COMMAND_RECORD))
COMMAND_BYTES = COMMAND_DTYPE.itemsize
#: the largest DRAM the map addresses (byte addresses are 32-bit in the command record)
MAX_DRAM_BYTES = 1 << 32


class ResidentError(UserError, ValueError):
    """A program that does not fit the DRAM (names the region), or a command list the device
    would refuse (names the command)."""


def command_fields() -> list[tuple[str, int]]:
    """The command record as (field, bit width), LSB first (for the gateware's StructLayout)."""
    return [(name, np.dtype(code).itemsize * 8) for name, code in COMMAND_RECORD]


def command(opcode: Opcode, space: int = 0, **fields) -> np.void:
    """One record; unnamed fields are 0 and ``count`` defaults to 1 for LOAD/STORE."""
    rec = np.zeros((), dtype=COMMAND_DTYPE)
    rec["opcode"] = int(opcode)
    rec["space"] = int(space)
    if opcode in (Opcode.LOAD, Opcode.STORE):
        rec["count"] = 1
    for name, value in fields.items():
        rec[name] = value
    return rec


def pack_commands(commands) -> bytes:
    """A sequence of records (from :func:`command`) or a structured array -> bytes."""
    return np.asarray(commands, dtype=COMMAND_DTYPE).tobytes()


def unpack_commands(blob: bytes) -> np.ndarray:
    return np.frombuffer(bytes(blob[: len(blob) // COMMAND_BYTES * COMMAND_BYTES]), COMMAND_DTYPE)


def buffer_sizes(config: AcceleratorConfig) -> dict[BufferSpace, int]:
    """Bytes a LOAD may address per buffer space (HUFFMAN_STREAM: header + 16 bits/symbol)."""
    return {
        BufferSpace.DESCRIPTOR: DESCRIPTOR_BYTES,
        BufferSpace.ACT_IN: config.act_in_bytes,
        BufferSpace.ACT_OUT: config.act_out_bytes,
        BufferSpace.WEIGHT: config.weight_bytes,
        BufferSpace.CODEBOOK: CODEBOOK_ENTRIES,
        BufferSpace.PARAMS: config.max_out_channels * PARAM_BYTES,
        BufferSpace.HUFFMAN_TABLE: HUFFMAN_TABLE_BYTES,
        BufferSpace.HUFFMAN_STREAM: HUFFMAN_HEADER_BYTES + 2 * config.weight_bytes,
    }


#: bits of a space code on a buffer port: the engine's BufferSpace codes and the HostSpace ones
SPACE_BITS = max(HostSpace).bit_length()


def port_address_bits(config: AcceleratorConfig) -> int:
    """Bits of a byte address on a buffer port (``hw.engine.ports``): the largest buffer space
    or the link's frame buffer (``HostSpace.LINK``), whichever is larger."""
    return max(buffer_address_bits(config), (frame_bytes(config) - 1).bit_length())


def buffer_address_bits(config: AcceleratorConfig) -> int:
    """Bits of a byte address into the largest buffer space (the link's and the sequencer's
    buffer address ports)."""
    return (max(buffer_sizes(config).values()) - 1).bit_length()


#: the double-buffered spaces and the RUN flag that puts a SPLIT run in their upper half
HALF_SPACES = {
    BufferSpace.ACT_IN: Flag.HIGH_ACT_IN,
    BufferSpace.ACT_OUT: Flag.HIGH_ACT_OUT,
    BufferSpace.WEIGHT: Flag.HIGH_WEIGHT,
    BufferSpace.PARAMS: Flag.HIGH_PARAMS,
}
#: the RUN flags the engine takes with its start (the rest of the record stays in the sequencer)
RUN_FLAGS = FLAGS[Opcode.RUN]
#: bits of the RUN flags on the engine's start port
RUN_FLAG_BITS = int(RUN_FLAGS).bit_length()


def half_bytes(space: BufferSpace, config: AcceleratorConfig) -> int:
    """Bytes of one half of a double-buffered space (``fpga.spec.layout.tile_capacity``; every
    buffer is a power of two bytes, so the half is its top address bit)."""
    size = buffer_sizes(config)[space]
    assert size & (size - 1) == 0, (space, size)
    return tile_capacity(config, split=True)[BufferSpace(space).name.lower()]


def run_address(space: int, offset: int, flags: int, config: AcceleratorConfig) -> int:
    """Where the engine's own access at byte ``offset`` of ``space`` lands during a RUN with
    ``flags``: a SPLIT run with HIGH_<space> has the top address bit flipped (an XOR, so a tile
    laid out from 0 in the lower half runs from the upper half), every other access lands where
    it says. The descriptor's addresses are the same in both halves."""
    if flags & Flag.SPLIT and space in HALF_SPACES and flags & HALF_SPACES[space]:
        return offset ^ half_bytes(BufferSpace(space), config)
    return offset


def run_claims(flags: int, config: AcceleratorConfig) -> dict[int, range]:
    """The byte ranges of each buffer space that a RUN with ``flags`` owns until it ends (the
    one rule behind the checker's and the reference executor's refusals and the engine's
    ENGINE error): a LOAD or STORE touching a claimed byte before a WAIT is a hazard.

    A SPLIT run owns one half of each of :data:`HALF_SPACES` (its engine accesses must stay in
    it: the engine refuses a run whose addresses leave it); any other run owns every space
    whole, as a run always did. DESCRIPTOR is never owned by a SPLIT run: the engine copies it
    when the run starts. CODEBOOK and the Huffman spaces only feed writes into WEIGHT, which
    are checked as WEIGHT writes."""
    sizes = buffer_sizes(config)
    if not flags & Flag.SPLIT:
        return {space: range(size) for space, size in sizes.items()}
    claims = {}
    for space, high in HALF_SPACES.items():
        half = half_bytes(space, config)
        start = half if flags & high else 0
        claims[space] = range(start, start + half)
    return claims


def touches(
    claims: dict[int, range] | None,
    space: int,
    offset: int,
    length: int,
    count: int = 1,
    stride: int = 0,
) -> bool:
    """Whether ``count`` rows of ``length`` bytes of ``space`` at ``offset + r * stride`` touch a
    byte of ``claims`` (:func:`run_claims` of the run under way; None: no run)."""
    claim = (claims or {}).get(int(space))
    if claim is None or length <= 0 or count <= 0:
        return False
    starts = offset + stride * np.arange(count, dtype=np.int64)
    return bool(np.any((starts < claim.stop) & (starts + length > claim.start)))


def dram_span(rec) -> int:
    """The DRAM bytes a LOAD's or STORE's rows lie in, its first row's first to its last row's
    last (what a WINDOWS LOAD reads once); 0 for a command that moves nothing."""
    count, length = int(rec["count"]), int(rec["length"])
    if count == 0 or length == 0:
        return 0
    return (count - 1) * int(rec["dram_stride"]) + length


def relocation(flags: int, input_base: int, output_base: int) -> int:
    """What a command with ``flags`` adds to its ``dram_addr``: the run's input slot (INPUT),
    its output slot (OUTPUT), else 0 (as ``hw.soc.sequencer`` does before anything else)."""
    if flags & Flag.INPUT:
        return input_base
    if flags & Flag.OUTPUT:
        return output_base
    return 0


def check_slot(slot: int) -> int:
    """``slot`` itself, when it is one of the :data:`SLOTS` slots (else ValueError)."""
    if slot not in range(SLOTS):
        raise ValueError(f"slot {slot} is outside range({SLOTS})")
    return slot
