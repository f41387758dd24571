"""Components of the conv engine's CONV datapath, each with its latency.

``ConvEngine`` (``hw/engine.py``) chains them with ``amaranth.lib.stream`` interfaces joined by
``wiring.connect``::

    address generator --operands--> MacArray --sums--> Accumulator --results--> output buffer
                          ^ weight buffer (int8) <--weights-- WeightDecoder <--indices-- host writes

The streams are fixed-latency pipelines: ``always_ready`` (no backpressure), ``valid`` marks
the cycles that carry a tap. Everything a tap needs downstream travels with it as one
:func:`tap_tag` token (``data.StructLayout``), delayed as a whole, never signal by signal.
Each block's ``latency`` is the cycle model's figure (``fpga.spec.layout``), measured by its test.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import (
    ACCUMULATOR_LATENCY,
    CODEBOOK_ENTRIES,
    WEIGHT_DECODE_LATENCY,
    params_fields,
    transfer_bytes,
)
from hw.engine.array import delayed, partial_sum_bits
from hw.engine.requant import Requantizer

#: a codebook index (one byte per index in the weight buffer)
INDEX_BITS = (CODEBOOK_ENTRIES - 1).bit_length()
#: one output channel's parameters, as :data:`fpga.spec.layout.PARAMS_RECORD` packs them
PARAM_LAYOUT = data.StructLayout(
    {name: (signed if is_signed else unsigned)(width) for name, width, is_signed in params_fields()}
)


def tap_tag(config: AcceleratorConfig) -> data.StructLayout:
    """What a CONV tap carries besides its operands: first/last tap of its output pixel, the
    pixel's output-buffer word and its output-channel block (parameter memory word)."""
    return data.StructLayout(
        {
            "first": 1,
            "last": 1,
            "out_addr": unsigned(config.act_out_word_bits),
            "block": unsigned(config.param_word_bits),
        }
    )


def operands_signature(config: AcceleratorConfig) -> stream.Signature:
    """One tap: ``rows`` activations, ``rows x cols`` weights (lane ``r*cols + c``), its tag."""
    return stream.Signature(
        data.StructLayout(
            {
                "act": data.ArrayLayout(signed(config.act_bits), config.rows),
                "weight": data.ArrayLayout(signed(config.weight_bits), config.pes),
                "tag": tap_tag(config),
            }
        ),
        always_ready=True,
    )


def sums_signature(config: AcceleratorConfig) -> stream.Signature:
    """One tap's ``cols`` column sums (``sum_r act[r] * weight[r, c]``) and its tag."""
    sum_bits = partial_sum_bits(config.rows, config.product_bits)
    return stream.Signature(
        data.StructLayout(
            {
                "sums": data.ArrayLayout(signed(sum_bits), config.cols),
                "tag": tap_tag(config),
            }
        ),
        always_ready=True,
    )


def results_signature(config: AcceleratorConfig) -> stream.Signature:
    """One output pixel's ``cols`` requantized int8 channels and its output-buffer word."""
    return stream.Signature(
        data.StructLayout(
            {
                "addr": unsigned(config.act_out_word_bits),
                "data": data.ArrayLayout(signed(config.act_bits), config.cols),
            }
        ),
        always_ready=True,
    )


def weight_chunk_layout(config: AcceleratorConfig, lane: data.Layout) -> data.StructLayout:
    """One chunk written into the weight buffer: its word, the byte lanes it enables (one bit
    per PE) and ``transfer_bytes`` lanes of ``lane`` (replicated across the word's blocks)."""
    return data.StructLayout(
        {
            "addr": unsigned(config.weight_word_bits),
            "enable": unsigned(config.pes),
            "lanes": data.ArrayLayout(lane, transfer_bytes(config)),
        }
    )


class WeightDecoder(wiring.Component):
    """Codebook indices -> int8 weights, once per weight, on the weight buffer's write side.

    A chunk of up to ``transfer_bytes`` indices (``indices``: the word address, byte enables
    and the indices) is registered, then each lane looks its index up in a copy of the
    256-entry codebook (``weights``: the same word and enables, int8 weights), which the
    engine writes into the weight buffer. The buffer then holds each weight decoded, and the
    array reads it straight from block RAM: no codebook copy per PE. ``transfer_bytes`` copies
    (8 on 8 x 8, was one per PE: 64), each with one write and one asynchronous read port:
    exactly a distributed-RAM primitive (8 x RAM256X1S on Xilinx). The host's codebook write
    (``codebook_*``, a byte per cycle) goes to every copy; a chunk is decoded under every
    codebook write before it and none after it (the engine's one write port carries either).
    Latency ``WEIGHT_DECODE_LATENCY`` (1): ``indices`` -> ``weights``.
    """

    latency = WEIGHT_DECODE_LATENCY

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        self.lanes = transfer_bytes(config)
        super().__init__(
            {
                "indices": In(
                    stream.Signature(
                        weight_chunk_layout(config, unsigned(INDEX_BITS)), always_ready=True
                    )
                ),
                "weights": Out(
                    stream.Signature(
                        weight_chunk_layout(config, signed(config.weight_bits)), always_ready=True
                    )
                ),
                "codebook_en": In(1),
                "codebook_addr": In(INDEX_BITS),
                "codebook_data": In(config.weight_bits),
            }
        )

    def elaborate(self, platform):
        m = Module()
        chunk = Signal.like(self.indices.payload)
        valid = Signal()
        m.d.sync += [chunk.eq(self.indices.payload), valid.eq(self.indices.valid)]
        m.d.comb += [
            self.weights.valid.eq(valid),
            self.weights.payload.addr.eq(chunk.addr),
            self.weights.payload.enable.eq(chunk.enable),
        ]
        for i in range(self.lanes):
            table = Memory(shape=signed(self.config.weight_bits), depth=CODEBOOK_ENTRIES, init=[])
            m.submodules[f"codebook_{i}"] = table
            write = table.write_port()
            m.d.comb += [
                write.addr.eq(self.codebook_addr),
                write.data.eq(self.codebook_data),
                write.en.eq(self.codebook_en),
            ]
            lookup = table.read_port(domain="comb")
            m.d.comb += [
                lookup.addr.eq(chunk.lanes[i]),
                self.weights.payload.lanes[i].eq(lookup.data),
            ]
        return m


