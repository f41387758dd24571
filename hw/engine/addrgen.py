"""The engine's address generator: the layer sequencer and window generator of a run.

``ConvEngine`` (``hw/engine.py``) hands :class:`AddressGenerator` its copy of the run's
descriptor and the run's ``start``; the generator issues one tap (CONV, MAXPOOL), operand
vector (ADD) or pixel (AVGPOOL) per cycle: the buffer read addresses, registered
(``ADDRESS_LATENCY``, 1 cycle after the issue), and, ``BUFFER_LATENCY`` (1) cycle after them,
with the buffers' data, the stage-1 ``tokens`` stream::

    descriptor, start --> AddressGenerator --addresses--> ACT_IN (two ports), WEIGHT
                                           --tokens-----> stage 1b -> MacArray / PoolUnit

As in ``hw/engine_parts.py`` the stream is a fixed-latency pipeline (``always_ready``, ``valid``
marks the cycles that carry a token) and the latencies are the cycle model's figures
(``fpga.spec.layout``), measured by the generator's test (``tests/hw/test_addrgen.py``).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import (
    ADDRESS_LATENCY,
    BUFFER_LATENCY,
    MAXPOOL_ROW_ISSUES,
    SETUP_CYCLES,
    LayerDescriptor,
    Op,
    add_cycles_per_vector,
)

#: widths the descriptor's small fields need (the fields are bytes)
OP_BITS = max(Op).bit_length()
MAX_KERNEL = 3  # 3x3 convolutions and 3x3/2 max-pooling; strides 1 and 2
KERNEL_BITS = MAX_KERNEL.bit_length()
#: a window coordinate: a descriptor size, minus padding, plus a kernel offset
_COORDINATE = signed(8 * LayerDescriptor.field_offsets()["in_h"][1] + KERNEL_BITS + 1)


def descriptor_layout() -> data.StructLayout:
    """The packed :class:`fpga.spec.layout.LayerDescriptor` (its fields, without the trailing
    padding bytes) as a ``data.StructLayout``: field ``name`` is
    ``LayerDescriptor.field_offsets()[name]``'s bytes, little-endian."""
    fields, position = {}, 0
    for name, (offset, width) in LayerDescriptor.field_offsets().items():
        assert offset == position, name  # packed without gaps ("<" format)
        fields[name] = unsigned(8 * width)
        position += width
    return data.StructLayout(fields)


DESCRIPTOR_LAYOUT = descriptor_layout()

#: a SPLIT run's upper halves among the buffers the generator addresses
#: (``fpga.spec.commands.run_address``): a set bit flips the top bit of every address into that
#: buffer, ACT_IN's two read addresses, WEIGHT's, and the token's ``block`` (the PARAMS word)
UPPER_LAYOUT = data.StructLayout({"act_in": 1, "weight": 1, "params": 1})


def _top_bit(flag, width: int) -> Value:
    """``flag`` as the top bit of a ``width``-bit value (what an XOR flips into the upper half)."""
    return Cat(Const(0, width - 1), flag)


def token_layout(config: AcceleratorConfig) -> data.StructLayout:
    """What an issued tap carries down the pipeline (stage 1): its tap inside the image
    (CONV/MAXPOOL; padding otherwise), MAXPOOL's second tap (``b_addr``'s) inside the image and the
    window, first/last tap of its output pixel (MAXPOOL window, AVGPOOL channel group; both set for
    an ADD vector), its output-buffer word (CONV, MAXPOOL, ADD) and its output-channel block (CONV:
    parameter memory word)."""
    return data.StructLayout(
        {
            "in_bounds": 1,
            "b_in_bounds": 1,
            "first": 1,
            "last": 1,
            "out_addr": unsigned(config.act_out_word_bits),
            "block": unsigned(config.param_word_bits),
        }
    )


def tokens_signature(config: AcceleratorConfig) -> stream.Signature:
    return stream.Signature(token_layout(config), always_ready=True)


#: loops in the generator's nest (see AddressGenerator._loop_counters's table)
LEVELS = 6


class _Counter:
    """A loop counter of the address generator and its "at the last value" and "at 0" flags,
    kept in registers beside it, so that no compare sits between the counters and the logic
    they steer. ``limit`` is the run's last value (a register, constant while issuing); the
    flag of a step is ``value == limit - 1`` (``limit - 1`` registered once per run).

    Assign the counter only through :meth:`restart` and :meth:`step` (which add their
    statements to ``m`` in the current control context); :meth:`load` sets the flags of value
    0 once the run's limit is registered (the last setup cycle)."""

    def __init__(self, m: Module, shape, name: str, limit):
        self._m = m
        self.value = Signal(shape, name=f"c_{name}")
        self.last = Signal(name=f"last_{name}")
        self.first = Signal(name=f"first_{name}")
        limit_m1 = Signal(len(limit), name=f"{name}_limit_m1")
        self._zero = Signal(name=f"{name}_limit_zero")
        self._step_last = self.value == limit_m1
        m.d.sync += [limit_m1.eq(limit - 1), self._zero.eq(limit == 0)]

    def restart(self) -> None:
        self._m.d.sync += [self.value.eq(0), self.last.eq(self._zero), self.first.eq(1)]

    def step(self) -> None:
        self._m.d.sync += [
            self.value.eq(self.value + 1),
            self.last.eq(self._step_last),
            self.first.eq(0),
        ]

    def load(self) -> None:
        self._m.d.sync += [self.last.eq(self._zero), self.first.eq(1)]


