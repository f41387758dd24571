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
(``fpga.layout``), measured by the generator's test (``tests/hw/test_addrgen.py``).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fpga.config import AcceleratorConfig
from fpga.layout import (
    ADDRESS_LATENCY,
    BUFFER_LATENCY,
    SETUP_CYCLES,
    LayerDescriptor,
    Op,
    add_cycles_per_vector,
)

#: widths the descriptor's small fields need (the fields are bytes)
OP_BITS = max(Op).bit_length()
MAX_KERNEL = 3  # 3x3 convolutions and 3x3/2 max-pooling; strides 1 and 2
KERNEL_BITS = MAX_KERNEL.bit_length()


def descriptor_layout() -> data.StructLayout:
    """The packed :class:`fpga.layout.LayerDescriptor` (its fields, without the trailing
    padding bytes) as a ``data.StructLayout``: field ``name`` is
    ``LayerDescriptor.field_offsets()[name]``'s bytes, little-endian."""
    fields, position = {}, 0
    for name, (offset, width) in LayerDescriptor.field_offsets().items():
        assert offset == position, name  # packed without gaps ("<" format)
        fields[name] = unsigned(8 * width)
        position += width
    return data.StructLayout(fields)


DESCRIPTOR_LAYOUT = descriptor_layout()


def token_layout(config: AcceleratorConfig) -> data.StructLayout:
    """What an issued tap carries down the pipeline (stage 1): its tap inside the image
    (CONV/MAXPOOL; padding otherwise), first/last tap of its output pixel (MAXPOOL window,
    AVGPOOL channel group; both set for an ADD vector), its output-buffer word (CONV, MAXPOOL,
    ADD) and its output-channel block (CONV: parameter memory word)."""
    return data.StructLayout(
        {
            "in_bounds": 1,
            "first": 1,
            "last": 1,
            "out_addr": unsigned(config.act_out_word_bits),
            "block": unsigned(config.param_word_bits),
        }
    )


def tokens_signature(config: AcceleratorConfig) -> stream.Signature:
    return stream.Signature(token_layout(config), always_ready=True)


class _Counter:
    """A loop counter of the address generator and its "at the last value" flag, kept in a
    register beside it, so that no compare sits between the counters and the address adders
    they steer. ``limit`` is the run's last value (a register, constant while issuing); the
    flag of a step is ``value == limit - 1`` (``limit - 1`` registered once per run).

    Assign the counter only through :meth:`restart` and :meth:`step` (which add their
    statements to ``m`` in the current control context); :meth:`load` sets the flag of value 0
    once the run's limit is registered (the last setup cycle)."""

    def __init__(self, m: Module, shape, name: str, limit):
        self._m = m
        self.value = Signal(shape, name=f"c_{name}")
        self.last = Signal(name=f"last_{name}")
        limit_m1 = Signal(len(limit), name=f"{name}_limit_m1")
        self._zero = Signal(name=f"{name}_limit_zero")
        self._step_last = self.value == limit_m1
        m.d.sync += [limit_m1.eq(limit - 1), self._zero.eq(limit == 0)]

    def restart(self) -> None:
        self._m.d.sync += [self.value.eq(0), self.last.eq(self._zero)]

    def step(self) -> None:
        self._m.d.sync += [self.value.eq(self.value + 1), self.last.eq(self._step_last)]

    def load(self) -> None:
        self._m.d.sync += self.last.eq(self._zero)


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


