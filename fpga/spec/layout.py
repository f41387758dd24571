"""Byte layouts of the engine's buffers and its layer descriptor — defined once, here.

The gateware (``hw.engine.engine``), the cocotb benches and the network compiler all import these
functions, so a layout change is one edit. Every buffer is byte-addressed from the outside (one
byte per write cycle); inside, the engine reads whole words.

Buffers (``BufferSpace``):

``DESCRIPTOR``  the :class:`LayerDescriptor` of the next run (32 bytes).
``ACT_IN``      input activations, HWC with channels padded to a multiple of ``rows``:
                byte ``((y * W + x) * G + g) * rows + lane`` holds channel ``g * rows + lane``
                (G = channel groups). A CONV/MAXPOOL tile starts at word ``in_base`` (so two
                convs can read different row ranges of one loaded band); the bypass ADD reads
                its second operand at word ``b_base``.
``ACT_OUT``     output activations in the same layout; a conv writes its channel groups at
                ``out_group_offset`` within ``out_groups`` groups per pixel (concat by
                addressing). AVGPOOL writes int32 little-endian sums, channel c at byte 4c.
``WEIGHT``      codebook indices, one byte each, word ``(block * k*k + ky * k + kx) * G + g``
                of ``rows * cols`` bytes, byte ``lane_in * cols + lane_out``.
``CODEBOOK``    256 int8 values; index i -> weight ``codebook[i]``.
``PARAMS``      per output channel of the tile, 8 bytes: bias int32, multiplier uint16,
                shift uint8, 0; channel ``block * cols + lane_out``.
``HUFFMAN_TABLE`` the on-chip decoder's canonical code table (``hw.soc.huffman``): bytes 0..255
                the symbols in canonical order (by code length, then symbol); then per code
                length l = 1..16, 6 bytes at ``256 + 6 (l - 1)``: first code, code count and
                rank offset (number of symbols with shorter codes), each uint16 LE.
``HUFFMAN_STREAM`` one weight chunk for on-chip decode: an 8-byte header (symbol count uint32,
                destination byte address in WEIGHT uint32; writing byte 7 arms the decoder),
                then from byte 8 the canonical Huffman bitstream of the chunk's WEIGHT bytes,
                MSB first. The decoder writes the symbols into WEIGHT from the destination on.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import astuple, dataclass

import numpy as np

from fpga.spec import huffman
from fpga.spec.config import AcceleratorConfig


class BufferSpace(enum.IntEnum):
    DESCRIPTOR = 0
    ACT_IN = 1
    ACT_OUT = 2
    WEIGHT = 3
    CODEBOOK = 4
    PARAMS = 5
    HUFFMAN_TABLE = 6
    HUFFMAN_STREAM = 7


class Op(enum.IntEnum):
    CONV = 0
    MAXPOOL = 1
    ADD = 2
    AVGPOOL = 3


DESCRIPTOR_BYTES = 32
HUFFMAN_MAX_LENGTH = 16  # == fpga.spec.huffman.MAX_LENGTH (checked in pack_huffman_table)
HUFFMAN_LENGTH_BASE = 256
HUFFMAN_LENGTH_BYTES = 6
HUFFMAN_TABLE_BYTES = HUFFMAN_LENGTH_BASE + HUFFMAN_MAX_LENGTH * HUFFMAN_LENGTH_BYTES
#: a HUFFMAN_STREAM's header: its symbol count and the WEIGHT offset they decode to
HUFFMAN_HEADER = struct.Struct("<II")
HUFFMAN_HEADER_BYTES = HUFFMAN_HEADER.size
#: one output channel's PARAMS record, little-endian, in byte order: (field, numpy type). The
#: gateware derives its ``data.StructLayout`` from the same table (:func:`params_fields`).
PARAMS_RECORD = (("bias", "<i4"), ("multiplier", "<u2"), ("shift", "u1"), ("reserved", "u1"))
PARAM_BYTES = np.dtype(list(PARAMS_RECORD)).itemsize  # per output channel
CODEBOOK_ENTRIES = 256
#: Latencies of the engine's CONV blocks, in cycles. The gateware's blocks export these same
#: numbers as their ``latency`` (hw/engine/parts.py, hw/engine/array.py) and each block's test
# measures
#: it; the engine's pipeline depth below is their sum, paid once per run (not per pixel).
#: address generator issue -> the buffers' read addresses, registered (the generator's loop
#: registers are then not pulled toward the block RAMs they address)
ADDRESS_LATENCY = 1
#: read addresses -> activation / weight buffer data, with the issue's stage-1 token
#: (``hw.engine.addrgen.AddressGenerator.latency`` is ``ADDRESS_LATENCY + BUFFER_LATENCY``)
BUFFER_LATENCY = 1
#: buffer data -> the registered activation vector and int8 weight word that enter the array:
#: the data captured in registers beside the block RAMs (nextpnr times a DP16KD's output at
#: 5.8 ns), then registered again beside the array and the pools
OPERAND_LATENCY = 2
#: a hardware multiplier's registers, operands to product (``hw.engine.array.Multiplier.latency``):
#: input, pipeline and output
MULTIPLIER_LATENCY = 3
#: the rounding and clamp after a shift (``hw.engine.requant.round_shifted``): the clamp's decisions
#: and the rounded value registered, then the select among them
ROUND_LATENCY = 2
#: a right shift by up to ``fpga.spec.golden.MAX_SHIFT`` (``hw.engine.requant.shift_halved``): by
# the
#: shift's multiple of 8, then by the rest
SHIFT_LATENCY = 2
#: ``hw.engine.requant.Requantizer``: its two multipliers, their sum, the shift, the rounding and
#: clamp
REQUANT_LATENCY = MULTIPLIER_LATENCY + 1 + SHIFT_LATENCY + ROUND_LATENCY
#: last tap's sums -> requantized output word (hw.engine.parts.Accumulator): the parameter
#: read, the parameters registered twice (at the RAM, beside the accumulators), the final
#: sum, the requantizer
ACCUMULATOR_LATENCY = 4 + REQUANT_LATENCY
#: the bypass ADD's operand half selected and registered beside its multipliers, then them
ADD_MULTIPLY_LATENCY = 1 + MULTIPLIER_LATENCY
#: Latencies of the engine's pool/add unit (``hw.engine.pool.PoolUnit``), from its stage-1b token.
#: The unit first registers the token (its operand vectors) beside its datapaths: the stage-1b
#: register sits beside the buffers, and the route from there to the running max had been the
#: 8x8 SoC's engine critical path (3.4 ns).
POOL_INPUT_LATENCY = 1
#: the bypass ADD, one half of a vector's lanes from the cycle it is selected in to its lanes
#: in the output word: the multiply, the products registered again (in fabric), their sum, the
#: shift, the rounding and clamp (a whole vector: :func:`add_latency`)
ADD_LATENCY = ADD_MULTIPLY_LATENCY + 2 + SHIFT_LATENCY + ROUND_LATENCY
#: MAXPOOL, a window's last tap pair -> its output word: the input register, the pair's max,
#: the running max, then three registers
MAXPOOL_LATENCY = POOL_INPUT_LATENCY + 5
#: MAXPOOL 3x3/2 issues per window row: each issue reads two taps of the row (ACT_IN's two read
#: ports, columns ``kx`` and ``kx + 1``), so a window takes 3 x 2 issues, not 9
MAXPOOL_ROW_ISSUES = 2
MAXPOOL_WINDOW_ISSUES = 3 * MAXPOOL_ROW_ISSUES
#: AVGPOOL, a channel group's last pixel -> the first of its output words (the input register,
#: the sums' snapshot register); the group's other words follow one per cycle
AVGPOOL_LATENCY = POOL_INPUT_LATENCY + 1
#: ``hw.engine.pool.Writeback``: a CONV result or pool/add write -> the ACT_OUT write port (its
#: enable, address and word registered after the op's select)
WRITEBACK_LATENCY = 1
#: a weight chunk's codebook indices -> its int8 weights at the weight buffer's write port
#: (hw.engine.parts.WeightDecoder; on the write side, so not in the runs' cycles)
WEIGHT_DECODE_LATENCY = 1
#: cycles between ``start`` and the first issue: the per-run address constants (products of
#: descriptor fields) computed in a pipeline of registers, one adder level pair per cycle
#: (``hw.engine.addrgen.AddressGenerator.setup_cycles``)
SETUP_CYCLES = 4
#: the setup cycles after start, the output write's register, the output-buffer write, done
RUN_OVERHEAD = SETUP_CYCLES + WRITEBACK_LATENCY + 2
#: pipeline depth of the non-CONV runs (start -> done beyond the issue cycles); see
# hw/engine/engine.py:
#: the setup cycles, the address register, the buffer read, the operand register, the pool/add
#: unit's latency, the output write's register and done.
#: The issue cycles count an ADD vector's later halves and an AVGPOOL group's output words.
#: (``_TO_OPERANDS``: a run's first issue -> its operands in their registers, stage 1b, plus the
#: setup cycles before that issue.)
_TO_OPERANDS = SETUP_CYCLES + ADDRESS_LATENCY + BUFFER_LATENCY + OPERAND_LATENCY
PIPELINE_LATENCY = {
    Op.MAXPOOL: _TO_OPERANDS + MAXPOOL_LATENCY + WRITEBACK_LATENCY + 1,
    Op.ADD: _TO_OPERANDS + POOL_INPUT_LATENCY + ADD_LATENCY + WRITEBACK_LATENCY + 1,
    Op.AVGPOOL: _TO_OPERANDS + AVGPOOL_LATENCY + WRITEBACK_LATENCY,
}


def array_latency(rows: int, cols: int) -> int:
    """Cycles through the systolic MAC array (``hw.engine.array.MacArray.latency``): the PE's
    multiplier (:data:`MULTIPLIER_LATENCY`), ``rows`` partial-sum registers down a column,
    ``cols - 1`` cycles of skew (activations entering row r are delayed r cycles, column c's
    sums c cycles later are deskewed to the last column's) and the output register at the
    array's edge."""
    return MULTIPLIER_LATENCY + rows + cols


def add_cycles_per_vector(config: AcceleratorConfig) -> int:
    """Cycles an ADD run spends per channel vector: its lanes go through half as many
    multiplier pairs (DSPs: ``rows`` of them) in two cycles, instead of ``2 * rows`` multipliers
    as shift-add trees in fabric (3.1 k LUTs on xc7 for 8 lanes)."""
    return 2 if config.rows >= 2 else 1


def add_latency(config: AcceleratorConfig) -> int:
    """The bypass ADD (``hw.engine.pool.PoolUnit.add_latency``): a vector's token -> its output
    word. The unit's input register, its last half selected ``add_cycles_per_vector - 1`` cycles
    after the first, then :data:`ADD_LATENCY`."""
    return POOL_INPUT_LATENCY + add_cycles_per_vector(config) - 1 + ADD_LATENCY


#: hardware multipliers in one requantizer: its 32 x 16-bit product needs two (a DSP48E1 is
#: 25 x 18, a MULT18X18D 18 x 18)
REQUANT_MULTIPLIERS = 2


def multipliers(config: AcceleratorConfig) -> int:
    """Multipliers the engine has (DSP48E1 on xc7, MULT18X18D on ECP5, but for the PEs beyond
    a part's DSPs: :func:`fabric_pes`): one per PE, :data:`REQUANT_MULTIPLIERS` per column's
    requantizer, and the bypass ADD's multiplier pairs (``rows / add_cycles_per_vector`` of
    them)."""
    add_pairs = config.rows // add_cycles_per_vector(config)
    return config.pes + REQUANT_MULTIPLIERS * config.cols + 2 * add_pairs


def fabric_pes(config: AcceleratorConfig, dsps: int | None) -> int:
    """PEs whose multiplier is built from LUTs and carry chains (``hw.engine.array.fabric_product``)
    on a part whose engine may take ``dsps`` hardware multipliers (None: no limit): the
    requantizers' and the bypass ADD's wide products keep their DSPs, the PEs take what is
    left and the rest of them multiply in fabric. Same results, same cycles: only the
    mapping changes (a PE's fabric multiplier has the DSP's three registers)."""
    if dsps is None:
        return 0
    return min(config.pes, max(0, multipliers(config) - dsps))


def pipeline_latency(op: int, config: AcceleratorConfig) -> int:
    """Cycles a run of ``op`` takes beyond its issue cycles (once per run, not per pixel).
    CONV: the sum of its blocks' latencies, 41 for the 8 x 8 array."""
    if op == Op.CONV:
        return (
            RUN_OVERHEAD
            + ADDRESS_LATENCY
            + BUFFER_LATENCY
            + OPERAND_LATENCY
            + array_latency(config.rows, config.cols)
            + ACCUMULATOR_LATENCY
        )
    return PIPELINE_LATENCY[Op(op)]


@dataclass(frozen=True)
class LayerDescriptor:
    """What one engine run computes. Sizes are of the tile held in the buffers.

    ``in_groups``/``out_groups``: channel groups of ``rows`` lanes. ``blocks``: output-channel
    blocks of ``cols`` lanes computed by a CONV (its output has ``blocks`` groups, written at
    ``out_group_offset`` of ``out_groups`` per pixel). ``pad_top``/``pad_left``: zero padding
    before the first row/column (bottom/right padding follows from the output size).
    """

    op: int
    kernel: int = 1
    stride: int = 1
    relu: bool = True
    pad_top: int = 0
    pad_left: int = 0
    in_groups: int = 1
    in_h: int = 1
    in_w: int = 1
    out_h: int = 1
    out_w: int = 1
    blocks: int = 1
    out_group_offset: int = 0
    out_groups: int = 1
    b_base: int = 0  # ADD: word address of the second operand in ACT_IN
    mult_a: int = 0
    mult_b: int = 0
    add_shift: int = 0
    in_base: int = 0  # CONV/MAXPOOL: word address where the input tile starts in ACT_IN

    _FORMAT = "<BBBBBBHHHHHHHHHHHBH"

    def pack(self) -> bytes:
        fields = list(astuple(self))
        fields[3] = int(fields[3])
        blob = struct.pack(self._FORMAT, *fields)
        return blob + bytes(DESCRIPTOR_BYTES - len(blob))

    @classmethod
    def unpack(cls, blob: bytes) -> LayerDescriptor:
        size = struct.calcsize(cls._FORMAT)
        fields = list(struct.unpack(cls._FORMAT, bytes(blob[:size])))
        fields[3] = bool(fields[3])
        return cls(*fields)

    @staticmethod
    def field_offsets() -> dict[str, tuple[int, int]]:
        """Field name -> (byte offset, byte width) in the packed descriptor (for the gateware)."""
        offsets, pos = {}, 0
        names = list(LayerDescriptor.__dataclass_fields__)
        for name, code in zip(names, LayerDescriptor._FORMAT[1:], strict=True):
            width = struct.calcsize("<" + code)
            offsets[name] = (pos, width)
            pos += width
        return offsets


#: the most bytes one buffer write (or read) of the engine carries: one DRAM word of the Arty's
#: 128-bit native port. The engine's actual width is :func:`transfer_bytes`.
MAX_TRANSFER_BYTES = 16
#: buffer spaces written a byte per cycle whatever the port width (small, or behind the
#: byte-wide Huffman decoder); the others take a chunk of up to transfer_bytes per cycle
BYTE_SPACES = frozenset(
    {
        BufferSpace.DESCRIPTOR,
        BufferSpace.CODEBOOK,
        BufferSpace.HUFFMAN_TABLE,
        BufferSpace.HUFFMAN_STREAM,
    }
)


def transfer_bytes(config: AcceleratorConfig) -> int:
    """Bytes per cycle of the engine's wide buffer ports (ACT_IN, WEIGHT, PARAMS writes, ACT_OUT
    reads): the largest power of two up to :data:`MAX_TRANSFER_BYTES` that divides every word
    of those buffers, so a chunk that stays inside one aligned block stays inside one word.
    A chunk is ``count`` bytes at byte address ``addr`` that do not cross a multiple of it."""
    words = (config.rows, config.rows * config.cols, PARAM_BYTES * config.cols)
    width = MAX_TRANSFER_BYTES
    while any(word % width for word in words):
        width //= 2
    return width


def groups(channels: int, lanes: int) -> int:
    return -(-channels // lanes)


# -- activations --------------------------------------------------------------------------------
def pack_activations(x: np.ndarray, lanes: int) -> bytes:
    """int8 (C, H, W) -> ACT layout bytes (HWC, channels zero-padded to a multiple of lanes)."""
    c, h, w = x.shape
    padded = np.zeros((groups(c, lanes) * lanes, h, w), dtype=np.int8)
    padded[:c] = x
    return padded.transpose(1, 2, 0).tobytes()


def unpack_activations(blob: bytes, channels: int, h: int, w: int, lanes: int) -> np.ndarray:
    """ACT layout bytes -> int8 (channels, H, W) (drops the padding channels)."""
    cp = groups(channels, lanes) * lanes
    data = np.frombuffer(bytes(blob[: h * w * cp]), dtype=np.int8).reshape(h, w, cp)
    return np.ascontiguousarray(data.transpose(2, 0, 1)[:channels])


def unpack_sums(blob: bytes, channels: int) -> np.ndarray:
    """AVGPOOL output bytes -> int32 (channels,)."""
    return np.frombuffer(bytes(blob[: 4 * channels]), dtype="<i4").astype(np.int32)


# -- weights ------------------------------------------------------------------------------------
def pack_weight_indices(indices: np.ndarray, config: AcceleratorConfig) -> bytes:
    """Codebook indices uint8 (C_out, C_in, k, k) -> WEIGHT layout (blocks of ``cols`` outputs).

    Padding lanes (beyond C_out or C_in) get index 0, which must map to 0 in the codebook.
    """
    rows, cols = config.rows, config.cols
    c_out, c_in, k, _ = indices.shape
    nb, ng = groups(c_out, cols), groups(c_in, rows)
    full = np.zeros((nb * cols, ng * rows, k, k), dtype=np.uint8)
    full[:c_out, :c_in] = indices
    # (block, lane_out, group, lane_in, ky, kx) -> (block, ky, kx, group, lane_in, lane_out)
    t = full.reshape(nb, cols, ng, rows, k, k).transpose(0, 4, 5, 2, 3, 1)
    return t.tobytes()


def pack_codebook(values: np.ndarray) -> bytes:
    """int8 codebook (<= 256 entries, entry 0 must be 0 for padding lanes) -> 256 bytes."""
    values = np.asarray(values)
    if values.dtype != np.int8 or values.ndim != 1 or len(values) > CODEBOOK_ENTRIES:
        raise ValueError("codebook must be a 1-D int8 array of at most 256 entries")
    if len(values) and values[0] != 0:
        raise ValueError("codebook entry 0 must be 0 (padding lanes use index 0)")
    table = np.zeros(CODEBOOK_ENTRIES, dtype=np.int8)
    table[: len(values)] = values
    return table.tobytes()


def identity_codebook(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain int8 weights -> (codebook, indices) with at most 256 entries, entry 0 = 0."""
    values = np.unique(np.concatenate([[0], weight.ravel().astype(np.int16)]))
    values = np.concatenate([[0], values[values != 0]]).astype(np.int8)
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[values.astype(np.int16) + 128] = np.arange(len(values), dtype=np.uint8)
    return values, lookup[weight.astype(np.int16) + 128]


def params_fields() -> list[tuple[str, int, bool]]:
    """The PARAMS record as (field, bit width, signed), LSB first (for the gateware)."""
    return [
        (name, np.dtype(code).itemsize * 8, np.dtype(code).kind == "i")
        for name, code in PARAMS_RECORD
    ]


def pack_params(bias: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, cols: int) -> bytes:
    """Per-channel bias int32, multiplier uint16, shift uint8 -> PARAMS bytes (padded to cols)."""
    n = groups(len(bias), cols) * cols
    rec = np.zeros(n, dtype=list(PARAMS_RECORD))
    rec["bias"][: len(bias)] = bias
    rec["multiplier"][: len(bias)] = multiplier
    rec["shift"][: len(bias)] = shift
    return rec.tobytes()


# -- on-chip Huffman decode ---------------------------------------------------------------------
def pack_huffman_table(lengths: np.ndarray) -> bytes:
    """Code length per symbol (256,) -> HUFFMAN_TABLE bytes."""
    assert huffman.MAX_LENGTH == HUFFMAN_MAX_LENGTH
    lengths = np.asarray(lengths, dtype=np.int64)
    huffman.check_lengths(lengths)
    order = sorted((int(lengths[s]), s) for s in np.flatnonzero(lengths))
    symbols = np.zeros(256, dtype=np.uint8)
    symbols[: len(order)] = [s for _, s in order]
    codes = huffman.canonical_codes(lengths)
    per_length = np.zeros((HUFFMAN_MAX_LENGTH, 3), dtype="<u2")
    rank = 0
    code = 0
    for n in range(1, HUFFMAN_MAX_LENGTH + 1):
        members = [s for length, s in order if length == n]
        first = int(codes[members[0]]) if members else code
        per_length[n - 1] = (first & 0xFFFF, len(members), rank)  # count 0: first unused
        rank += len(members)
        code = (first + len(members)) << 1
    return symbols.tobytes() + per_length.tobytes()


def pack_huffman_stream(data: bytes, lengths: np.ndarray, dest: int) -> bytes:
    """WEIGHT bytes -> HUFFMAN_STREAM bytes (header + bitstream) decoding to ``dest``."""
    symbols = np.frombuffer(bytes(data), dtype=np.uint8)
    header = HUFFMAN_HEADER.pack(len(symbols), dest)
    return header + huffman.encode(symbols, lengths)


def huffman_lengths(data: bytes) -> np.ndarray:
    """Code lengths for the byte histogram of ``data`` (every byte value that occurs)."""
    counts = np.bincount(np.frombuffer(bytes(data), dtype=np.uint8), minlength=256)
    return huffman.code_lengths(counts)


def huffman_stream_header(stream: bytes) -> tuple[int, int]:
    """(symbols, WEIGHT offset they decode to) from a HUFFMAN_STREAM's header."""
    count, dest = HUFFMAN_HEADER.unpack_from(bytes(stream[:HUFFMAN_HEADER_BYTES]))
    return count, dest


def decode_huffman_stream(table: bytes, stream: bytes) -> tuple[int, bytes]:
    """What the decoder does with ``table`` and one ``stream`` (header + bits): (dest, bytes).

    The code lengths are read back from the table's per-length counts (the table is canonical
    by construction) and the bits decoded with :func:`fpga.spec.huffman.decode`; raises
    ValueError on an invalid code or a stream that ends early.
    """
    count, dest = huffman_stream_header(stream)
    lengths = huffman_table_lengths(table)
    out = huffman.decode(bytes(stream[HUFFMAN_HEADER_BYTES:]), count, lengths)
    return dest, out.astype(np.uint8).tobytes()


def huffman_table_lengths(table: bytes) -> np.ndarray:
    """The code length of each symbol (0: none), read back from a table's per-length counts
    (the table is canonical by construction): what :func:`pack_huffman_table` was given."""
    symbols = np.frombuffer(bytes(table[:256]), dtype=np.uint8)
    per_length = np.frombuffer(
        bytes(table[HUFFMAN_LENGTH_BASE:HUFFMAN_TABLE_BYTES]), dtype="<u2"
    ).reshape(HUFFMAN_MAX_LENGTH, 3)
    lengths = np.zeros(256, dtype=np.int64)
    for n, (_, num, rank) in enumerate(per_length, start=1):
        lengths[symbols[int(rank) : int(rank) + int(num)]] = n
    return lengths


# -- capacity and cycles --------------------------------------------------------------------------
def tile_bytes(desc: LayerDescriptor, config: AcceleratorConfig) -> dict[str, int]:
    """Bytes each buffer needs for ``desc``: one past the last byte a run reads (ACT_IN, WEIGHT,
    PARAMS) or writes (ACT_OUT); a SPLIT run (``fpga.spec.commands``) must stay in its halves."""
    rows, cols = config.rows, config.cols
    need = {"act_in": (desc.in_base + desc.in_h * desc.in_w * desc.in_groups) * rows}
    if desc.op == Op.ADD:
        need["act_in"] = desc.b_base * rows + need["act_in"]
    last_pixel = (desc.out_h * desc.out_w - 1) * desc.out_groups  # word of the last pixel
    if desc.op == Op.AVGPOOL:
        need["act_out"] = desc.in_groups * rows * 4
    elif desc.op == Op.CONV:
        need["act_out"] = (last_pixel + desc.out_group_offset + desc.blocks) * cols
    elif desc.op == Op.MAXPOOL:
        need["act_out"] = (last_pixel + desc.in_groups) * cols
    else:
        need["act_out"] = desc.out_h * desc.out_w * desc.in_groups * cols
    need["weight"] = (
        desc.blocks * desc.kernel**2 * desc.in_groups * rows * cols if desc.op == Op.CONV else 0
    )
    need["params"] = desc.blocks * cols * PARAM_BYTES if desc.op == Op.CONV else 0
    return need


def tile_capacity(config: AcceleratorConfig, split: bool = False) -> dict[str, int]:
    """Bytes a tile may use of each engine buffer: all of it, or with ``split`` (double
    buffering: a SPLIT run, ``fpga.spec.commands``) one half, the other taking the next tile."""
    have = {
        "act_in": config.act_in_bytes,
        "act_out": config.act_out_bytes,
        "weight": config.weight_bytes,
        "params": config.max_out_channels * PARAM_BYTES,
    }
    return {name: size // 2 for name, size in have.items()} if split else have


def check_fits(desc: LayerDescriptor, config: AcceleratorConfig, split: bool = False) -> None:
    """Raise ValueError naming the buffer a tile overflows (with ``split``: its half)."""
    need = tile_bytes(desc, config)
    have = tile_capacity(config, split)
    for name, size in need.items():
        if size > have[name]:
            raise ValueError(f"tile needs {size} bytes of {name}, the buffer has {have[name]}")
    if desc.op == Op.CONV and desc.out_group_offset + desc.blocks > desc.out_groups:
        raise ValueError("conv output groups exceed out_groups")


def fits(desc: LayerDescriptor, config: AcceleratorConfig) -> bool:
    try:
        check_fits(desc, config)
    except ValueError:
        return False
    return True


def predict_cycles(desc: LayerDescriptor, config: AcceleratorConfig) -> int:
    """Engine cycles from ``start`` to ``done`` for ``desc`` on an engine built for ``config``
    (the RTL matches this exactly)."""
    pixels = desc.out_h * desc.out_w
    if desc.op == Op.CONV:
        work = desc.blocks * pixels * desc.kernel**2 * desc.in_groups
    elif desc.op == Op.MAXPOOL:
        work = desc.in_groups * pixels * MAXPOOL_WINDOW_ISSUES
    elif desc.op == Op.ADD:
        work = desc.in_groups * pixels * add_cycles_per_vector(config)
    else:
        work = desc.in_groups * (desc.in_h * desc.in_w + 4)
    return work + pipeline_latency(desc.op, config)
