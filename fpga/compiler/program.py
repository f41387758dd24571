"""Network compiler: a QuantizedNetwork -> a layer program tiled to the engine's buffers.

The program is a list of :class:`Unit` (one per produced tensor). A unit is a list of
:class:`Tile`: activations to load into ACT_IN, engine runs (each with its constant blobs:
codebook, weight indices, per-channel parameters, descriptor), and the output region to read
back from ACT_OUT. Tiling:

* row bands: as many output rows as fit both ACT_IN (input rows incl. the halo of 3x3 windows)
  and ACT_OUT; the padding of a band's edge rows is expressed in the descriptor (pad_top,
  in_base), never by copying zeros;
* output-channel chunks: as many blocks of ``cols`` channels as the weight buffer holds;
* two orders per conv unit (``Unit.order``): "band" (row band outer: a tile loads a band and runs
  every chunk into ACT_OUT, which holds all of the band's output groups) and "chunk" (chunk
  outer: a tile per chunk and band, the bands sized for that chunk's conv and groups alone, its
  Store a channel-group slice of the output; consecutive tiles hold the chunk's constants, so
  its weights load once, not once per band, and the input bands load once per chunk). Each unit
  takes the order with fewer estimated resident device cycles (:func:`_transfer_estimate`);
  a tie, one chunk or one band keeps "band";
* a fire module's expand1x1 and expand3x3 are one unit, the concat done by output addressing:
  band outer, they share one loaded band of the squeeze output and write into one ACT_OUT band
  at different group offsets; chunk outer, each chunk's Store writes its channel groups' slice;
* conv1 is lowered to a 1x1 conv by host im2col (input prep): v1.0's 7x7/2 to 147 channels,
  v1.1's 3x3/2 to 27 (its 3 input channels alone would use 3 of the array's lanes);
* a max pool is tiled in blocks of rows x columns of every channel group (a LOAD or STORE row an
  image row of the block; the blocks' input rows and columns overlap by one), or, when that is
  dearer by :func:`_transfer_estimate` or nine pixels of every group overflow ACT_IN, in bands of
  whole rows of some channel groups (a row a pixel);
* the global average pool is tiled over channel groups.

:func:`execute` runs a program on any device with ``write(space, offset, bytes)``,
``read(space, offset, length) -> bytes`` and ``run(expected_cycles) -> cycles`` (the simulated
board through the
host driver, a real board, or :class:`fpga.compiler.emulator.EngineEmulator`). Constant blobs
already in a buffer are not sent again. Link bytes are counted per layer against the minimum for
this residency mode (every weight, codebook and parameter once, the input image once, the logits
once; activations round-trip through the host between layers).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from fpga.spec import golden
from fpga.spec.config import WEIGHTS_MODES, AcceleratorConfig
from fpga.spec.errors import UserError
from fpga.spec.layout import (
    BYTE_SPACES,
    PARAM_BYTES,
    BufferSpace,
    LayerDescriptor,
    Op,
    check_fits,
    groups,
    huffman_lengths,
    huffman_stream_header,
    identity_codebook,
    pack_activations,
    pack_codebook,
    pack_huffman_stream,
    pack_huffman_table,
    pack_params,
    pack_weight_indices,
    predict_cycles,
    tile_capacity,
    transfer_bytes,
    unpack_activations,
    unpack_sums,
)
from fpga.spec.network import QLayer, QuantizedNetwork


class CompileError(UserError, ValueError):
    """The network cannot be tiled to this accelerator configuration."""


@dataclass
class Load:
    """Rows [y0, y1) x columns [x0, x1) (``x1`` None: to the row's end) of channel groups
    [g0, g1) of ``tensor`` into ACT_IN at word ``base``, packed (pixel-major, as the engine reads
    a tile of that width)."""

    tensor: str
    y0: int
    y1: int
    g0: int
    g1: int
    base: int = 0
    x0: int = 0
    x1: int | None = None

    def columns(self, width: int) -> tuple[int, int]:
        """[x0, x1) of a tensor ``width`` pixels wide."""
        return self.x0, width if self.x1 is None else self.x1


@dataclass
class Run:
    layer: str
    descriptor: LayerDescriptor
    consts: list[tuple[int, int, bytes]] = field(default_factory=list)
    macs: int = 0


@dataclass
class Store:
    """Read rows [y0, y1) x columns [x0, x0 + width) x groups [g0, g1) (``kind`` "act") or
    sums of groups [g0, g1)."""

    y0: int
    y1: int
    g0: int
    g1: int
    width: int
    kind: str = "act"
    x0: int = 0


@dataclass
class Tile:
    loads: list[Load]
    runs: list[Run]
    store: Store


@dataclass
class Unit:
    name: str  # the tensor it produces
    op: str
    shape: tuple[int, ...]  # (C, H, W) int8, or (C,) int32 sums
    tiles: list[Tile]
    layers: list[str]  # graph layers computed by this unit
    order: str = ""  # a conv unit's tiling order (CONV_ORDERS)
    #: tiled to half buffers: its runs are SPLIT (double buffered) in a resident program
    split: bool = False
    #: (rows, width) its tiles see its input and output as, when not the tensors' own: a 1x1
    #: conv's pixels are independent and consecutive in the HWC layout, so an H x W tensor is
    #: the same bytes as (H * W / width) rows of ``width`` pixels (:func:`_pixel_view`)
    view: tuple[int, int] | None = None

    def spatial(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``shape`` (C, H, W) as this unit's tiles see it (its view), else unchanged."""
        if self.view is None or len(shape) != 3:
            return shape
        return (shape[0], *self.view)

    @property
    def macs(self) -> int:
        return sum(run.macs for tile in self.tiles for run in tile.runs)


@dataclass
class Program:
    variant: str
    config: AcceleratorConfig
    input_shape: tuple[int, int, int]
    conv1_lowering: tuple[int, int, int] | None  # (kernel, stride, pad) of an im2col'ed conv1
    units: list[Unit]
    output: str
    weights_mode: str = "indices"
    minimum_link_bytes: int = 0
    #: tiled for double buffering (``compile_network(split=True)``): each unit whose tiles fit
    #: half buffers (``Unit.split``) is double-buffered by the resident compiler
    split: bool = False

    @property
    def lowered_conv1(self) -> bool:
        return self.conv1_lowering is not None

    @property
    def runs(self) -> int:
        return sum(len(t.runs) for u in self.units for t in u.tiles)

    def predicted_cycles(self) -> dict[str, int]:
        return {
            u.name: sum(predict_cycles(r.descriptor, self.config) for t in u.tiles for r in t.runs)
            for u in self.units
        }


# -- weights -> device blobs ---------------------------------------------------------------------
@dataclass
class ConvWeights:
    """A conv layer's weights as the device holds them: codebook + indices."""

    codebook: np.ndarray  # int8 (<= 256,), entry 0 == 0
    indices: np.ndarray  # uint8 (C_out, C_in, k, k)


def conv_weights(layer: QLayer, compressed: dict | None = None) -> ConvWeights:
    if compressed and layer.name in compressed:
        codebook, indices = compressed[layer.name]
        if not np.array_equal(np.asarray(codebook)[indices], layer.weight):
            raise CompileError(f"{layer.name}: codebook[indices] differs from the layer weights")
        return ConvWeights(np.asarray(codebook, dtype=np.int8), np.asarray(indices, np.uint8))
    return ConvWeights(*identity_codebook(layer.weight))


def lower_conv1(weight: np.ndarray) -> np.ndarray:
    """k x k conv weight (O, C, k, k) -> 1x1 weight (O, k*k*C, 1, 1), rows in the lowered
    order (ky, kx, c): channel ``(ky * k + kx) * C + c`` (:func:`prepare_input`). For a fixed
    kernel row, the k * C values of an output pixel are one contiguous run of an HWC image row,
    which the resident program gathers with one LOAD window (``fpga.compiler.resident``)."""
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(weight.shape[0], -1, 1, 1)


def prepare_input(program: Program, image: np.ndarray) -> np.ndarray:
    """Input prep on the host: the int8 image, im2col'ed when conv1 is lowered (channels in
    :func:`lower_conv1`'s order)."""
    if not program.lowered_conv1:
        return image
    kernel, stride, pad = program.conv1_lowering
    cols = golden.im2col(image, kernel, stride, pad)  # rows (c, ky, kx)
    side = golden.conv_output_size(image.shape[1], kernel, stride, pad)
    c = image.shape[0]
    cols = cols.reshape(c, kernel, kernel, side, side).transpose(1, 2, 0, 3, 4)
    return np.ascontiguousarray(cols.reshape(-1, side, side))


# -- planning ------------------
#: tiling orders of a conv unit (:func:`_conv_unit`): "band" = row band outer, every weight chunk
#: run per band; "chunk" = weight chunk outer, the chunk's bands inner (its constants loaded once)
CONV_ORDERS = ("band", "chunk")


def _conv_unit(
    name: str,
    convs: list[QLayer],
    src: str,
    in_shape: tuple[int, int, int],
    weights: list[ConvWeights],
    config: AcceleratorConfig,
    weights_mode: str = "indices",
    order: str = "auto",
    split: bool = False,
) -> Unit:
    """Tile one conv unit (a conv, or convs concatenated by output addressing).

    ``order``: "band", "chunk" or "auto" (the one :func:`_transfer_estimate` finds cheaper; a tie,
    one chunk or one band keeps "band").
    """
    if order not in (*CONV_ORDERS, "auto"):
        raise CompileError(f"{name}: unknown tiling order {order!r}")
    lanes, cap = config.rows, tile_capacity(config, split)
    c_in, h, w = in_shape
    g_in = groups(c_in, lanes)
    outs = []
    for conv in convs:
        k, s, p = conv.kernel, conv.stride, conv.pad
        outs.append((golden.conv_output_size(h, k, s, p), golden.conv_output_size(w, k, s, p)))
    if len(set(outs)) != 1:
        raise CompileError(f"{name}: concatenated convs differ in output size {outs}")
    out_h, out_w = outs[0]
    if len(convs) > 1 and any(conv.weight.shape[0] % lanes for conv in convs):
        raise CompileError(
            f"{name}: concat by addressing needs channel counts divisible by {lanes}"
        )
    offsets, total = [], 0
    for conv in convs:
        offsets.append(total)
        total += groups(conv.weight.shape[0], lanes)

    def band_rows(oy0: int, oy1: int, band_convs) -> tuple[int, int]:
        lo = min(max(0, oy0 * c.stride - c.pad) for c in band_convs)
        hi = max(min(h, (oy1 - 1) * c.stride - c.pad + c.kernel) for c in band_convs)
        return lo, hi

    def band_height(band_convs, out_groups: int) -> int:
        """The most output rows a band can have: its input rows (halo included) fit ACT_IN and
        its ``out_groups`` channel groups fit ACT_OUT."""

        def fits(rows: int) -> bool:
            for oy0 in range(0, out_h, rows):
                lo, hi = band_rows(oy0, min(out_h, oy0 + rows), band_convs)
                if (hi - lo) * w * g_in * lanes > cap["act_in"]:
                    return False
            return min(rows, out_h) * out_w * out_groups * lanes <= cap["act_out"]

        rows = out_h
        while rows > 0 and not fits(rows):
            rows -= 1
        if rows == 0:
            raise CompileError(f"{name}: one output row does not fit the activation buffers")
        return rows

    try:
        rows = band_height(convs, total)
    except CompileError:
        if order == "band":
            raise
        rows = None  # no band of every output group fits: per chunk, bands of its groups

    chunks = _weight_chunks(convs, weights, offsets, g_in, config, weights_mode, split)

    def conv_run(chunk, oy0, oy1, lo, hi, group_offset, out_groups) -> Run:
        conv, _, blocks, channels, consts = chunk
        start = oy0 * conv.stride - conv.pad  # first input row of the band's windows
        first = max(0, start)
        desc = LayerDescriptor(
            op=Op.CONV,
            kernel=conv.kernel,
            stride=conv.stride,
            relu=conv.relu,
            pad_top=first - start,
            pad_left=conv.pad,
            in_groups=g_in,
            in_h=hi - first,
            in_w=w,
            out_h=oy1 - oy0,
            out_w=out_w,
            blocks=blocks,
            out_group_offset=group_offset,
            out_groups=out_groups,
            in_base=(first - lo) * w * g_in,
        )
        check_fits(desc, config, split)
        macs = channels * c_in * conv.kernel**2 * (oy1 - oy0) * out_w
        return Run(conv.name, desc, consts, macs)

    def band_outer() -> list[Tile]:
        # a band of the input, every chunk's runs into one ACT_OUT band of all output groups
        tiles = []
        for oy0 in range(0, out_h, rows):
            oy1 = min(out_h, oy0 + rows)
            lo, hi = band_rows(oy0, oy1, convs)
            runs = [conv_run(chunk, oy0, oy1, lo, hi, chunk[1], total) for chunk in chunks]
            tiles.append(Tile([Load(src, lo, hi, 0, g_in)], runs, Store(oy0, oy1, 0, total, out_w)))
        return tiles

    def chunk_outer() -> list[Tile]:
        # per chunk, bands sized for its conv and its groups alone; ACT_OUT holds the chunk's
        # groups and the store writes their slice of the output (consecutive tiles share the
        # chunk's constants, so the device loads them once)
        tiles = []
        for chunk in chunks:
            conv, g0, blocks = chunk[:3]
            chunk_rows = band_height([conv], blocks)
            for oy0 in range(0, out_h, chunk_rows):
                oy1 = min(out_h, oy0 + chunk_rows)
                lo, hi = band_rows(oy0, oy1, [conv])
                run = conv_run(chunk, oy0, oy1, lo, hi, 0, blocks)
                store = Store(oy0, oy1, g0, g0 + blocks, out_w)
                tiles.append(Tile([Load(src, lo, hi, 0, g_in)], [run], store))
        return tiles

    if order == "chunk" or rows is None:
        order, tiles = "chunk", chunk_outer()
    else:
        tiles = band_outer()
        if order == "auto":
            order = "band"
            if len(chunks) > 1 and rows < out_h:
                chunked = chunk_outer()
                sizes = (w, g_in), (out_w, total)
                cost = [_transfer_estimate(t, config, *sizes, split) for t in (tiles, chunked)]
                if cost[1] < cost[0]:
                    order, tiles = "chunk", chunked
    c_out = sum(conv.weight.shape[0] for conv in convs)
    return Unit(name, "conv", (c_out, out_h, out_w), tiles, [c.name for c in convs], order)


def _weight_chunks(
    convs, weights, offsets, g_in: int, config, weights_mode: str, split: bool = False
) -> list:
    """Each conv's weights in chunks of output blocks that fit the weight buffer: ``(conv, first
    output group, blocks, channels, constants)``, the constants being the codebook, the weight
    indices (or the layer's Huffman table and the chunk's stream) and the parameters."""
    lanes = config.rows
    chunks = []
    for conv, cw, offset in zip(convs, weights, offsets, strict=True):
        k = conv.kernel
        per_block = k * k * g_in * lanes * config.cols
        cap = tile_capacity(config, split)
        max_blocks = min(cap["weight"] // per_block, cap["params"] // PARAM_BYTES // config.cols)
        if max_blocks == 0:
            raise CompileError(f"{conv.name}: one block of weights exceeds the weight buffer")
        blocks = groups(conv.weight.shape[0], config.cols)
        codebook = pack_codebook(cw.codebook)
        spans = []
        for b0 in range(0, blocks, max_blocks):
            b1 = min(blocks, b0 + max_blocks)
            c0, c1 = b0 * config.cols, min(conv.weight.shape[0], b1 * config.cols)
            spans.append((b0, b1, c0, c1, pack_weight_indices(cw.indices[c0:c1], config)))
        if weights_mode == "huffman":
            # one code per layer, from the histogram of every index the device will hold
            lengths = huffman_lengths(b"".join(span[-1] for span in spans))
            table = pack_huffman_table(lengths)
        for b0, b1, c0, c1, indices in spans:
            if weights_mode == "huffman":
                weight_consts = [
                    (BufferSpace.HUFFMAN_TABLE, 0, table),
                    (BufferSpace.HUFFMAN_STREAM, 0, pack_huffman_stream(indices, lengths, 0)),
                ]
            else:
                weight_consts = [(BufferSpace.WEIGHT, 0, indices)]
            consts = [
                (BufferSpace.CODEBOOK, 0, codebook),
                *weight_consts,
                (
                    BufferSpace.PARAMS,
                    0,
                    pack_params(
                        conv.bias[c0:c1], conv.multiplier[c0:c1], conv.shift[c0:c1], config.cols
                    ),
                ),
            ]
            chunks.append((conv, offset + b0, b1 - b0, c1 - c0, consts))

    return chunks


def _transfer_estimate(
    tiles: list[Tile],
    config: AcceleratorConfig,
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    split: bool = False,
) -> float:
    """Device cycles of a unit's ``tiles`` in resident mode: per tile the engine's runs and the
    transfers at the costs of :data:`fpga.compiler.cost.SEQUENCER_COSTS` (aligned rows, no
    Huffman decoder stalls): the constants the device does not already hold (:func:`execute`'s
    rule, from an empty device), the loads of its input (``in_size``: pixels a row, channel
    groups) and the store into its output (``out_size``), each one DMA row when it is whole
    rows of every group, a row an image row when it is every group of some columns, else a row
    a pixel (:func:`_slice_rows`); one after the other, or with ``split`` (double buffering)
    the larger of the two per tile. Only the comparison of two tilings of one unit matters."""
    from fpga.compiler.cost import SEQUENCER_COSTS as costs

    width = transfer_bytes(config)
    lanes = config.rows
    held = BufferContents()
    cycles = 0.0

    def load(space, nbytes: int, rows: int = 1) -> float:
        chunks = nbytes if space in BYTE_SPACES else -(-nbytes // width)
        return costs["command"] + costs["load"] + rows * costs["row"] + chunks * costs["load_chunk"]

    for tile in tiles:
        transfer = engine = 0.0
        for ld in tile.loads:
            x0, x1 = ld.columns(in_size[0])
            rows, pixels = ld.y1 - ld.y0, (ld.y1 - ld.y0) * (x1 - x0)
            nbytes = pixels * (ld.g1 - ld.g0) * lanes
            count = _slice_rows(rows, x1 - x0, ld.g1 - ld.g0, in_size)
            transfer += load(BufferSpace.ACT_IN, nbytes, count)
        for run in tile.runs:
            for space, offset, blob in [
                *run.consts,
                (BufferSpace.DESCRIPTOR, 0, run.descriptor.pack()),
            ]:
                if held.write(space, offset, blob, constant=True):
                    transfer += load(space, len(blob))
            transfer += costs["command"]  # RUN
            engine += predict_cycles(run.descriptor, config)
        store = tile.store
        pixels = (store.y1 - store.y0) * store.width
        count = _slice_rows(store.y1 - store.y0, store.width, store.g1 - store.g0, out_size)
        channels = (store.g1 - store.g0) * lanes
        transfer += costs["command"] + count * costs["store_row"]
        transfer += -(-pixels * channels // width) * costs["store_chunk"]
        cycles += max(engine, transfer) if split else engine + transfer
    return cycles


def _slice_rows(rows: int, columns: int, slice_groups: int, size: tuple[int, int]) -> int:
    """DMA rows of a slice of ``rows`` x ``columns`` pixels x ``slice_groups`` channel groups of
    a tensor of ``size`` (pixels a row, channel groups) in its HWC layout: one when its bytes
    are contiguous (whole rows of every group), a row an image row when it is every group of
    some columns, else a row a pixel."""
    width, all_groups = size
    if slice_groups < all_groups:
        return rows * columns
    return 1 if columns == width else rows


def _maxpool_unit(layer: QLayer, in_shape, config, split: bool = False) -> Unit:
    """A 3x3/2 max pool, tiled one of two ways, whichever :func:`_transfer_estimate` finds
    cheaper (a tie keeps the first): whole rows, as many channel groups a tile as one output
    row's input fits in ACT_IN (a tile's LOAD and STORE a DMA row a pixel when that is not
    every group), or every group and blocks of rows x columns (a DMA row an image row; the
    blocks' input columns overlap by one, as their rows do)."""
    lanes, cap = config.rows, tile_capacity(config, split)
    c, h, w = in_shape
    g = groups(c, lanes)
    # floor mode (an imported ONNX MaxPool): the ceil-mode windows, fewer of them (the engine
    # clips a window at the tile's edge only in ceil mode, where the last one hangs over; an
    # inner tile's windows are whole)
    out_h = golden.pool_output_size(h, ceil_mode=layer.ceil_mode)
    out_w = golden.pool_output_size(w, ceil_mode=layer.ceil_mode)

    def span(n: int, size: int) -> int:  # input rows (columns) of output rows (columns) 0 .. n
        return min(size, 2 * (n - 1) + 3)

    def fits(rows: int, gt: int, cols: int = out_w) -> bool:
        return (
            span(rows, h) * span(cols, w) * gt * lanes <= cap["act_in"]
            and rows * cols * gt * lanes <= cap["act_out"]
        )

    def tiling(gt: int, rows: int, cols: int) -> list[Tile]:
        count = -(-out_w // cols)  # column blocks, as even as they go
        edges = [out_w * k // count for k in range(count + 1)]
        tiles = []
        for g0 in range(0, g, gt):
            g1 = min(g, g0 + gt)
            for oy0 in range(0, out_h, rows):
                oy1 = min(out_h, oy0 + rows)
                lo, hi = 2 * oy0, span(oy1, h)
                for ox0, ox1 in zip(edges, edges[1:], strict=False):
                    x0, x1 = 2 * ox0, span(ox1, w)
                    desc = LayerDescriptor(
                        op=Op.MAXPOOL,
                        kernel=3,
                        stride=2,
                        in_groups=g1 - g0,
                        in_h=hi - lo,
                        in_w=x1 - x0,
                        out_h=oy1 - oy0,
                        out_w=ox1 - ox0,
                        out_groups=g1 - g0,
                    )
                    check_fits(desc, config, split)
                    load = Load(layer.inputs[0], lo, hi, g0, g1, x0=x0, x1=None if x1 == w else x1)
                    store = Store(oy0, oy1, g0, g1, ox1 - ox0, x0=ox0)
                    tiles.append(Tile([load], [Run(layer.name, desc)], store))
        return tiles

    def most_rows(gt: int, cols: int) -> int:
        return max((r for r in range(1, out_h + 1) if fits(r, gt, cols)), default=0)

    # whole rows: channel groups per tile first, then rows per band
    gt = max((n for n in range(1, g + 1) if fits(1, n)), default=0)
    candidates = [tiling(gt, most_rows(gt, out_w), out_w)] if gt else []
    # every group: for each band height, the widest column blocks that fit
    for rows in range(1, out_h + 1):
        cols = max((n for n in range(1, out_w + 1) if fits(rows, g, n)), default=0)
        if cols == 0:
            break
        if cols < out_w or not candidates:
            candidates.append(tiling(g, rows, cols))
    if not candidates:
        raise CompileError(f"{layer.name}: one pixel of one channel group does not fit")
    sizes = (w, g), (out_w, g)
    costs = [_transfer_estimate(tiles, config, *sizes, split) for tiles in candidates]
    tiles = candidates[costs.index(min(costs))]
    return Unit(layer.name, "maxpool", (c, out_h, out_w), tiles, [layer.name])


def _add_unit(layer: QLayer, in_shape, config, split: bool = False) -> Unit:
    lanes = config.rows
    c, h, w = in_shape
    g = groups(c, lanes)
    row_bytes = w * g * lanes
    cap = tile_capacity(config, split)
    rows = min(h, cap["act_in"] // (2 * row_bytes), cap["act_out"] // row_bytes)
    if rows == 0:
        raise CompileError(f"{layer.name}: one row of both operands does not fit ACT_IN")
    tiles = []
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        words = (y1 - y0) * w * g
        desc = LayerDescriptor(
            op=Op.ADD,
            relu=layer.relu,
            in_groups=g,
            in_h=y1 - y0,
            in_w=w,
            out_h=y1 - y0,
            out_w=w,
            out_groups=g,
            b_base=words,
            mult_a=int(layer.multiplier[0]),
            mult_b=int(layer.multiplier[1]),
            add_shift=int(layer.shift[0]),
        )
        check_fits(desc, config, split)
        loads = [Load(layer.inputs[0], y0, y1, 0, g, 0), Load(layer.inputs[1], y0, y1, 0, g, words)]
        tiles.append(Tile(loads, [Run(layer.name, desc)], Store(y0, y1, 0, g, w)))
    return Unit(layer.name, "add", (c, h, w), tiles, [layer.name])


def _avgpool_unit(layer: QLayer, in_shape, config, split: bool = False) -> Unit:
    lanes = config.rows
    c, h, w = in_shape
    g = groups(c, lanes)
    cap = tile_capacity(config, split)
    per_tile = min(cap["act_in"] // (h * w * lanes), cap["act_out"] // (4 * lanes))
    if per_tile == 0:
        raise CompileError(f"{layer.name}: one channel group does not fit ACT_IN")
    tiles = []
    for g0 in range(0, g, per_tile):
        g1 = min(g, g0 + per_tile)
        desc = LayerDescriptor(op=Op.AVGPOOL, in_groups=g1 - g0, in_h=h, in_w=w)
        check_fits(desc, config, split)
        tiles.append(
            Tile(
                [Load(layer.inputs[0], 0, h, g0, g1)],
                [Run(layer.name, desc)],
                Store(0, 1, g0, g1, 1, kind="sums"),
            )
        )
    return Unit(layer.name, "avgpool", (c,), tiles, [layer.name])


def compile_network(
    network: QuantizedNetwork,
    config: AcceleratorConfig,
    compressed: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    weights_mode: str = "indices",
    orders: dict[str, str] | None = None,
    split: bool = False,
) -> Program:
    """Tile ``network`` for ``config``.

    ``compressed`` maps conv layer names to (int8 codebook, uint8 indices) so the device holds
    the compressed model's indices; other layers get an identity codebook of their int8 values.
    ``weights_mode``: "indices" sends each weight chunk's indices as WEIGHT bytes; "huffman"
    sends a per-layer canonical Huffman table and each chunk as a bitstream that the device
    decodes into WEIGHT itself (hw.soc.huffman).
    ``orders`` forces a conv unit's tiling order by unit name ("band", "chunk"; "*" for every
    conv unit); the default picks per unit (:func:`_conv_unit`).
    ``split``: tiles fit one half of each buffer (``fpga.spec.layout.tile_capacity``), so that
    the resident compiler can double-buffer them (SPLIT runs, ``fpga.spec.commands``).
    """
    if weights_mode not in WEIGHTS_MODES:
        raise CompileError(
            f"unknown weights mode {weights_mode!r}; choose one of {', '.join(WEIGHTS_MODES)}"
        )
    if weights_mode == "huffman" and not config.huffman_decoder:
        raise CompileError(
            "this accelerator config has no on-chip Huffman decoder (a board whose LUTs are "
            "spent, e.g. the Arty A7-35T): use index weights (--weights-mode indices)"
        )
    size = network.input_size
    shapes: dict[str, tuple[int, ...]] = {"input": (3, size, size)}
    consumers: dict[str, list[QLayer]] = {}
    for layer in network.layers:
        for src in layer.inputs:
            consumers.setdefault(src, []).append(layer)
    units: list[Unit] = []
    lowered = None
    done: set[str] = set()
    input_shape = (3, size, size)
    for layer in network.layers:
        if layer.name in done:
            continue
        if layer.op == "conv":
            sinks = consumers.get(layer.name, [])
            concat = sinks[0] if len(sinks) == 1 and sinks[0].op == "concat" else None
            convs = [network.layer(n) for n in concat.inputs] if concat else [layer]
            if concat and any(
                c.op != "conv" or c.inputs != convs[0].inputs or len(consumers[c.name]) != 1
                for c in convs
            ):
                convs, concat = [layer], None
            src = convs[0].inputs[0]
            in_shape = shapes[src]
            weights = [conv_weights(c, compressed) for c in convs]
            c_in = layer.weight.shape[1] if layer.op == "conv" else 0
            if layer.name == "conv1" and (layer.kernel not in (1, 3) or c_in < config.rows):
                # lower conv1 (v1.0's 7x7/2; v1.1's 3x3/2, whose 3 channels would fill only 3 of
                # the array's lanes): host im2col -> a 1x1 conv over 3*k*k channels
                lowered = (layer.kernel, layer.stride, layer.pad)
                side = golden.conv_output_size(size, layer.kernel, layer.stride, layer.pad)
                in_shape = (c_in * layer.kernel**2, side, side)
                conv = QLayer(
                    **{**layer.__dict__, "weight": lower_conv1(layer.weight), "stride": 1, "pad": 0}
                )
                weights = [ConvWeights(weights[0].codebook, lower_conv1(weights[0].indices))]
                convs = [conv]
                input_shape = in_shape
                shapes["input"] = in_shape
            name = concat.name if concat else layer.name
            order = (orders or {}).get(name, (orders or {}).get("*", "auto"))
            unit = _halves_or_whole(
                split, _conv_unit, name, convs, src, in_shape, weights, config, weights_mode, order
            )
            unit = _pixel_view(
                split,
                unit,
                convs,
                partial(
                    _conv_unit,
                    name,
                    convs,
                    src,
                    weights=weights,
                    config=config,
                    weights_mode=weights_mode,
                    order=order,
                    split=True,
                ),  # fmt: skip
            )
            done.update(c.name for c in convs)
            if concat:
                done.add(concat.name)
        elif layer.op == "maxpool":
            unit = _halves_or_whole(split, _maxpool_unit, layer, shapes[layer.inputs[0]], config)
        elif layer.op == "add":
            unit = _halves_or_whole(split, _add_unit, layer, shapes[layer.inputs[0]], config)
        elif layer.op == "avgpool":
            unit = _halves_or_whole(split, _avgpool_unit, layer, shapes[layer.inputs[0]], config)
        else:
            raise CompileError(f"{layer.name}: a bare {layer.op} cannot be placed on the device")
        shapes[unit.name] = unit.shape
        units.append(unit)
        done.add(layer.name)
    program = Program(
        network.variant,
        config,
        input_shape,
        lowered,
        units,
        units[-1].name,
        weights_mode,
        split=split,
    )
    program.minimum_link_bytes = _minimum_link_bytes(program)
    return program


def _halves_or_whole(split: bool, tile, *args) -> Unit:
    """``tile(*args, split=...)``: with ``split`` the unit tiled to half buffers where it can be
    (double buffering), else (a row too wide for a half, as v1.0's lowered conv1 on 8 x 8) to
    whole ones, its runs then unsplit."""
    if split:
        try:
            unit = tile(*args, split=True)
            unit.split = True
            return unit
        except CompileError:
            pass
    return tile(*args, split=False)


def _pixel_view(split: bool, unit: Unit, convs: list[QLayer], retile) -> Unit:
    """A 1x1 stride-1 unpadded conv unit that ``split`` could not tile to half buffers (one row
    too wide: v1.0's lowered conv1 on 8 x 8, 147 channels x 111 pixels), tiled again over its
    pixels as shorter rows (the widest divisor of H * W below W that fits): the same bytes in
    DRAM, double-buffered. ``retile(in_shape)`` tiles it for another input shape. Any other
    unit is returned as it is."""
    pointwise = all(c.kernel == 1 and c.stride == 1 and c.pad == 0 for c in convs)
    if not split or unit.split or not pointwise or len(unit.shape) != 3:
        return unit
    _, h, w = unit.shape
    c_in = convs[0].weight.shape[1]
    for width in sorted((d for d in range(1, w) if (h * w) % d == 0), reverse=True):
        try:
            viewed = retile((c_in, h * w // width, width))
        except CompileError:
            continue
        viewed.split, viewed.view, viewed.shape = True, (h * w // width, width), unit.shape
        return viewed
    return unit


def _minimum_link_bytes(program: Program) -> int:
    """Payload bytes if every constant went over once and every tensor once each way."""
    lanes = program.config.rows
    total = int(np.prod(program.input_shape[1:])) * groups(program.input_shape[0], lanes) * lanes
    seen = set()
    for unit in program.units:
        for tile in unit.tiles:
            for run in tile.runs:
                for space, offset, blob in run.consts:
                    key = (space, offset, hashlib.sha1(blob).digest())
                    if key not in seen:
                        seen.add(key)
                        total += len(blob)
        if unit.op == "avgpool":
            total += 4 * unit.shape[0]
        elif unit is not program.units[-1]:
            c, h, w = unit.shape
            # written back once and loaded once by each consumer (>= 1)
            total += 2 * h * w * groups(c, lanes) * lanes
    return total


# -- execution --------------------------------------------------------------------------
@dataclass
class LayerStats:
    name: str
    cycles: int = 0
    predicted_cycles: int = 0
    link_bytes: int = 0
    macs: int = 0
    runs: int = 0


class BufferContents:
    """The program's constants the engine's buffers hold: the one rule by which a constant
    already in its buffer is not loaded again (:func:`execute`, the resident compiler and the
    transfer estimate all follow it).

    A write that is not a constant forgets the constants of its space. WEIGHT holds what its
    writes decode to: an index blob is held together with the codebook it went through, a
    Huffman stream (at the WEIGHT offset its header names) with the codebook and the Huffman
    table it was decoded under, so the same bytes under another codebook or table are not
    "held"; a new codebook or table does not change weights already decoded."""

    def __init__(self):
        self._held: dict[tuple[int, int], object] = {}
        self._decode = {BufferSpace.CODEBOOK: None, BufferSpace.HUFFMAN_TABLE: None}

    def _key(self, space, offset: int, data: bytes, decode: dict | None = None):
        """(key, value) of a constant: WEIGHT and Huffman streams with what decodes them
        (``decode``: a run's own codebook and table, else the ones last written)."""
        decode = {**self._decode, **(decode or {})}
        codebook, table = decode[BufferSpace.CODEBOOK], decode[BufferSpace.HUFFMAN_TABLE]
        if space == BufferSpace.HUFFMAN_STREAM:
            _, dest = huffman_stream_header(data)
            return (int(space), dest), (codebook, table, bytes(data))
        if space == BufferSpace.WEIGHT:
            return (int(space), offset), (codebook, bytes(data))
        return (int(space), offset), bytes(data)

    def write(self, space, offset: int, data: bytes, constant: bool, consts=None) -> bool:
        """Note a write; False when it is a constant its buffer holds already (skip it).
        ``consts``: the run's constants, whose codebook and table the weights are compared
        under (default: the ones last written, which precede the weights in a run's list)."""
        if constant:
            key, value = self._key(space, offset, data, _decoders(consts))
            if self._held.get(key) == value:
                return False
            self._held[key] = value
            if space in self._decode:
                self._decode[space] = bytes(data)
        else:
            self._forget(space)
            if space in self._decode:
                self._decode[space] = None
        return True

    def needed(self, consts: list) -> list:
        """``consts`` (a run's) without the codebook and Huffman table when its weights are held
        already: those two only decode weights as they are written (a double-buffered program
        may have loaded the next chunk's meanwhile, ``fpga.compiler.resident``)."""
        weights = (BufferSpace.WEIGHT, BufferSpace.HUFFMAN_STREAM)
        held = [self.holds(c, consts) for c in consts if c[0] in weights]
        if not held or not all(held):
            return consts
        decode_only = (BufferSpace.CODEBOOK, BufferSpace.HUFFMAN_TABLE)
        return [c for c in consts if c[0] not in decode_only]

    def holds(self, const: tuple, consts: list) -> bool:
        """Whether the constant ``(space, offset, data)`` of a run whose constants are
        ``consts`` (its codebook and table decode it) is held."""
        key, value = self._key(*const, _decoders(consts))
        return self._held.get(key) == value

    def _forget(self, space) -> None:
        self._held = {k: v for k, v in self._held.items() if k[0] != int(space)}


def _decoders(consts) -> dict:
    """The codebook and Huffman table among a run's constants (what decodes its weights)."""
    decode = (BufferSpace.CODEBOOK, BufferSpace.HUFFMAN_TABLE)
    return {space: bytes(data) for space, _, data in consts or () if space in decode}


class _CountingDevice:
    """Counts payload bytes and skips constant blobs the device already holds."""

    def __init__(self, device):
        self.device = device
        self.bytes = 0
        self.contents = BufferContents()

    def write(self, space, offset, data, constant=False):
        if self.contents.write(space, offset, data, constant):
            self.bytes += len(data)
            self.device.write(space, offset, data)

    def read(self, space, offset, length):
        self.bytes += length
        return self.device.read(space, offset, length)


def execute(program: Program, device, image: np.ndarray, progress=None):
    """Run ``program`` on ``device`` for one int8 image (3, H, W).

    Returns ``(tensors, stats)``: every unit's output by name (the last one is the int32 class
    sums) and a list of :class:`LayerStats` (measured cycles, link bytes).
    """
    lanes = program.config.rows
    counting = _CountingDevice(device)
    tensors: dict[str, np.ndarray] = {"input": prepare_input(program, image)}
    stats = []
    for unit in program.units:
        before = counting.bytes
        st = LayerStats(unit.name)
        if unit.op == "avgpool":
            out = np.zeros(unit.shape, dtype=np.int32)
        else:
            out = np.zeros(unit.shape, dtype=np.int8)
        view = out.reshape(unit.spatial(out.shape))  # the same array, as the tiles see it
        for tile in unit.tiles:
            for load in tile.loads:
                src = tensors[load.tensor]
                src = src.reshape(unit.spatial(src.shape))
                x0, x1 = load.columns(src.shape[2])
                part = src[load.g0 * lanes : load.g1 * lanes, load.y0 : load.y1, x0:x1]
                counting.write(BufferSpace.ACT_IN, load.base * lanes, pack_activations(part, lanes))
            for run in tile.runs:
                for space, offset, blob in run.consts:
                    counting.write(space, offset, blob, constant=True)
                counting.write(BufferSpace.DESCRIPTOR, 0, run.descriptor.pack(), constant=True)
                predicted = predict_cycles(run.descriptor, program.config)
                st.cycles += device.run(predicted)
                st.predicted_cycles += predicted
                st.macs += run.macs
                st.runs += 1
            store = tile.store
            if store.kind == "sums":
                channels = (store.g1 - store.g0) * lanes
                sums = unpack_sums(counting.read(BufferSpace.ACT_OUT, 0, 4 * channels), channels)
                lo = store.g0 * lanes
                hi = min(unit.shape[0], lo + channels)
                out[lo:hi] = sums[: hi - lo]
            else:
                rows = store.y1 - store.y0
                channels = (store.g1 - store.g0) * lanes
                blob = counting.read(BufferSpace.ACT_OUT, 0, rows * store.width * channels)
                band = unpack_activations(blob, channels, rows, store.width, lanes)
                lo = store.g0 * lanes
                hi = min(unit.shape[0], lo + channels)
                columns = slice(store.x0, store.x0 + store.width)
                view[lo:hi, store.y0 : store.y1, columns] = band[: hi - lo]
            if progress is not None:
                progress(1)
        tensors[unit.name] = out
        st.link_bytes = counting.bytes - before
        stats.append(st)
    return tensors, stats


def tile_count(program: Program) -> int:
    return sum(len(u.tiles) for u in program.units)


__all__ = [
    "CompileError",
    "WEIGHTS_MODES",
    "Program",
    "Unit",
    "Tile",
    "Run",
    "Load",
    "Store",
    "LayerStats",
    "compile_network",
    "execute",
    "prepare_input",
    "tile_count",
]
