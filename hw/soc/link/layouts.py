"""The link's protocol layouts in gateware: ``fpga.spec.protocol``'s payload layouts as
``amaranth.lib.data`` layouts (the host packs and unpacks the same tables with :mod:`struct`, so no
byte offset is written twice) and the frame CRC."""

from __future__ import annotations

from amaranth import unsigned
from amaranth.lib import crc, data
from amaranth.lib.wiring import In, Out

from fpga.spec.protocol import (
    FRAME_HEADER,
    MEM_READ_REQUEST,
    MEM_WRITE_REQUEST,
    MODEL_COMMIT_REQUEST,
    READ_REQUEST,
    RESIDENT_RUN_REQUEST,
    WRITE_REQUEST,
)

#: the frame CRC: zlib's CRC-32, one byte per cycle
FRAME_CRC = crc.catalog.CRC32_ISO_HDLC(data_width=8)


def struct_layout(layout, fields=None) -> data.StructLayout:
    """A ``fpga.spec.protocol.PayloadLayout`` as a StructLayout: the same fields at the same bit
    offsets (byte ``i`` of the packed payload is bits ``8*i .. 8*i+7``). ``fields``: only these
    (a record of some of the layout's fields, not at its offsets)."""
    widths = layout.widths()
    names = widths if fields is None else fields
    return data.StructLayout({field: unsigned(widths[field]) for field in names})


def view(layout, value):
    """``value`` (bits, first byte least significant) seen through a protocol layout."""
    return data.View(struct_layout(layout), value)


#: the frame header (length, seq, opcode) as the codec holds it
HEADER = struct_layout(FRAME_HEADER)
#: request layouts whose fields the link reads from the first payload bytes
REQUESTS = (
    WRITE_REQUEST,
    READ_REQUEST,
    MEM_WRITE_REQUEST,
    MEM_READ_REQUEST,
    MODEL_COMMIT_REQUEST,
    RESIDENT_RUN_REQUEST,
)
#: payload bytes the codec keeps in a register for the request views (:func:`request_view`)
REQUEST_BYTES = max(layout.size for layout in REQUESTS)


def request_view(layout, request):
    """The first payload bytes ``request`` (``REQUEST_BYTES`` of them) as request ``layout``."""
    return view(layout, request[: 8 * layout.size])


def frame_buffer_port(depth: int, block_bytes: int) -> dict:
    """The members of a ``depth``-byte frame buffer port as its borrower drives it (``In``: the
    owner's view): a byte write port (``wr_*``) and a read port that answers in the cycle after
    the address, a block RAM's (``rd_addr`` -> ``rd_data``, the byte, and ``rd_block``, the
    aligned ``block_bytes`` around it: the
    sequencer's STOREs from ``HostSpace.LINK`` read a block a cycle, as from ACT_OUT). The codec
    lends it to the decoder, the decoder to the resident model."""
    return {
        "wr_en": In(1),
        "wr_addr": In(range(depth)),
        "wr_data": In(8),
        "rd_addr": In(range(depth)),
        "rd_data": Out(8),
        "rd_block": Out(8 * block_bytes),
    }