@dataclass
class _Moves:
    """The move of an issue's addresses, registered in the cycle after the issue: ``load`` the
    run's first values; ``step[i]`` level i steps (one-hot, or none); ``rebase[i]`` level i
    steps or restarts (or ``load``); ``hold`` no move."""

    load: Signal
    step: list
    rebase: list
    hold: Signal


class _Stream:
    """One of an issue's addresses (or window coordinates), an affine function of the loop
    counters (``first`` + the sum of counter i times ``strides[i]``, modulo ``2**width``),
    in a register ``value`` that follows the issue by one cycle.

    Per level i with a stride inside it, ``base{i}`` holds the value where the levels inside i
    last restarted. A step of level i moves ``value`` to ``base{i} + strides[i]`` (level 0:
    ``value + strides[0]``; a level without stride: to its base) and every base up to level i
    with it. ``strides`` maps a level to its per-run stride (a register or a constant); levels
    absent move nothing. As ``moves`` is a register, the next value is an AND-OR of adders of
    registers: no loop decision in front of it."""

    def __init__(self, m: Module, name: str, width: int, first, strides: dict, moves: _Moves):
        self.value = Signal(width, name=name)
        following = Signal(width, name=f"{name}_next")
        terms = [Mux(moves.load, first, 0), Mux(moves.hold, self.value, 0)]
        for i, step in enumerate(moves.step):
            if any(level in strides for level in range(i)):
                base = Signal(width, name=f"{name}_base{i}")
                with m.If(moves.rebase[i]):
                    m.d.sync += base.eq(following)
            else:
                base = self.value  # nothing inside level i moves this stream
            candidate = (base + strides[i])[:width] if i in strides else base
            terms.append(Mux(step, candidate, 0))
        m.d.comb += following.eq(functools.reduce(operator.or_, terms))
        m.d.sync += self.value.eq(following)


def _partial_products(value, factor, width: int) -> list:
    """The shifted partial products of ``value * factor`` (both unsigned) modulo ``2**width``:
    bits of ``value`` at or above ``width`` contribute nothing."""
    return [(Mux(value[bit], factor, 0) << bit)[:width] for bit in range(min(len(value), width))]


def _adder_stage(m: Module, terms: list, levels: int, name: str) -> list:
    """``levels`` levels of a balanced adder tree over ``terms`` (modulo their width), then a
    register per remaining term: one pipeline stage of a per-run product (free-running, so its
    value is right ``stages`` cycles after its operands settle).

    For products that are not worth a DSP (the per-run address products): writing ``*`` would
    make Yosys spend DSPs the PE array needs."""
    width = max(len(Value.cast(term)) for term in terms)
    for _ in range(levels):
        if len(terms) == 1:
            break
        pairs = [(terms[i] + terms[i + 1])[:width] for i in range(0, len(terms) - 1, 2)]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    registers = []
    for k, term in enumerate(terms):
        register = Signal(width, name=f"{name}_{k}")
        m.d.sync += register.eq(term)
        registers.append(register)
    return registers


@dataclass
class _RunConstants:
    """The per-run constants the loops and the address streams read: products and sums of
    descriptor fields in free-running registers (see :meth:`AddressGenerator._run_constants`;
    stage k holds its run's value k cycles after ``start``)."""

    #: ACT_IN words per input row, ``in_w * in_groups`` (stage 2)
    row_words: Signal
    #: ACT_OUT words per output row, ``out_w * (CONV: out_groups, else in_groups)`` (stage 3)
    out_row_words: Signal
    #: word address of the first window, input row -pad_top, column -pad_left (stage 4)
    first_window: Signal
    #: words between horizontally adjacent output pixels' windows (stage 2)
    pixel_step: Signal
    #: words between vertically adjacent output rows' windows (stage 3)
    row_step: Signal
    #: MAXPOOL 2, CONV its stride (stage 1)
    pool_stride: Signal
    #: the first window's top row, -pad_top (stage 1)
    top_row: Signal
    #: the first window's left column, -pad_left (stage 1)
    left_column: Signal
    #: MAXPOOL: the second tap's left column, 1 - pad_left (stage 1)
    b_left_column: Signal
    #: the counters' last values, ``field - 1`` by descriptor field name (stage 1)
    last_value: dict


