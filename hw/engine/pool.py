"""The engine's MAXPOOL / bypass ADD / AVGPOOL datapath and its output-buffer writeback.

``ConvEngine`` (``hw/engine.py``) feeds :class:`PoolUnit` the stage-1b token of every tap,
vector or pixel a pool/add run issues and joins the unit's writes and the CONV
:class:`~hw.engine.parts.Accumulator`'s results in :class:`Writeback`, the one writer of the
output buffer::

    address generator --tokens--> PoolUnit --writes--+
                                                      +--> Writeback --write--> ACT_OUT
                      ... Accumulator --results-------+

As in ``hw/engine_parts.py`` the streams are fixed-latency pipelines (``always_ready``, ``valid``
marks the cycles that carry a token) and each block's latency is the cycle model's figure
(``fpga.spec.layout``), measured by its test (``tests/hw/test_pool.py``).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from fpga.spec import golden
from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import (
    ADD_LATENCY,
    AVGPOOL_LATENCY,
    MAXPOOL_LATENCY,
    POOL_INPUT_LATENCY,
    WRITEBACK_LATENCY,
    Op,
    add_cycles_per_vector,
    add_latency,
)
from hw.engine.array import Multiplier, delayed
from hw.engine.parts import results_signature
from hw.engine.requant import round_shifted, shift_halved


def pool_tag(config: AcceleratorConfig) -> data.StructLayout:
    """What a pool/add token carries besides its vectors: first/last tap pair of its MAXPOOL window
    (first/last pixel of its AVGPOOL channel group; both set for an ADD vector) and its
    output-buffer word (MAXPOOL and ADD)."""
    return data.StructLayout(
        {"first": 1, "last": 1, "out_addr": unsigned(config.act_out_word_bits)}
    )


def tokens_signature(config: AcceleratorConfig) -> stream.Signature:
    """One stage-1b token of a pool/add run: the activation vector as the pools see it (a
    MAXPOOL tap in the padding reads the smallest activation, which never wins a max), the
    ADD's second operand vector (MAXPOOL: the second tap, right of the first; the smallest
    activation outside the image or the window) and the token's tag."""
    vector = data.ArrayLayout(signed(config.act_bits), config.rows)
    return stream.Signature(
        data.StructLayout({"act": vector, "b": vector, "tag": pool_tag(config)}),
        always_ready=True,
    )


def write_signature(config: AcceleratorConfig) -> memory.WritePort.Signature:
    """The output buffer's write port (ACT_OUT: ``cols`` bytes a word, one enable)."""
    return memory.WritePort.Signature(
        addr_width=config.act_out_word_bits, shape=unsigned(config.act_bits * config.cols)
    )


