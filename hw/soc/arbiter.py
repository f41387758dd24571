"""The engine's buffer ports shared by the SoC's two masters: one component instead of a column
of ``Mux``es.

Writers and readers (all on the port signatures of ``hw.engine.ports``): the link, and in
resident mode the sequencer, which owns the ports while it is ``active`` (the link waits for it:
it only starts the sequencer and answers when it is done). The arbiter sends a chunk

- in a :class:`fpga.spec.commands.HostSpace` (the sequencer's MEM_WRITE / MEM_READ /
  MODEL_COMMIT transfers) to the link's frame buffer or checksum (``host_write``/``host_read``);
- to ``HUFFMAN_TABLE`` / ``HUFFMAN_STREAM`` into the on-chip Huffman decoder (``hw.soc.huffman``,
  a submodule here), whose decoded symbols are written into the engine's weight buffer ahead of
  any writer: a writer waits (``ready`` low) while the decoder's bit buffer is full, and a write
  to another buffer waits while a decoded symbol is written; a config without the decoder
  (``AcceleratorConfig.huffman_decoder`` False) drops such a chunk and flags ``huffman_error``;
- to any other space into the engine (``engine_write``/``engine_read``; the engine takes every
  chunk).

All of it is combinational: a chunk reaches the engine, the decoder or the link in the cycle
its writer offers it, as when the SoC wired the ports by hand.
"""

from __future__ import annotations

from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga.spec.commands import HostSpace
from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import HUFFMAN_TABLE_BYTES, BufferSpace
from hw.engine.ports import read_signature, write_signature
from hw.soc.huffman import HuffmanDecoder


class BufferArbiter(wiring.Component):
    """``resident``: with the sequencer's ports (``sequencer_*``, ``active``) and the link's host
    spaces (``host_*``); without, the link alone drives the engine's ports."""

    def __init__(self, config: AcceleratorConfig, resident: bool):
        self.config, self.resident = config, resident
        write, read = write_signature(config), read_signature(config)
        ports = {
            "link_write": In(write),
            "link_read": In(read),
            "engine_write": Out(write),
            "engine_read": Out(read),
            # the engine starts a run: a Huffman chunk not yet complete is an error
            "abort": In(1),
            "clear_error": In(1),
            "huffman_busy": Out(1),
            "huffman_error": Out(1),
        }
        if resident:
            ports |= {
                "active": In(1),
                "sequencer_write": In(write),
                "sequencer_read": In(read),
                "host_write": Out(write),
                "host_read": Out(read),
            }
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        # the master of the ports: its chunk (HostSpace ones aside) and its reads
        write, read = self._master(m)
        chunk = write.payload
        to_table = chunk.space == BufferSpace.HUFFMAN_TABLE
        to_stream = chunk.space == BufferSpace.HUFFMAN_STREAM
        engine = self.engine_write
        m.d.comb += [
            self.engine_read.request.valid.eq(read.request.valid),
            self.engine_read.request.payload.eq(read.request.payload),
            self.link_read.response.valid.eq(self.engine_read.response.valid),
            self.link_read.response.payload.eq(self.engine_read.response.payload),
        ]
        if not self.config.huffman_decoder:
            # no decoder (AcceleratorConfig.huffman_decoder): a Huffman chunk is taken and
            # dropped, and flags the error a bad stream would (the host sends index weights)
            huffman = to_table | to_stream
            with m.If(write.valid & huffman):
                m.d.sync += self.huffman_error.eq(1)
            with m.If(self.clear_error):
                m.d.sync += self.huffman_error.eq(0)
            m.d.comb += [
                write.ready.eq(huffman | engine.ready),
                engine.valid.eq(write.valid & ~huffman),
                engine.payload.eq(chunk),
            ]
            return m
        m.submodules.huffman = huffman = HuffmanDecoder(in_width=8)
        decoded = huffman.o.valid
        m.d.comb += [
            write.ready.eq(Mux(to_stream, huffman.stream_ready, to_table | ~decoded)),
            huffman.table_en.eq(write.valid & to_table & (chunk.addr < HUFFMAN_TABLE_BYTES)),
            huffman.table_addr.eq(chunk.addr),
            huffman.table_data.eq(chunk.data[:8]),
            huffman.stream_en.eq(write.valid & to_stream),
            huffman.stream_addr.eq(chunk.addr),
            huffman.stream_data.eq(chunk.data[:8]),
            huffman.o.ready.eq(1),
            huffman.abort.eq(self.abort),
            huffman.clear_error.eq(self.clear_error),
            self.huffman_busy.eq(huffman.busy),
            self.huffman_error.eq(huffman.error),
            engine.valid.eq(decoded | (write.valid & ~to_table & ~to_stream)),
            engine.payload.space.eq(Mux(decoded, BufferSpace.WEIGHT, chunk.space)),
            engine.payload.addr.eq(Mux(decoded, huffman.o.payload[8:], chunk.addr)),
            engine.payload.data.eq(Mux(decoded, huffman.o.payload[:8], chunk.data)),
            engine.payload.count.eq(Mux(decoded, 1, chunk.count)),
        ]
        return m

    def _master(self, m):
        """The chunk and the read request that go on to the engine's side: the link's, or the
        sequencer's while it is active (its HostSpace transfers go to the link instead)."""
        link_write, link_read = self.link_write, self.link_read
        if not self.resident:
            return link_write, link_read
        write = write_signature(self.config).create(path=("master_write",))
        read = read_signature(self.config).create(path=("master_read",))
        active = self.active
        seq_write, seq_read = self.sequencer_write, self.sequencer_read
        to_host = seq_write.payload.space >= min(HostSpace)
        from_host = seq_read.request.payload.space >= min(HostSpace)
        engine_response, host_response = self.engine_read.response, self.host_read.response
        m.d.comb += [
            write.valid.eq(Mux(active, seq_write.valid & ~to_host, link_write.valid)),
            write.payload.eq(Mux(active, seq_write.payload, link_write.payload)),
            link_write.ready.eq(write.ready),
            seq_write.ready.eq(to_host | write.ready),
            read.request.valid.eq(
                Mux(active, seq_read.request.valid & ~from_host, link_read.request.valid)
            ),  # fmt: skip
            read.request.payload.eq(
                Mux(active, seq_read.request.payload, link_read.request.payload)
            ),  # fmt: skip
            self.host_write.valid.eq(active & seq_write.valid & to_host),
            self.host_write.payload.eq(seq_write.payload),
            self.host_read.request.valid.eq(active & seq_read.request.valid & from_host),
            self.host_read.request.payload.eq(seq_read.request.payload),
            seq_read.response.valid.eq(engine_response.valid | host_response.valid),
            seq_read.response.payload.data.eq(
                Mux(host_response.valid, host_response.payload.data, engine_response.payload.data)
            ),
            seq_read.response.payload.block.eq(
                Mux(host_response.valid, host_response.payload.block, engine_response.payload.block)
            ),
        ]
        return write, read