def _by_op(op, values: dict, default=0):
    """A per-run value chosen by the run's ``op`` (a Mux chain on the descriptor's field)."""
    result = default
    for kind, value in values.items():
        result = Mux(op == kind, value, result)
    return result


def _kept_and(m: Module, name: str, flags: list) -> Signal:
    """The AND of at most four ``flags`` (one LUT4) in a wire Yosys keeps (``keep``)."""
    assert len(flags) <= 4  # one LUT4
    wire = Signal(name=name, attrs={"keep": 1})
    m.d.comb += wire.eq(Cat(*flags).all())
    return wire


def _stride(m: Module, op, name: str, width: int, values: dict) -> Signal:
    """A per-run stride register: ``values`` per op (ops whose level does not loop are left
    out: their stride is never used)."""
    register = Signal(width, name=f"{name}_stride")
    m.d.sync += register.eq(_by_op(op, values))
    return register


def _first(m: Module, name: str, width: int, value) -> Signal:
    """A stream's first value, a register (stage 5: moves.load is the first issue's cycle,
    SETUP_CYCLES + 1 after start)."""
    register = Signal(width, name=f"{name}_first")
    m.d.sync += register.eq(value)
    return register


class AddressGenerator(wiring.Component):
    """The run's loops over the buffers: ``descriptor`` + ``start`` -> buffer read addresses
    and the stage-1 ``tokens`` stream.

    ``descriptor`` (:data:`DESCRIPTOR_LAYOUT`) is the run's descriptor, constant from the
    ``start`` pulse to the end of the run. ``start`` begins a run: the per-run constants
    (products of descriptor fields) settle in a free-running pipeline of registers during
    ``SETUP_CYCLES`` (4) setup cycles (``setup`` high), the last of which loads the loop
    counters' flags; the first tap is issued in the cycle after it, ``setup_cycles + 1`` cycles
    after the ``start`` cycle. ``issuing`` is high from the cycle after ``start`` to the run's
    last issue (inclusive).

    Inside, every op is one nest of six loops with per-run limits, the same control for every
    op, and each address (and the window's row and column) is an affine function of the loop
    counters kept in a register of its own one cycle behind the issue (:class:`_Stream`): the
    registers that address the buffers are those streams, moved by a registered one-hot "which
    level stepped", so the read addresses are registered without a register of their own.

    ``address_latency`` (1) cycle after an issue cycle ``act_addr`` (ACT_IN: the tap, CONV/MAXPOOL;
    the operand, ADD/AVGPOOL), ``b_addr`` (ACT_IN: the ADD's second operand, ``act_addr + b_base``;
    MAXPOOL's second tap, ``act_addr + in_groups``) and ``weight_addr`` (WEIGHT, CONV) address the
    buffers; ``latency`` (2) cycles after the issue, with their data, ``tokens`` carries the issue's
    :func:`token_layout` (``valid`` high). Word addresses are modulo the buffers' depths (HWC
    activations: word ``(y * in_w + x) * in_groups + g`` from ``in_base``; weights ``(block * k*k +
    ky * k + kx) * in_groups + g``).

    * CONV: for each block, output pixel (oy, ox), tap (ky, kx) and input group g (g fastest):
      one issue per cycle, no bubbles; the tap at input ``(oy*s - pad_top + ky, ox*s -
      pad_left + kx)``, ``in_bounds`` low in the padding; ``out_addr`` ``out_group_offset +
      block + (oy * out_w + ox) * out_groups``.
    * MAXPOOL 3x3/2: for each output pixel, group g, window row ky and tap pair (kx 0 and 1,
      then 2; :data:`~fpga.spec.layout.MAXPOOL_ROW_ISSUES`), one pair per cycle: ``act_addr`` the
      tap ``kx``, ``b_addr`` the tap ``kx + 1`` (``b_in_bounds`` low outside the image and for
      the pair of kx 2); ``out_addr`` ``(oy * out_w + ox) * in_groups + g``.
    * ADD (``in_w == out_w``): for each pixel and group, word ``p``, one every ``add_phases``
      (``add_cycles_per_vector``, 2) cycles (the cycles between are the vector's other halves
      in the pool unit): ``act_addr`` ``p``, ``b_addr`` ``b_base + p``, ``out_addr`` ``p``.
    * AVGPOOL: for each group g, every input pixel ``(y, x)`` at word ``(y * in_w + x) *
      in_groups + g``, one per cycle; after each group ``sum_words`` (4) idle cycles (the pool
      unit writes the group's sums).
    """

    address_latency = ADDRESS_LATENCY  # issue -> its (registered) read addresses
    latency = ADDRESS_LATENCY + BUFFER_LATENCY  # issue -> its token (with the buffers' data)
    setup_cycles = SETUP_CYCLES  # after the start cycle, before the first issue

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        #: ADD: cycles per vector (an issue, then add_phases - 1 idle cycles)
        self.add_phases = add_cycles_per_vector(config)
        #: AVGPOOL: output words per channel group (int32 sums), idle cycles after each group
        self.sum_words = config.acc_bits // config.act_bits
        super().__init__(
            {
                "descriptor": In(DESCRIPTOR_LAYOUT),
                "start": In(1),
                "upper": In(UPPER_LAYOUT),
                "act_addr": Out(config.act_in_word_bits),
                "b_addr": Out(config.act_in_word_bits),
                "weight_addr": Out(config.weight_word_bits),
                "tokens": Out(tokens_signature(config)),
                "issuing": Out(1),
                "setup": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        # Buffer word addresses are computed modulo the buffer's depth: a read port sees only
        # the low address bits, and adds, subtracts and shifts are exact in the low bits, so
        # the window arithmetic needs no wider adders (taps in the padding compute a wrapped
        # address whose data is replaced by zero: the bounds test uses the coordinates).
        fields = {name: self.descriptor[name] for name in DESCRIPTOR_LAYOUT.members}
        op = fields["op"][:OP_BITS]
        constants = self._run_constants(m, fields)
        levels = self._loop_counters(m, fields, constants.last_value)
        active, load, carry, steps, done = self._loop_control(m, op, levels)
        moves = self._moves(m, levels, active, load, carry, steps, done)
        issued = self._issue_tags(m, op, levels, active)
        streams = self._address_streams(m, fields, constants, moves)
        self._tokens(m, fields, issued, streams)
        return m

    def _run_constants(self, m: Module, fields: dict) -> _RunConstants:
        """The per-run constants: products and sums of descriptor fields, in free-running
        registers. The descriptor does not change while busy, so stage k of this pipeline holds
        its run's value k cycles after start. The issue loop begins after SETUP_CYCLES
        (fpga.spec.layout) setup cycles; the address streams take their first values (stage 5)
        in the first issue's cycle and the strides (stage 4) from the next; each stage is at
        most two adder levels deep."""
        op = fields["op"][:OP_BITS]
        stride = fields["stride"][:KERNEL_BITS]
        groups = fields["in_groups"]
        out_w = fields["out_w"]
        out_groups = fields["out_groups"]
        in_word = unsigned(self.config.act_in_word_bits)
        out_word = unsigned(self.config.act_out_word_bits)
        in_w_raw, pad_top, pad_left = fields["in_w"], fields["pad_top"], fields["pad_left"]
        # ACT_OUT words per output pixel: CONV out_groups, else in_groups (stage 1: its op
        # decode had been in front of the out_row_words adder stage, from the descriptor's op
        # register across the engine: the engine's critical path, 8.45 ns)
        pixel_words = Signal.like(out_groups, name="pixel_words")
        m.d.sync += pixel_words.eq(Mux(op == Op.CONV, out_groups, groups))
        # stages 1-2: words per input row, pad_left * groups; stages 2-3: ACT_OUT words per
        # output row (a stride from stage 4 on)
        (row_words,) = _adder_stage(
            m,
            _adder_stage(m, _partial_products(in_w_raw, groups, in_word.width), 2, "rw_s1"),
            2,
            "row_words",
        )
        (left_offset,) = _adder_stage(
            m,
            _adder_stage(m, _partial_products(pad_left, groups, in_word.width), 2, "lo_s1"),
            2,
            "left_offset",
        )
        (out_row_words,) = _adder_stage(
            m,
            _adder_stage(m, _partial_products(out_w, pixel_words, out_word.width), 2, "orw_s1"),
            2,
            "out_row_words",
        )
        pixel_step = Signal(in_word)  # words between horizontally adjacent output pixels' windows
        row_step = Signal(in_word)  # words between vertically adjacent output rows' windows
        # stage 3: pad_top * row_words (two partial sums), in_base - pad_left * groups
        pad_rows = _adder_stage(m, _partial_products(pad_top, row_words, in_word.width), 2, "pr")
        in_left = Signal(in_word)
        # stage 4: word address of the first window (input row -pad_top, column -pad_left)
        first_window = Signal(in_word)
        m.d.sync += [
            in_left.eq(fields["in_base"] - left_offset),
            first_window.eq(in_left - pad_rows[0] - pad_rows[1]),
        ]
        assert SETUP_CYCLES == 4 and len(pad_rows) == 2
        # the counters' last values (stage 1), so no compare waits for a subtraction
        last_value = {
            name: Signal(len(fields[name]), name=f"{name}_m1")
            for name in ("in_groups", "out_w", "out_h", "blocks", "in_w", "in_h")
        }
        for name, register in last_value.items():
            m.d.sync += register.eq(fields[name] - 1)
        pool_stride = Signal(range(MAX_KERNEL))  # stage 1: MAXPOOL 2, CONV its stride
        # the first window's top row and left column, -pad_top and -pad_left (stage 1)
        top_row = Signal(_COORDINATE)
        left_column = Signal(_COORDINATE)
        b_left_column = Signal(_COORDINATE)  # MAXPOOL: the second tap's, 1 - pad_left
        m.d.sync += [
            pool_stride.eq(Mux(op == Op.MAXPOOL, 2, stride)),
            top_row.eq(-fields["pad_top"]),
            left_column.eq(-fields["pad_left"]),
            b_left_column.eq(1 - fields["pad_left"]),
            pixel_step.eq(Mux(pool_stride == 2, groups << 1, groups)),  # stage 2
            row_step.eq(Mux(pool_stride == 2, row_words << 1, row_words)),  # stage 3
        ]
        return _RunConstants(
            row_words=row_words,
            out_row_words=out_row_words,
            first_window=first_window,
            pixel_step=pixel_step,
            row_step=row_step,
            pool_stride=pool_stride,
            top_row=top_row,
            left_column=left_column,
            b_left_column=b_left_column,
            last_value=last_value,
        )

    def _loop_counters(self, m: Module, fields: dict, last_value: dict) -> list[_Counter]:
        """The loop nest's LEVELS counters (level 0 innermost), each a :class:`_Counter` with a
        per-run last value (stage 2; 0: the level does not loop in this op):

        ========  ===  ===  ===  ===  ===  =====
        level     0    1    2    3    4    5
        ========  ===  ===  ===  ===  ===  =====
        CONV      g    kx   ky   ox   oy   block
        MAXPOOL   kxp  ky   g    ox   oy   \\-
        ADD       g    \\-   \\-   x    y    \\-
        AVGPOOL   x    y    g    \\-   \\-   \\-
        ========  ===  ===  ===  ===  ===  =====

        (HWC: a kernel row's (kx, g) taps are contiguous words; MAXPOOL's kxp a pair of taps,
        kx = 2 * kxp and kx + 1), so the loop control is the same for every op and reads no op
        flag: level i steps when the levels inside it are all at their last values
        (``carry[i]``), and restarts when it is at its own last value too. (Per-op loops had
        put op flags and select chains between the counters' flags and the address registers:
        8.8-9.0 ns, the engine's critical path.)"""
        op = fields["op"][:OP_BITS]
        kernel = fields["kernel"][:KERNEL_BITS]
        # stage 1: CONV's kernel - 1; stage 2: each level's last value
        kernel_m1 = Signal(range(MAX_KERNEL))
        m.d.sync += kernel_m1.eq(kernel - 1)
        pool_kernel_m1 = MAX_KERNEL - 1  # MAXPOOL 3x3
        assert MAXPOOL_ROW_ISSUES == (MAX_KERNEL + 1) // 2  # pairs of a window row's taps
        g_m1, out_w_m1, out_h_m1 = (last_value[name] for name in ("in_groups", "out_w", "out_h"))
        level_last = [
            {
                Op.CONV: g_m1,
                Op.MAXPOOL: MAXPOOL_ROW_ISSUES - 1,
                Op.ADD: g_m1,
                Op.AVGPOOL: last_value["in_w"],
            },
            {Op.CONV: kernel_m1, Op.MAXPOOL: pool_kernel_m1, Op.AVGPOOL: last_value["in_h"]},
            {Op.CONV: kernel_m1, Op.MAXPOOL: g_m1, Op.AVGPOOL: g_m1},
            {Op.CONV: out_w_m1, Op.MAXPOOL: out_w_m1, Op.ADD: out_w_m1},
            {Op.CONV: out_h_m1, Op.MAXPOOL: out_h_m1, Op.ADD: out_h_m1},
            {Op.CONV: last_value["blocks"]},
        ]
        levels = []
        for i, values in enumerate(level_last):
            width = max(len(Value.cast(value)) for value in values.values())
            last = Signal(width, name=f"level{i}_last")  # stage 2
            m.d.sync += last.eq(_by_op(op, values))
            levels.append(_Counter(m, unsigned(width), f"l{i}", last))
        assert len(levels) == LEVELS
        return levels

    def _loop_control(self, m: Module, op, levels: list[_Counter]) -> tuple:
        """The run's control: ``start``, the setup cycles (``setup``), ``issuing``, the ADD's
        gaps, AVGPOOL's flush cycles and the counters' steps and restarts. Returns ``active``
        (registered: an issue this cycle), ``load`` (the last setup cycle), ``carry`` (per level
        and one past the outermost: an issue with every level inside it at its last value),
        ``steps`` (per level: it steps, not restarts) and ``done`` (the run's last issue,
        ``carry[LEVELS]``)."""
        start = self.start
        issuing = self.issuing
        sum_words = self.sum_words
        flush = Signal(range(sum_words + 1))  # AVGPOOL: output words still to write after a group
        flush_idle = Signal(init=1)  # registered: flush == 0
        # ``active`` (an issue this cycle) is a register of its own, loaded with the function
        # of the next values of the four registers it is a function of: ``issuing``, ``setup``,
        # ``flush_idle`` and ``add_gap``. Those are assigned through ``following`` (comb
        # signals, last assignment wins as in ``sync``), so ``active`` equals that function of
        # their current values, with one register between them and its readers.
        add_gap = Signal()  # ADD: the cycle after an issue, in which its second half is multiplied
        following = {}  # register name -> its next value
        for register in (issuing, self.setup, flush_idle, add_gap):
            following[register.name] = Signal(name=f"{register.name}_next")
            m.d.comb += following[register.name].eq(register)
            m.d.sync += register.eq(following[register.name])

        def update(register, value):
            """Assign ``register``'s next value (one of ``active``'s inputs)."""
            return following[register.name].eq(value)

        # The run's op as one-hot flags in registers of this block (settled one cycle after
        # start; the issue loop begins after the setup cycles).
        is_op = {kind: Signal(name=f"is_{kind.name.lower()}") for kind in Op}
        m.d.sync += [flag.eq(op == kind) for kind, flag in is_op.items()]

        with m.If(start):
            m.d.sync += [*[level.value.eq(0) for level in levels], flush.eq(0)]
            m.d.comb += [update(issuing, 1), update(flush_idle, 1)]

        setup_left = Signal(range(SETUP_CYCLES + 1))  # setup cycles still to go
        setup = self.setup  # registered: setup_left != 0
        with m.If(start):
            m.d.sync += setup_left.eq(SETUP_CYCLES)
            m.d.comb += update(setup, 1)
        with m.Elif(setup):
            m.d.sync += setup_left.eq(setup_left - 1)
            m.d.comb += update(setup, setup_left != 1)
        load = Signal()  # the last setup cycle: the counters' flags settle
        m.d.comb += load.eq(setup_left == 1)
        with m.If(load):
            for level in levels:
                level.load()

        active = Signal()  # registered: it steers every counter
        if self.add_phases > 1:
            m.d.comb += update(add_gap, active & is_op[Op.ADD])
        m.d.sync += active.eq(
            following[issuing.name]
            & ~following[setup.name]
            & following[flush_idle.name]
            & ~following[add_gap.name]
        )

        carry, factors = self._carries(m, active, levels)
        done = _kept_and(m, "carry_done", factors[LEVELS])  # the run's last issue
        # each counter's restart and step: one kept LUT each over the carry's kept factors and
        # the level's own flag, so no decision of one level is built from another's
        steps = []
        for i, level in enumerate(levels):
            restart = _kept_and(m, f"restart_l{i}", [*factors[i], level.last])
            steps.append(_kept_and(m, f"step_l{i}", [*factors[i], ~level.last]))
            with m.If(restart):
                level.restart()
            with m.Elif(steps[i]):
                level.step()
        with m.If(done):
            m.d.comb += update(issuing, 0)
        # AVGPOOL: after each group's last pixel, sum_words idle cycles (the pool unit writes)
        with m.If(carry[2] & is_op[Op.AVGPOOL]):
            m.d.sync += flush.eq(sum_words)
            m.d.comb += update(flush_idle, 0)
        with m.If(~flush_idle):
            m.d.sync += flush.eq(flush - 1)
            m.d.comb += update(flush_idle, flush == 1)
        return active, load, carry, steps, done

    @staticmethod
    def _carries(m: Module, active: Signal, levels: list[_Counter]) -> tuple[list, list]:
        """``carry[i]`` for i in 0 .. LEVELS: an issue, and every level inside level i at its
        last value; and ``factors[i]``, at most two wires whose AND is ``carry[i]`` (registers,
        or ``keep`` wires of at most four registers each).

        The counters' decisions are built from the factors, never from another level's carry:
        at most two LUT levels between the registers and any counter's reset or enable, however
        Yosys orders the rest of the design. (Shared as a chain through carry[i - 1], one LUT a
        level, the loop carry was 10.1 ns in the 2x2 SoC's engine domain; with the carries kept
        but the decisions shared, a same-logic reorder elsewhere placed it at 94.7 MHz against
        100, four LUTs from ``last_l2`` to ``c_l4``'s reset.)"""
        lasts = [level.last for level in levels]
        inner = _kept_and(m, "carry_inner", [active, lasts[0], lasts[1]])
        factors = [[active], [active, lasts[0]], [active, lasts[0], lasts[1]]]
        for i in range(3, LEVELS + 1):
            factors.append([inner, _kept_and(m, f"carry_outer{i}", lasts[2:i])])
        carry = [
            active,
            _kept_and(m, "carry_l0", factors[1]),
            inner,
            *[factors[i][0] & factors[i][1] for i in range(3, LEVELS + 1)],
        ]
        return carry, factors

    @staticmethod
    def _moves(
        m: Module, levels: list[_Counter], active, load, carry: list, steps: list, done
    ) -> _Moves:
        """The issue's move, registered: the addresses follow the counters one cycle behind, so
        between the counters' flags and the address registers there is this register, not a
        decision (see :class:`_Stream`)."""
        moves = _Moves(
            load=Signal(name="move_load"),
            step=[Signal(name=f"move_step{i}") for i in range(LEVELS)],
            rebase=[Signal(name=f"move_rebase{i}") for i in range(LEVELS)],
            hold=Signal(name="move_hold", init=1),
        )
        m.d.sync += [
            moves.load.eq(load),
            *[moves.step[i].eq(steps[i]) for i in range(LEVELS)],
            *[moves.rebase[i].eq(load | (carry[i] & ~done)) for i in range(LEVELS)],
            moves.hold.eq(~load & ~(active & ~done)),
        ]
        return moves

    def _issue_tags(self, m: Module, op, levels: list[_Counter], active) -> dict:
        """The issue's token fields that do not come from the address streams, registered with
        the issue (they follow it, with the addresses, into ``tokens``): by name ``valid``,
        ``first``, ``last``, ``block`` and ``pair`` (MAXPOOL: the issue's second tap is in the
        window, kx + 1 < 3).

        first/last tap of the output pixel: of levels 0-2 (CONV), 0-1 (MAXPOOL; AVGPOOL's
        group), none (ADD: each vector is one); per-run masks (stage 1)."""
        token_levels = [Signal(name=f"token_level{i}") for i in range(3)]
        m.d.sync += [
            token_levels[0].eq(op != Op.ADD),
            token_levels[1].eq(op != Op.ADD),
            token_levels[2].eq(op == Op.CONV),
        ]
        issued_first = Signal()
        issued_last = Signal()
        issued_pair = Signal()  # MAXPOOL: the issue's second tap is in the window (kx + 1 < 3)
        issued_block = Signal(self.tokens.payload.block.shape())
        issued_valid = Signal()
        m.d.sync += [
            issued_valid.eq(active),
            issued_first.eq(
                functools.reduce(
                    operator.and_,
                    [levels[i].first | ~token_levels[i] for i in range(len(token_levels))],
                )
            ),
            issued_last.eq(
                functools.reduce(
                    operator.and_,
                    [levels[i].last | ~token_levels[i] for i in range(len(token_levels))],
                )
            ),
            # the PARAMS word: the block, in a SPLIT run's upper half flipped like the addresses
            issued_block.eq(levels[5].value ^ _top_bit(self.upper.params, len(issued_block))),
            issued_pair.eq(levels[0].first),
        ]
        return {
            "valid": issued_valid,
            "first": issued_first,
            "last": issued_last,
            "block": issued_block,
            "pair": issued_pair,
        }

    def _strides(self, m: Module, fields: dict, constants: _RunConstants) -> dict:
        """The address streams' strides, by stream name (``act`` for ``act`` and ``b``,
        ``weight``, ``out``, ``iy``, ``ix`` for ``ix`` and ``ix_b``): per level, the words (or
        rows, columns) one step of that level moves, per run (stage 4); a level absent moves
        nothing."""
        cfg = self.config
        op = fields["op"][:OP_BITS]
        kernel = fields["kernel"][:KERNEL_BITS]
        groups = fields["in_groups"]
        out_groups = fields["out_groups"]
        weight_word = unsigned(cfg.weight_word_bits)
        row_words, pixel_step, row_step = (
            constants.row_words,
            constants.pixel_step,
            constants.row_step,
        )
        pool_stride = constants.pool_stride
        conv, maxpool, add, avgpool = Op.CONV, Op.MAXPOOL, Op.ADD, Op.AVGPOOL
        w = cfg.act_in_word_bits
        act_strides = {
            0: _stride(m, op, "act0", w, {conv: 1, maxpool: groups << 1, add: 1, avgpool: groups}),
            1: _stride(m, op, "act1", w, {conv: groups, maxpool: row_words, avgpool: row_words}),
            2: _stride(m, op, "act2", w, {conv: row_words, maxpool: 1, avgpool: 1}),
            3: _stride(m, op, "act3", w, {conv: pixel_step, maxpool: pixel_step, add: groups}),
            4: _stride(m, op, "act4", w, {conv: row_step, maxpool: row_step, add: row_words}),
        }
        # CONV's weights: (block * k*k + ky * k + kx) * in_groups + g
        kernel_groups = Signal(weight_word)  # k * in_groups (stage 1)
        kernel_words = Signal(weight_word)  # k * k * in_groups (stage 1)
        m.d.sync += [
            kernel_groups.eq(
                Mux(kernel == 3, groups + (groups << 1), Mux(kernel == 2, groups << 1, groups))
            ),
            kernel_words.eq(
                Mux(kernel == 3, groups + (groups << 3), Mux(kernel == 2, groups << 2, groups))
            ),
        ]
        assert MAX_KERNEL == 3
        weight_strides = {
            0: 1,
            1: _stride(m, op, "weight1", weight_word.width, {conv: groups}),
            2: kernel_groups,
            5: kernel_words,
        }
        out_bits = cfg.act_out_word_bits
        out_strides = {
            0: _stride(m, op, "out0", 1, {add: 1}),
            2: _stride(m, op, "out2", 1, {maxpool: 1}),
            3: _stride(m, op, "out3", out_bits, {conv: out_groups, maxpool: groups, add: groups}),
            4: constants.out_row_words,
            5: 1,
        }
        iy_strides = {
            1: _stride(m, op, "iy1", 1, {maxpool: 1}),
            2: _stride(m, op, "iy2", 1, {conv: 1}),
            4: pool_stride,
        }
        ix_strides = {
            0: _stride(m, op, "ix0", 2, {maxpool: 2}),
            1: _stride(m, op, "ix1", 1, {conv: 1}),
            3: pool_stride,
        }
        return {
            "act": act_strides,
            "weight": weight_strides,
            "out": out_strides,
            "iy": iy_strides,
            "ix": ix_strides,
        }

    def _address_streams(
        self, m: Module, fields: dict, constants: _RunConstants, moves: _Moves
    ) -> dict[str, _Stream]:
        """The address streams (:class:`_Stream`), by name: ``act``, ``b`` and ``weight`` (the
        read addresses, driven onto the ports here: ``ADDRESS_LATENCY`` after the issue),
        ``out`` (the token's ``out_addr``), and the window coordinates ``iy``, ``ix`` and
        ``ix_b`` (MAXPOOL's second tap) of the bounds tests."""
        cfg = self.config
        op = fields["op"][:OP_BITS]
        groups = fields["in_groups"]
        strides = self._strides(m, fields, constants)
        conv, maxpool, add = Op.CONV, Op.MAXPOOL, Op.ADD
        w = cfg.act_in_word_bits
        out_bits = cfg.act_out_word_bits
        first_window = constants.first_window
        # a SPLIT run's upper half: the streams are affine modulo 2**width, so flipping the
        # top bit of the first value flips it in every address of the run (no gate on the
        # read addresses themselves)
        act_upper = _top_bit(self.upper.act_in, w)
        act_first = _by_op(op, {conv: first_window, maxpool: first_window}) ^ act_upper
        act = _Stream(m, "act", w, _first(m, "act", w, act_first), strides["act"], moves)
        b_first = _by_op(op, {maxpool: first_window + groups, add: fields["b_base"]}) ^ act_upper
        b = _Stream(m, "b", w, _first(m, "b", w, b_first), strides["act"], moves)
        weight_bits = cfg.weight_word_bits
        weight_first = _first(m, "weight", weight_bits, _top_bit(self.upper.weight, weight_bits))
        weight = _Stream(m, "weight", weight_bits, weight_first, strides["weight"], moves)
        out = _Stream(
            m,
            "out",
            out_bits,
            _first(m, "out", out_bits, _by_op(op, {conv: fields["out_group_offset"]})),
            strides["out"],
            moves,
        )
        width = _COORDINATE.width
        iy = _Stream(m, "iy", width, constants.top_row, strides["iy"], moves)
        ix = _Stream(m, "ix", width, constants.left_column, strides["ix"], moves)
        ix_b = _Stream(m, "ix_b", width, constants.b_left_column, strides["ix"], moves)

        assert ADDRESS_LATENCY == 1  # the streams are the issue's addresses one cycle after it
        m.d.comb += [
            self.act_addr.eq(act.value),
            self.b_addr.eq(b.value),
            self.weight_addr.eq(weight.value),
        ]
        return {"act": act, "b": b, "weight": weight, "out": out, "iy": iy, "ix": ix, "ix_b": ix_b}

    def _tokens(self, m: Module, fields: dict, issued: dict, streams: dict[str, _Stream]) -> None:
        """The issue's token out with the buffers' data (``BUFFER_LATENCY`` after the
        addresses): the ``issued`` tags, the ``out`` stream and the bounds tests of the window
        coordinates."""
        in_h, in_w = fields["in_h"].as_signed(), fields["in_w"].as_signed()
        row, column = streams["iy"].value.as_signed(), streams["ix"].value.as_signed()
        b_column = streams["ix_b"].value.as_signed()
        row_inside = (row >= 0) & (row < in_h)
        payload = self.tokens.payload
        m.d.sync += [
            self.tokens.valid.eq(issued["valid"]),
            payload.first.eq(issued["first"]),
            payload.last.eq(issued["last"]),
            payload.block.eq(issued["block"]),
            payload.out_addr.eq(streams["out"].value),
            payload.in_bounds.eq(row_inside & (column >= 0) & (column < in_w)),
            payload.b_in_bounds.eq(
                issued["pair"] & row_inside & (b_column >= 0) & (b_column < in_w)
            ),
        ]