class PoolUnit(wiring.Component):
    """MAXPOOL, the bypass ADD and AVGPOOL: stage-1b ``tokens`` -> output-buffer ``writes``.

    The run's ``op`` selects the datapath; ``relu``, ``mult_a``, ``mult_b`` and ``shift`` are
    the run's descriptor fields (constant during a run; ``op`` from the cycle of ``start`` on,
    with the run's first token at least a cycle later); ``start`` marks a run's start. The
    unit first registers each token beside its datapaths (``POOL_INPUT_LATENCY``, 1 cycle,
    counted in the latencies below).

    * MAXPOOL: per lane the max of the token's two taps (``act``, ``b``), registered, then a
      running max over a window's tap pairs (``first`` restarts it); the last pair's max
      leaves, at the token's ``out_addr``, ``MAXPOOL_LATENCY`` (6) cycles later.
    * ADD: ``clamp((a * mult_a + b * mult_b + round) >> shift)`` per lane (exactly
      :func:`fpga.spec.golden.add`), a vector every ``add_cycles_per_vector`` (2) cycles at most:
      its lanes go through ``rows / add_cycles_per_vector`` multiplier pairs (DSPs), half
      ``h`` selected in cycle ``h`` after the registered token and registered beside the
      multipliers, then the multipliers (:class:`~hw.engine.array.Multiplier`: operand, product,
      output registers), the products registered again beside their sum, the sum, the shift
      (:func:`hw.engine.requant.shift_halved`, two stages), the rounding and clamp
      (:func:`hw.engine.requant.round_shifted`): no stage is more than an adder, half the shifter or
      the clamp deep, and no path runs from fabric through a multiplier. Half ``h``'s lanes are in
      the output word ``ADD_LATENCY`` (10) cycles after their cycle; the word leaves at the token's
      ``out_addr`` :func:`fpga.spec.layout.add_latency` (12) cycles after the token.
    * AVGPOOL: int32 sums per lane over a channel group's pixels (``first`` restarts them); the
      group's last pixel snapshots them, and its ``sum_words`` (4) words (lane ``c``'s sum
      little-endian at byte ``4c``) leave one per cycle from ``AVGPOOL_LATENCY`` (2) cycles
      after it, at words ``sum_words * g ...`` for the run's ``g``-th group. The next token
      may come ``sum_words`` cycles after a group's last (the engine stalls its issue).

    ``latency[op]``: token -> its (first) output word; ``last_write[op]``: the last token of a
    run -> the run's last output word (the engine's drain).
    """

    max_latency = MAXPOOL_LATENCY
    avgpool_latency = AVGPOOL_LATENCY

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        self.lanes = config.rows  # == cols (checked by the config)
        #: cycles an ADD vector takes (its halves through the multipliers one per cycle)
        self.add_phases = add_cycles_per_vector(config)
        self.add_latency = add_latency(config)
        #: AVGPOOL: output words per channel group (``rows`` int32 sums)
        self.sum_words = config.acc_bits // config.act_bits
        self.latency = {
            Op.MAXPOOL: self.max_latency,
            Op.ADD: self.add_latency,
            Op.AVGPOOL: self.avgpool_latency,
        }
        self.last_write = dict(self.latency)
        self.last_write[Op.AVGPOOL] += self.sum_words - 1
        super().__init__(
            {
                "tokens": In(tokens_signature(config)),
                "op": In(Op),
                "relu": In(1),
                "mult_a": In(unsigned(golden.MULT_BITS)),
                "mult_b": In(unsigned(golden.MULT_BITS)),
                "shift": In(range(golden.MAX_SHIFT + 1)),
                "start": In(1),
                "writes": Out(results_signature(config)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        act, lanes = self.config.act_bits, self.lanes
        token, valid, is_op = self._input_registers(m)
        # latencies below count from the registered token (MAXPOOL: from its pair's max, a
        # register after it)
        max_delay = self.max_latency - POOL_INPUT_LATENCY - 1
        add_delay = self.add_latency - POOL_INPUT_LATENCY

        # the output word of MAXPOOL (the max, its last register) and of ADD (the lanes as
        # their halves finish)
        result = Signal(act * lanes)
        max_tag = delayed(m, token[Op.MAXPOOL], 1, "max_pair_tag")  # with the pair's max
        max_valid = delayed(m, valid[Op.MAXPOOL], 1, "max_pair_valid")
        add_tag = token[Op.ADD].tag
        max_done = max_valid & max_tag.last
        add_done = valid[Op.ADD] & add_tag.last
        max_write = delayed(m, max_done, max_delay, "max_write")
        add_write = delayed(m, add_done, add_delay, "add_write")
        result_valid = max_write | add_write
        result_addr = Mux(
            is_op[Op.ADD],
            delayed(m, add_tag.out_addr, add_delay, "add_out"),
            delayed(m, max_tag.out_addr, max_delay, "max_out"),
        )

        self._add_datapath(m, token[Op.ADD], valid[Op.ADD], is_op[Op.ADD], result)
        snapshot = self._max_and_sums(
            m, token[Op.AVGPOOL], valid, is_op, max_tag.first, max_valid, max_delay, result
        )
        flushing, flush_index, flush_group = self._avgpool_flush(m, token[Op.AVGPOOL], valid)

        # -- the unit's one write stream: the flush (AVGPOOL) or the result word
        words = self.sum_words
        writes = self.writes
        with m.If(is_op[Op.AVGPOOL]):
            m.d.comb += [
                writes.valid.eq(flushing),
                writes.payload.addr.eq((flush_group << exact_log2(words)) + flush_index),
                writes.payload.data.eq(snapshot.word_select(flush_index, act * lanes)),
            ]
        with m.Else():
            m.d.comb += [
                writes.valid.eq(result_valid),
                writes.payload.addr.eq(result_addr),
                writes.payload.data.eq(result),
            ]
        return m

    def _input_registers(self, m: Module) -> tuple[dict, dict, dict]:
        """The input register (``POOL_INPUT_LATENCY``): per op (MAXPOOL, ADD, AVGPOOL) a copy of
        the token, its valid and the op's one-hot flag; returns the three as dicts by op.

        A copy of the token per op, each beside its own datapath and loaded only under its op
        (so Yosys keeps the copies apart). One register for all three sat between them, and
        its route to the running max was the 8x8 SoC's engine critical path (3.9 ns of 10.3).
        The op's one-hot flags are this unit's own registers: they settle the cycle after
        ``start``, before the run's first token, and the op does not change until the run is
        done."""
        op = self.op
        assert POOL_INPUT_LATENCY == 1
        # (MAXPOOL's copy carries the tag only: its activations are loaded into the running
        # max's taps below, flipped.)
        token, valid, is_op = {}, {}, {}
        for kind in (Op.MAXPOOL, Op.ADD, Op.AVGPOOL):
            name = kind.name.lower()
            is_op[kind] = Signal(name=f"is_{name}")
            carried = self.tokens.payload if kind != Op.MAXPOOL else self.tokens.payload.tag
            token[kind] = Signal(carried.shape(), name=f"{name}_token")
            valid[kind] = Signal(name=f"{name}_valid")
            m.d.sync += [
                is_op[kind].eq(op == kind),
                valid[kind].eq(self.tokens.valid & is_op[kind]),
            ]
            with m.If(is_op[kind]):
                m.d.sync += token[kind].eq(carried)
        return token, valid, is_op

    def _add_datapath(self, m: Module, add_token, add_valid, is_add, result: Signal) -> None:
        """ADD: a half of the lanes per cycle through ``lanes / add_phases`` multiplier pairs
        (one DSP each: an operand times a 16-bit multiplier); the first half is selected with
        the registered token ``add_token`` (``add_valid``), the rest (held in registers) in the
        following cycles. Each half's clamped lanes are written into ``result`` (the output
        word) ``ADD_LATENCY`` cycles after its cycle, while ``is_add``."""
        act, lanes = self.config.act_bits, self.lanes
        phases = self.add_phases
        product_shape = signed(act + golden.MULT_BITS + 1)
        units = lanes // phases
        phase_valid = [add_valid]  # half h's operands are at the multipliers
        a_lanes = [add_token.act[i] for i in range(lanes)]
        b_lanes = [add_token.b[i] for i in range(lanes)]
        held_a, held_b = a_lanes[units:], b_lanes[units:]
        for h in range(1, phases):
            held_a = [delayed(m, value, 1, f"add_held_a_{h}_{k}") for k, value in enumerate(held_a)]
            held_b = [delayed(m, value, 1, f"add_held_b_{h}_{k}") for k, value in enumerate(held_b)]
            phase_valid.append(delayed(m, phase_valid[-1], 1, f"add_phase_{h}"))
        phase = Signal(range(phases))
        for h in range(1, phases):
            with m.If(phase_valid[h]):
                m.d.comb += phase.eq(h)
        # the half of the lanes in the last stage (the rounding and clamp)
        clamp_delay = ADD_LATENCY - 1
        clamp_valid = delayed(m, phase_valid[0] | (phase != 0), clamp_delay, "add_clamp_valid")
        clamp_phase = delayed(m, phase, clamp_delay, "add_clamp_phase")
        for u in range(units):
            operand_a = [a_lanes[u], *held_a[u::units]]
            operand_b = [b_lanes[u], *held_b[u::units]]
            a = Signal(signed(act), name=f"add_a_{u}", reset_less=True)
            b = Signal(signed(act), name=f"add_b_{u}", reset_less=True)
            with m.Switch(phase):
                for h in range(phases):
                    with m.Case(h):
                        m.d.sync += [a.eq(operand_a[h]), b.eq(operand_b[h])]
            products = []
            for name, operand, factor in (("a", a, self.mult_a), ("b", b, self.mult_b)):
                multiplier = Multiplier(operand.shape(), factor.shape(), product_shape)
                m.submodules[f"add_mult_{name}_{u}"] = multiplier
                m.d.comb += [multiplier.a.eq(operand), multiplier.b.eq(factor)]
                # the product registered again in fabric, beside the sum: the route from the
                # DSP's output register to the sum's carry chain was the engine's critical path
                # alone (5.95 ns of 7.88 routing; the DSP columns are far from the fabric)
                products.append(delayed(m, multiplier.product, 1, f"add_product_{name}_{u}"))
            total = Signal(signed(product_shape.width + 1), name=f"add_total_{u}")
            m.d.sync += total.eq(products[0] + products[1])
            halved = shift_halved(m, total, self.shift, f"add_shift_{u}")
            clamped = round_shifted(m, halved, self.relu, act, f"add_round_{u}")
            with m.If(is_add & clamp_valid):
                with m.Switch(clamp_phase):
                    for h in range(phases):
                        with m.Case(h):
                            lane = h * units + u
                            m.d.sync += result.word_select(lane, act).eq(clamped)

    def _max_and_sums(
        self, m: Module, avg, valid, is_op, max_first, max_valid, max_delay, result: Signal
    ) -> Signal:
        """MAXPOOL: the max of the token's two taps (``act`` and ``b``: two of a window row), then
        the running max (restarted by ``max_first``, stepped while ``max_valid``, the pair's
        registered tag and valid); the last pair's rides along through ``max_delay - 1``
        registers into ``result``. AVGPOOL: the running sums over the registered tokens
        ``avg``, snapshot at a group's last pixel; returns the snapshot register.

        The running max holds its lanes in offset binary (the sign bit flipped: an unsigned
        value in the same order), so its compare is one unsigned carry chain: Yosys's signed
        compare fed its result out of the chain through a second one and two more LUTs, and
        this loop (max -> compare -> select -> max) had been the engine's critical path alone
        (9.1 ns). The taps are loaded flipped beside it; the result flips back."""
        cfg, lanes, act = self.config, self.lanes, self.config.act_bits
        sign = 1 << (act - 1)
        max_taps = [Signal(unsigned(act), name=f"max_tap_{i}") for i in range(lanes)]
        b_taps = [Signal(unsigned(act), name=f"max_b_tap_{i}") for i in range(lanes)]
        pairs = [Signal(unsigned(act), name=f"max_pair_{i}") for i in range(lanes)]
        with m.If(is_op[Op.MAXPOOL]):
            m.d.sync += [
                *[
                    tap.eq(self.tokens.payload.act[i].as_unsigned() ^ sign)
                    for i, tap in enumerate(max_taps)
                ],
                *[
                    tap.eq(self.tokens.payload.b[i].as_unsigned() ^ sign)
                    for i, tap in enumerate(b_taps)
                ],
            ]
        m.d.sync += [
            pair.eq(Mux(b_tap > a_tap, b_tap, a_tap))
            for pair, a_tap, b_tap in zip(pairs, max_taps, b_taps, strict=True)
        ]
        pool_max = [Signal(unsigned(act), name=f"max_{i}") for i in range(lanes)]
        sums = [Signal(signed(cfg.acc_bits), name=f"sum_{i}") for i in range(lanes)]
        snapshot = Signal(cfg.acc_bits * lanes)
        for i in range(lanes):
            tap_value = pairs[i]  # (the smallest activation outside the image: 0 here)
            best = Mux(max_first | (tap_value > pool_max[i]), tap_value, pool_max[i])
            sum_next = Mux(avg.tag.first, avg.act[i], sums[i] + avg.act[i])
            max_ready = delayed(m, best, max_delay - 1, f"max_{i}")
            with m.If(~is_op[Op.ADD]):
                m.d.sync += result.word_select(i, act).eq(max_ready ^ sign)
            with m.If(max_valid):
                m.d.sync += pool_max[i].eq(best)
            with m.If(valid[Op.AVGPOOL]):
                m.d.sync += sums[i].eq(sum_next)
                with m.If(avg.tag.last):
                    m.d.sync += snapshot.word_select(i, cfg.acc_bits).eq(sum_next)
        return snapshot

    def _avgpool_flush(self, m: Module, avg, valid) -> tuple[Signal, Signal, Signal]:
        """AVGPOOL flush: ``sum_words`` words per group from the snapshot, from the cycle after
        the group's last pixel reached the registered token ``avg`` (``AVGPOOL_LATENCY``).
        Returns ``flushing`` (a word this cycle), ``flush_index`` (its word in the group) and
        ``flush_group`` (the run's groups so far, modulo the buffer)."""
        assert self.avgpool_latency == POOL_INPUT_LATENCY + 1  # the snapshot register
        words = self.sum_words
        flush_group = Signal(unsigned(self.config.act_out_word_bits))  # the run's groups, modulo
        flushing = Signal()
        flush_index = Signal(range(words))
        m.d.sync += flushing.eq(0)
        with m.If(valid[Op.AVGPOOL] & avg.tag.last):
            m.d.sync += [flushing.eq(1), flush_index.eq(0)]
        with m.If(flushing & (flush_index != words - 1)):
            m.d.sync += [flushing.eq(1), flush_index.eq(flush_index + 1)]
        with m.If(flushing & (flush_index == words - 1)):
            m.d.sync += flush_group.eq(flush_group + 1)
        with m.If(self.start):
            m.d.sync += flush_group.eq(0)
        return flushing, flush_index, flush_group


class Writeback(wiring.Component):
    """The output buffer's one writer: the run's ``op`` chooses which unit drives the ACT_OUT
    write port ``write``: the CONV accumulator's ``conv`` results, or the pool/add unit's
    ``pool`` writes (MAXPOOL, ADD, AVGPOOL). A selected stream's valid cycle is a write of its
    word at its address :data:`~fpga.spec.layout.WRITEBACK_LATENCY` cycles later: the port's enable,
    address and word are registered, so the select (and the op register that drives it) ends in
    this register and not in the block RAMs' write ports, spread over the die (the 8x8 SoC's
    engine critical path placed for 100 MHz: 11 ns of routing).

    A SPLIT run (``fpga.spec.commands``) writes one half of ACT_OUT: ``confine`` (the run is
    SPLIT) drops a write whose address is in the upper half and raises ``outside`` in the cycle
    its result arrives (the run leaves its half: an engine error), and ``upper`` (the run's half
    is the upper one) flips the top address bit of every write (``run_address``), both in front
    of the same register."""

    latency = WRITEBACK_LATENCY

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__(
            {
                "conv": In(results_signature(config)),
                "pool": In(results_signature(config)),
                "op": In(Op),
                "confine": In(1),
                "upper": In(1),
                "write": Out(write_signature(config).flip()),
                "outside": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        write = self.write
        top = self.config.act_out_word_bits - 1
        for chosen, when in ((self.conv, self.op == Op.CONV), (self.pool, self.op != Op.CONV)):
            leaves = chosen.payload.addr[top] & self.confine
            with m.If(when):
                m.d.comb += self.outside.eq(chosen.valid & leaves)
                m.d.sync += [
                    write.en.eq(chosen.valid & ~leaves),
                    write.addr.eq(chosen.payload.addr ^ (self.upper << top)),
                    write.data.eq(chosen.payload.data),
                ]
        return m
