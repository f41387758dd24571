"""The engine's buffer ports, defined once: the write stream and the read port every block that
touches the buffers uses (the engine, the link, the sequencer's movers, the SoC's arbiter).

**Write** (:func:`write_signature`): an ``amaranth.lib.stream`` of chunks. A chunk is ``count``
bytes of ``data`` (lane 0 first) at byte ``addr`` of buffer ``space``, inside one aligned block
of :func:`fpga.spec.layout.transfer_bytes` bytes; a byte-wide writer (the link) sends
``count`` 1. A chunk is taken in a cycle with ``valid`` and ``ready`` both high: the engine
takes every chunk, the SoC's arbiter holds a writer back while the Huffman decoder is full.

**Read** (:func:`read_signature`): a ``request`` (``space``, ``addr``) answered one cycle later
on ``response``: the byte at ``addr`` (``data``) and the aligned block around it (``block``, what
a wide reader packs). Both directions are ``always_ready``: a read is never held back.

``space`` is a :class:`fpga.spec.layout.BufferSpace` or a :class:`fpga.spec.commands.HostSpace`
code (the link's frame buffer and checksum, which the arbiter sends to the link instead);
the widths come from the spec (:data:`fpga.spec.commands.SPACE_BITS`,
:func:`fpga.spec.commands.port_address_bits`, ``transfer_bytes``).
"""

from __future__ import annotations

from amaranth import unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fpga.spec.commands import SPACE_BITS, port_address_bits
from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import transfer_bytes


def write_layout(config: AcceleratorConfig) -> data.StructLayout:
    """One chunk written into a buffer."""
    width = transfer_bytes(config)
    return data.StructLayout(
        {
            "space": unsigned(SPACE_BITS),
            "addr": unsigned(port_address_bits(config)),
            "data": unsigned(8 * width),
            "count": range(width + 1),
        }
    )


def write_signature(config: AcceleratorConfig) -> stream.Signature:
    """The buffer write port, as its writer sees it (``Out``)."""
    return stream.Signature(write_layout(config))


def read_request_layout(config: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout(
        {"space": unsigned(SPACE_BITS), "addr": unsigned(port_address_bits(config))}
    )


def read_response_layout(config: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(8), "block": unsigned(8 * transfer_bytes(config))})


def read_signature(config: AcceleratorConfig) -> wiring.Signature:
    """The buffer read port, as its reader sees it (``Out``): requests out, responses in."""
    return wiring.Signature(
        {
            "request": Out(stream.Signature(read_request_layout(config), always_ready=True)),
            "response": In(stream.Signature(read_response_layout(config), always_ready=True)),
        }
    )