class Accumulator(wiring.Component):
    """Accumulate + requantize: column sums of a pixel's taps -> its int8 output word.

    A column's accumulator starts at its channel's bias with the pixel's first tap and adds
    every tap's sum; after the last tap the final sum goes, with the channel's multiplier and
    shift, through the column's :class:`~hw.engine.requant.Requantizer`. The block's parameters are
    read from the parameter memory (``param_addr`` -> ``params`` one cycle later, the memory's
    read latency) and registered twice, so sums and tags wait three registers for them. Stages:
    parameter read (the sums registered), parameters registered at the RAM (its output
    register on ECP5), parameters registered again beside the accumulators (no path from the
    RAM through the accumulate adder), accumulate into the final-sum register, requantizer
    (``REQUANT_LATENCY``). Latency tap -> result: ``ACCUMULATOR_LATENCY`` after the last tap.
    """

    latency = ACCUMULATOR_LATENCY

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__(
            {
                "sums": In(sums_signature(config)),
                "relu": In(1),
                "param_addr": Out(config.param_word_bits),
                "params": In(data.ArrayLayout(PARAM_LAYOUT, config.cols)),
                "results": Out(results_signature(config)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        # stage 1: the block's parameters are read while the sums wait a register
        m.d.comb += self.param_addr.eq(self.sums.payload.tag.block)
        read = Signal.like(self.sums.payload)
        read_valid = Signal()
        m.d.sync += [read.eq(self.sums.payload), read_valid.eq(self.sums.valid)]
        # stage 1b: the parameters registered (no reset: on ECP5 the build makes this register
        # the parameter RAM's output register, fpga.build.ecp5_outreg), the sums wait another
        # register
        params_out = Signal.like(self.params, reset_less=True)
        held = Signal.like(self.sums.payload)
        held_valid = Signal()
        m.d.sync += [params_out.eq(self.params), held.eq(read), held_valid.eq(read_valid)]
        # stage 1c: the parameters registered again beside the accumulators (the route from the
        # parameter RAM is long, the bias add behind it a 32-bit carry chain), the sums wait
        params = Signal.like(self.params, reset_less=True)
        taps = Signal.like(self.sums.payload)
        taps_valid = Signal()
        m.d.sync += [params.eq(params_out), taps.eq(held), taps_valid.eq(held_valid)]
        # stage 2: accumulate; the final sum and its parameters are registered (no path from
        # the parameter RAM through the accumulate adder into the requantizer's multiplier)
        start = Signal()  # the final sums are registered: requantize
        m.d.sync += start.eq(taps_valid & taps.tag.last)
        requantizers = []
        for c in range(cfg.cols):
            channel = params[c]
            accumulator = Signal(signed(cfg.acc_bits), name=f"acc_{c}")
            total = Signal.like(accumulator, name=f"total_{c}")
            first = taps.tag.first
            m.d.comb += total.eq(Mux(first, channel.bias, accumulator) + taps.sums[c])
            with m.If(taps_valid):
                m.d.sync += accumulator.eq(total)
            rq = Requantizer(cfg.acc_bits, cfg.act_bits)
            m.submodules[f"requant_{c}"] = rq
            requantizers.append(rq)
            final = Signal.like(rq.acc, name=f"final_{c}")
            final_mult = Signal.like(rq.multiplier, name=f"final_mult_{c}")
            final_shift = Signal.like(rq.shift, name=f"final_shift_{c}")
            m.d.sync += [
                final.eq(total),
                final_mult.eq(channel.multiplier),
                final_shift.eq(channel.shift),
            ]
            m.d.comb += [
                rq.acc.eq(final),
                rq.multiplier.eq(final_mult),
                rq.shift.eq(final_shift),
                rq.relu.eq(self.relu),
                rq.valid.eq(start),
            ]
            m.d.comb += self.results.payload.data[c].eq(rq.result)
        out_addr = delayed(m, taps.tag.out_addr, 1 + Requantizer.latency, "result_addr")
        m.d.comb += [
            self.results.payload.addr.eq(out_addr),
            self.results.valid.eq(requantizers[0].result_valid),
        ]
        return m