class AddressGenerator(wiring.Component):
    """The run's loops over the buffers: ``descriptor`` + ``start`` -> buffer read addresses
    and the stage-1 ``tokens`` stream.

    ``descriptor`` (:data:`DESCRIPTOR_LAYOUT`) is the run's descriptor, constant from the
    ``start`` pulse to the end of the run. ``start`` begins a run: the per-run constants
    (products of descriptor fields) settle in a free-running pipeline of registers during
    ``SETUP_CYCLES`` (4) setup cycles (``setup`` high), the last of which loads the first
    window; the first tap is issued in the cycle after it, ``setup_cycles + 1`` cycles after
    the ``start`` cycle. ``issuing`` is high from the cycle after ``start`` to the run's last
    issue (inclusive).

    ``address_latency`` (1) cycle after an issue cycle ``act_addr`` (ACT_IN: the tap,
    CONV/MAXPOOL; the operand, ADD/AVGPOOL), ``b_addr`` (ACT_IN: the ADD's second operand,
    ``act_addr + b_base``) and ``weight_addr`` (WEIGHT, CONV) address the buffers; ``latency``
    (2) cycles after the issue, with their data, ``tokens`` carries the issue's
    :func:`token_layout` (``valid`` high). Word addresses are modulo the buffers' depths
    (HWC activations: word ``(y * in_w + x) * in_groups + g`` from ``in_base``; weights
    ``(block * k*k + ky * k + kx) * in_groups + g``).

    * CONV: for each block, output pixel (oy, ox), tap (ky, kx) and input group g (g fastest):
      one issue per cycle, no bubbles; the tap at input ``(oy*s - pad_top + ky, ox*s -
      pad_left + kx)``, ``in_bounds`` low in the padding; ``out_addr`` ``out_group_offset +
      block + (oy * out_w + ox) * out_groups``.
    * MAXPOOL 3x3/2: for each output pixel, group g and tap (ky, kx) (kx fastest), one per
      cycle; ``out_addr`` ``(oy * out_w + ox) * in_groups + g``.
    * ADD: for each pixel and group, word ``p``, one every ``add_phases``
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
        cfg = self.config
        start = self.start
        issuing = self.issuing
        add_phases = self.add_phases
        sum_words = self.sum_words

        # -- descriptor fields ------------------------------------------------------------------
        fields = {name: self.descriptor[name] for name in DESCRIPTOR_LAYOUT.members}
        op = fields["op"][:OP_BITS]
        kernel = fields["kernel"][:KERNEL_BITS]
        stride = fields["stride"][:KERNEL_BITS]
        groups = fields["in_groups"]
        in_h, in_w = fields["in_h"].as_signed(), fields["in_w"].as_signed()
        out_w = fields["out_w"]
        out_groups = fields["out_groups"]
        out_offset = fields["out_group_offset"]

        # Buffer word addresses are computed modulo the buffer's depth: a read port sees only
        # the low address bits, and adds, subtracts and shifts are exact in the low bits, so
        # the window arithmetic needs no wider adders (taps in the padding compute a wrapped
        # address whose data is replaced by zero: the bounds test uses the coordinates).
        in_word = unsigned(cfg.act_in_word_bits)
        out_word = unsigned(cfg.act_out_word_bits)
        weight_word = unsigned(cfg.weight_word_bits)
        # a window coordinate: a descriptor size, minus padding, plus a kernel offset
        coordinate = signed(8 * LayerDescriptor.field_offsets()["in_h"][1] + KERNEL_BITS + 1)
        counter = {name: len(fields[name]) for name in ("blocks", "out_h", "out_w", "in_groups")}

        # -- per-run constants ----------------------------------------------------------------
        # Products and sums of descriptor fields, in free-running registers: the descriptor does
        # not change while busy, so stage k of this pipeline holds its run's value k cycles after
        # start. The issue loop begins after SETUP_CYCLES (fpga.layout) setup cycles, when the
        # last stage (the first window's address, stage 4) is right; each stage is at most two
        # adder levels deep.
        in_w_raw, pad_top, pad_left = fields["in_w"], fields["pad_top"], fields["pad_left"]
        # stages 1-2: words per input row, pad_left * groups, ACT_OUT words per output row
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
            _adder_stage(m, _partial_products(out_w, out_groups, out_word.width), 2, "orw_s1"),
            2,
            "out_row_words",
        )
        pixel_step = Signal(in_word)  # words between horizontally adjacent output pixels' windows
        # words between a window's taps along its row: CONV 1 (g fastest), MAXPOOL in_groups
        # (kx fastest); one register beside the tap's adder (the MAXPOOL step read the
        # descriptor's field across the engine: 3.1 ns of routing on the critical path)
        tap_step = Signal(in_word)
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

        # -- sequencer state ------------------------------------------------------------------
        # the loop counters' limits: stage 1 (kernel), stage 2 (x and y, chosen by op)
        kernel_m1 = Signal(range(MAX_KERNEL))
        x_limit = Signal(max(len(last_value["out_w"]), len(last_value["in_w"])))
        y_limit = Signal(max(len(last_value["out_h"]), len(last_value["in_h"])))
        m.d.sync += [
            # ADD and AVGPOOL do not step the kernel counters: their flags stay set
            kernel_m1.eq(Mux(op == Op.MAXPOOL, 2, Mux(op == Op.CONV, kernel - 1, 0))),
            x_limit.eq(Mux(op == Op.AVGPOOL, last_value["in_w"], last_value["out_w"])),
            y_limit.eq(Mux(op == Op.AVGPOOL, last_value["in_h"], last_value["out_h"])),
        ]
        c_block = _Counter(m, counter["blocks"], "block", last_value["blocks"])
        c_oy = _Counter(m, counter["out_h"], "oy", y_limit)  # AVGPOOL: the input row
        c_ox = _Counter(m, counter["out_w"], "ox", x_limit)  # AVGPOOL: the input column
        c_ky = _Counter(m, range(MAX_KERNEL), "ky", kernel_m1)
        c_kx = _Counter(m, range(MAX_KERNEL), "kx", kernel_m1)
        c_g = _Counter(m, counter["in_groups"], "g", last_value["in_groups"])
        counters = (c_block, c_oy, c_ox, c_ky, c_kx, c_g)
        iy0 = Signal(coordinate)  # top row of the current window (may be negative: padding)
        # the first window's top row and left column, -pad_top and -pad_left, in registers (a
        # constant operand, not a subtraction Yosys would share with the window's adders)
        top_row = Signal(coordinate)
        left_column = Signal(coordinate)
        m.d.sync += [top_row.eq(-fields["pad_top"]), left_column.eq(-fields["pad_left"])]
        ix0 = Signal(coordinate)
        row_left = Signal(in_word)  # word address of (iy0, ix0 of the row's first window)
        # row_left + row_step, kept in a register of its own (loaded whenever row_left is), so
        # that the next row's address is a register when the window registers select it: the
        # add in front of their select had been the 8x8 SoC's engine critical path (8.6 ns)
        next_row = Signal(in_word)
        pix_base = Signal(in_word)  # word address of (iy0, ix0)
        tap_row = Signal(in_word)  # word address of (iy0 + ky, ix0)
        # tap_row + row_words (the window's next kernel row), free-running a cycle behind
        # tap_row: the add in front of the tap's select had been the critical path (8.1 ns
        # alone, 9.6 in the SoC). It is read only at a kernel row's last tap, at least two
        # issues after tap_row last changed (ky steps only when the kernel is >= 2 wide, and a
        # kernel row then has >= 2 taps), so the cycle's lag is never seen.
        tap_below = Signal(in_word)
        m.d.sync += tap_below.eq(tap_row + row_words)
        tap = Signal(in_word)  # word address of the current tap
        out_addr = Signal(out_word)  # ACT_OUT word address of the current output
        out_row_addr = Signal(out_word)
        w_addr = Signal(weight_word)
        w_block_base = Signal(weight_word)
        linear = Signal(in_word)  # ADD/AVGPOOL: operand word address
        flush = Signal(range(sum_words + 1))  # AVGPOOL: output words still to write after a group
        flush_idle = Signal(init=1)  # registered: flush == 0
        # ``active`` (an issue this cycle) is a register of its own, loaded with the function
        # of the next values of the four registers it is a function of: ``issuing``, ``setup``,
        # ``flush_idle`` and ``add_gap``. Those are assigned through ``following`` (comb
        # signals, last assignment wins as in ``sync``), so ``active`` equals that function of
        # their current values, with one register between them and its ~150 readers.
        add_gap = Signal()  # ADD: the cycle after an issue, in which its second half is multiplied
        following = {}  # register name -> its next value
        for register in (issuing, self.setup, flush_idle, add_gap):
            following[register.name] = Signal(name=f"{register.name}_next")
            m.d.comb += following[register.name].eq(register)
            m.d.sync += register.eq(following[register.name])

        def update(register, value):
            """Assign ``register``'s next value (one of ``active``'s inputs)."""
            return following[register.name].eq(value)

        last_g, last_kx, last_ky = c_g.last, c_kx.last, c_ky.last
        last_block = c_block.last

        iy = Signal(coordinate)
        ix = Signal(coordinate)
        m.d.comb += [iy.eq(iy0 + c_ky.value), ix.eq(ix0 + c_kx.value)]
        in_bounds = Signal()
        m.d.comb += in_bounds.eq((iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w))

        # The run's op as one-hot flags in registers of this block (settled one cycle after
        # start; the issue loop begins after the setup cycles): the loop's decisions read them,
        # not the descriptor's register, which sits among its other readers.
        is_op = {kind: Signal(name=f"is_{kind.name.lower()}") for kind in Op}
        m.d.sync += [flag.eq(op == kind) for kind, flag in is_op.items()]

        # -- read addresses (ADDRESS_LATENCY: registered, so the loop's registers are not pulled
        # toward the block RAMs they address) --------------------------------------------------
        m.d.sync += self.weight_addr.eq(w_addr)
        with m.If(is_op[Op.CONV] | is_op[Op.MAXPOOL]):
            m.d.sync += self.act_addr.eq(tap)
        with m.Else():
            m.d.sync += [
                self.act_addr.eq(linear),
                self.b_addr.eq(linear + fields["b_base"]),
            ]

        pool_stride = Signal(range(MAX_KERNEL))  # stage 1
        m.d.sync += pool_stride.eq(Mux(op == Op.MAXPOOL, 2, stride))

        with m.If(start):
            m.d.sync += [
                *[counter.value.eq(0) for counter in counters],
                out_addr.eq(Mux(op == Op.CONV, out_offset, 0)),
                out_row_addr.eq(Mux(op == Op.CONV, out_offset, 0)),
                w_addr.eq(0),
                w_block_base.eq(0),
                linear.eq(0),
                flush.eq(0),
            ]
            m.d.comb += [update(issuing, 1), update(flush_idle, 1)]

        # The first window's address is the per-run pipeline's last stage: the issue loop
        # begins after SETUP_CYCLES setup cycles (counted in the pipeline latency); the last
        # setup cycle loads the address registers.
        m.d.sync += [
            pixel_step.eq(Mux(pool_stride == 2, groups << 1, groups)),  # stage 1
            tap_step.eq(Mux(op == Op.MAXPOOL, groups, 1)),  # stage 1
            row_step.eq(Mux(pool_stride == 2, row_words << 1, row_words)),  # stage 3
        ]
        setup_left = Signal(range(SETUP_CYCLES + 1))  # setup cycles still to go
        setup = self.setup  # registered: setup_left != 0
        with m.If(start):
            m.d.sync += setup_left.eq(SETUP_CYCLES)
            m.d.comb += update(setup, 1)
        with m.Elif(setup):
            m.d.sync += setup_left.eq(setup_left - 1)
            m.d.comb += update(setup, setup_left != 1)

        def window_at(address, address_plus_row):
            """Start a row of windows at ``address`` (``address_plus_row``: ``address +
            row_step``): its first window, its first tap."""
            return [
                row_left.eq(address),
                next_row.eq(address_plus_row),
                pix_base.eq(address),
                tap_row.eq(address),
                tap.eq(address),
            ]

        # the first window's row and the one below it
        first_rows = (first_window, first_window + row_step)
        with m.If(setup_left == 1):
            m.d.sync += [*window_at(*first_rows), iy0.eq(top_row), ix0.eq(left_column)]
            for counter in counters:
                counter.load()

        active = Signal()  # registered: it steers every counter and address register
        if add_phases > 1:
            m.d.comb += update(add_gap, active & is_op[Op.ADD])
        m.d.sync += active.eq(
            following[issuing.name]
            & ~following[setup.name]
            & following[flush_idle.name]
            & ~following[add_gap.name]
        )

        # -- the stage-1 token: registered with the issue, then with the addresses, out with
        # the buffers' data ----------------------------------------------------------------------
        s1 = Signal(token_layout(cfg), name="issued")
        s1_valid = Signal(name="issued_valid")
        assert ADDRESS_LATENCY == 1
        m.d.sync += [self.tokens.payload.eq(s1), self.tokens.valid.eq(s1_valid)]
        m.d.sync += [
            s1_valid.eq(active),
            s1.in_bounds.eq(in_bounds),
            s1.out_addr.eq(out_addr),
            s1.block.eq(c_block.value),
        ]

        # -- sequencer: advance counters ------------------------------------------------------
        # The step decisions, one AND each of the counters' registered flags, the same for every
        # op, so that the window moves on in one place after the op's loop (the op's branches
        # had put their select chain in front of the window registers' enables: the 8x8 SoC's
        # engine critical path, 8.8 ns; registers loaded from the flags' next values instead
        # made those next values' select chains the path, 10.3 ns): the last (g, kx) of a
        # kernel row (CONV), the last tap of an output pixel (CONV, MAXPOOL; an ADD vector,
        # whose kernel flags stay set; never in AVGPOOL, which runs its own loop), of a row of
        # output pixels, of the image.
        kernel_row_end = last_g & last_kx
        pixel_end = kernel_row_end & last_ky & ~is_op[Op.AVGPOOL]
        row_end = pixel_end & c_ox.last
        image_end = row_end & c_oy.last

        with m.If(active):
            with m.If(is_op[Op.CONV]):
                # inner loop: g, then kx, then ky (HWC: (kx, g) taps of a row are contiguous)
                first_tap = (c_g.value == 0) & (c_kx.value == 0) & (c_ky.value == 0)
                m.d.sync += w_addr.eq(w_addr + 1)
                with m.If(~kernel_row_end):
                    m.d.sync += tap.eq(tap + tap_step)
                    with m.If(last_g):
                        c_g.restart()
                        c_kx.step()
                    with m.Else():
                        c_g.step()
                with m.Elif(~last_ky):
                    c_g.restart()
                    c_kx.restart()
                    c_ky.step()
                    m.d.sync += [tap_row.eq(tap_below), tap.eq(tap_below)]
                with m.Else():
                    c_g.restart()
                    c_kx.restart()
                    c_ky.restart()
                    # weights: same block again for the next pixel, next block after the
                    # last pixel of the block (the window moves on below)
                    with m.If(image_end):
                        m.d.sync += [w_block_base.eq(w_addr + 1), w_addr.eq(w_addr + 1)]
                        m.d.sync += [
                            out_row_addr.eq(out_offset + c_block.value + 1),
                            out_addr.eq(out_offset + c_block.value + 1),
                        ]
                    with m.Else():
                        m.d.sync += w_addr.eq(w_block_base)
                        with m.If(row_end):
                            m.d.sync += [
                                out_row_addr.eq(out_row_addr + out_row_words),
                                out_addr.eq(out_row_addr + out_row_words),
                            ]
                        with m.Else():
                            m.d.sync += out_addr.eq(out_addr + out_groups)
                m.d.sync += [s1.first.eq(first_tap), s1.last.eq(pixel_end)]
            with m.Elif(is_op[Op.MAXPOOL]):
                # inner loop: kx, then ky, then g
                first_tap = (c_kx.value == 0) & (c_ky.value == 0)
                last_tap = last_kx & last_ky
                m.d.sync += [s1.first.eq(first_tap), s1.last.eq(last_tap)]
                with m.If(~last_kx):
                    c_kx.step()
                    m.d.sync += tap.eq(tap + tap_step)
                with m.Elif(~last_ky):
                    c_kx.restart()
                    c_ky.step()
                    m.d.sync += [tap_row.eq(tap_below), tap.eq(tap_below)]
                with m.Else():
                    c_kx.restart()
                    c_ky.restart()
                    m.d.sync += out_addr.eq(out_addr + 1)
                    with m.If(~last_g):
                        c_g.step()
                        m.d.sync += [
                            tap_row.eq(pix_base + c_g.value + 1),
                            tap.eq(pix_base + c_g.value + 1),
                        ]
                    with m.Else():
                        c_g.restart()  # the window moves on below
            with m.Elif(is_op[Op.ADD]):
                m.d.sync += [
                    s1.first.eq(1),
                    s1.last.eq(1),
                    linear.eq(linear + 1),
                    out_addr.eq(out_addr + 1),
                ]
                with m.If(~last_g):
                    c_g.step()
                with m.Else():
                    c_g.restart()  # the next pixel: the window moves on below
            with m.Elif(is_op[Op.AVGPOOL]):
                # for each group g: every pixel p at word p*groups + g
                last_x, last_y = c_ox.last, c_oy.last  # (their limits are in_w, in_h)
                m.d.sync += [
                    s1.first.eq((c_ox.value == 0) & (c_oy.value == 0)),
                    s1.last.eq(last_x & last_y),
                ]
                with m.If(~last_x):
                    c_ox.step()
                    m.d.sync += linear.eq(linear + groups)
                with m.Elif(~last_y):
                    c_ox.restart()
                    c_oy.step()
                    m.d.sync += linear.eq(linear + groups)
                with m.Else():
                    c_ox.restart()
                    c_oy.restart()
                    m.d.sync += [linear.eq(c_g.value + 1), flush.eq(sum_words)]
                    m.d.comb += update(flush_idle, 0)
                    with m.If(~last_g):
                        c_g.step()
                    with m.Else():
                        m.d.comb += update(issuing, 0)

        # after the last tap of an output pixel (CONV, MAXPOOL; an ADD vector): the next window
        # (ox, then oy, then the CONV's next block; after the last, the run's last issue)
        with m.If(active & pixel_end):
            with m.If(~row_end):
                c_ox.step()
                m.d.sync += [
                    ix0.eq(ix0 + pool_stride),
                    pix_base.eq(pix_base + pixel_step),
                    tap_row.eq(pix_base + pixel_step),
                    tap.eq(pix_base + pixel_step),
                ]
            with m.Else():
                c_ox.restart()
                m.d.sync += ix0.eq(left_column)
                with m.If(~image_end):
                    c_oy.step()
                    m.d.sync += [
                        iy0.eq(iy0 + pool_stride),
                        *window_at(next_row, next_row + row_step),
                    ]
                with m.Else():
                    c_oy.restart()
                    m.d.sync += [iy0.eq(top_row), *window_at(*first_rows)]
                    with m.If(is_op[Op.CONV] & ~last_block):
                        c_block.step()
                    with m.Else():
                        m.d.comb += update(issuing, 0)
        with m.If(~flush_idle):
            m.d.sync += flush.eq(flush - 1)
            m.d.comb += update(flush_idle, flush == 1)
        return m
