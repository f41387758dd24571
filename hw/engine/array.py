"""The systolic MAC array: ``rows`` input-channel lanes x ``cols`` output-channel lanes.

Dataflow: **output-stationary per pixel, weights streamed, systolic in both directions**.
Each cycle one activation vector (``rows`` channels of one input tap) and one ``rows x cols``
weight word enter the array. Activation lane ``r`` enters row ``r`` at the left edge and moves
one PE to the right per cycle through each PE's activation register; the partial sum of
output column ``c`` starts at the top and moves one PE down per cycle through each PE's sum
register, picking up that PE's product on the way. No signal fans out to more than one PE:
every PE reads its activation from its left neighbour's register, its partial sum from the
register of the PE above, and its weight from a delay line of its own (or, skewed by the
caller, from its own byte of a diagonal weight bank's register).

Skew: tap ``t``'s activation reaches PE ``(r, c)`` ``r + c`` cycles after it entered, so
activation lane ``r`` is delayed ``r`` cycles before row ``r`` and the weight of PE ``(r, c)``
``r + c`` cycles: by a per-PE delay line, or (``skewed_weights``, as the engine does) by the
caller, whose weight buffer is banked by diagonal and reads bank ``r + c`` that many cycles late
(``sum(r + c)`` bytes of delay line, 30 KiB of flip-flops for 16 x 16, become one delayed
read address per diagonal); column ``c``'s finished sum leaves the bottom row ``c`` cycles
after column 0's and is delayed ``cols - 1 - c`` cycles (deskew), so the ``cols`` sums of
one tap come out together, through an output register at the array's edge. The array is
fully pipelined (one tap per cycle, no bubbles between pixels, taps or runs); the skew costs
``rows + cols - 1`` cycles of latency, paid once per run by the engine's drain, never per
pixel. See docs/engine.md for why this dataflow (and not a weight-stationary or
pixel-parallel output-stationary one) for SqueezeNet.

Latency (``MacArray.latency``): ``rows + cols + 3`` cycles from the inputs to ``column_sums``.
"""

from amaranth import Cat, ClockSignal, Instance, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.layout import MULTIPLIER_LATENCY, array_latency


def partial_sum_bits(rows: int, product_bits: int) -> int:
    """Width of a column's partial sum: ``rows`` signed products need ``ceil(log2 rows)``
    more bits than one product."""
    return product_bits + max(0, (rows - 1).bit_length())


class ProcessingElement(wiring.Component):
    """One PE: one hardware multiplier (a DSP48E1, an ECP5 MULT18X18D; with ``hard=False`` one
    built in fabric, :func:`fabric_product`, at the same latency) and the sum register.

    ``act_in`` is registered; ``act_out`` is that register, for the right-hand neighbour. The
    product of ``act_in`` and ``weight_in`` leaves the multiplier ``Multiplier.latency`` (3)
    cycles later, through the multiplier's input, pipeline and output registers (on ECP5 the
    MULT18X18D's own; elsewhere two operand registers and the product register, which Yosys
    packs into the DSP48E1's A/B and M registers, and the sum into its P register with the
    adder). ``psum_out = psum_in + product`` is registered, for the PE below.
    Latency act/weight -> ``psum_out``: 4 cycles; the partial sum from above must arrive 3
    cycles after the PE's own operands (it does: the PE above got them a cycle earlier).
    """

    def __init__(self, act_bits: int, weight_bits: int, sum_bits: int, *, hard: bool = True):
        self.act_bits, self.weight_bits, self.sum_bits = act_bits, weight_bits, sum_bits
        #: the multiplier is a DSP block (a MULT18X18D, a DSP48E1); False: LUTs and carry
        #: chains (:func:`fabric_product`), for the PEs beyond the part's DSPs
        self.hard = hard
        super().__init__(
            {
                "act_in": In(signed(act_bits)),
                "weight_in": In(signed(weight_bits)),
                "psum_in": In(signed(sum_bits)),
                "act_out": Out(signed(act_bits)),
                "psum_out": Out(signed(sum_bits)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        # data registers only (no reset, no enable): nothing global but the clock reaches a PE
        act = Signal(signed(self.act_bits), reset_less=True)
        product = Signal(signed(self.act_bits + self.weight_bits), reset_less=True)
        psum = Signal(signed(self.sum_bits), reset_less=True)
        m.d.sync += [act.eq(self.act_in), psum.eq(self.psum_in + product)]
        m.d.comb += [self.act_out.eq(act), self.psum_out.eq(psum)]
        if not self.hard:
            # the same three stages in fabric: the shared activation register and a weight
            # register, the two half products, their sum
            weight = Signal.like(self.weight_in, reset_less=True)
            m.d.sync += weight.eq(self.weight_in)
            fabric_product(m, act, weight, product)
        elif getattr(platform, "family", None) == "ecp5":
            # the multiplier's own input register beside the fabric activation register for
            # the right neighbour
            m.submodules.multiplier = _ecp5_multiplier(self.act_in, self.weight_in, product)
        else:
            # the same three stages, laid out for a DSP48E1: a second operand register (its A/B
            # registers; the first activation register is the one shared with the neighbour,
            # the first weight register joins the weight's skew line), the product (M), so that
            # the partial sum is the DSP's P register with its adder, not fabric
            act_mul = Signal.like(act, reset_less=True)
            weights = [Signal.like(self.weight_in, reset_less=True) for _ in range(2)]
            m.d.sync += [
                act_mul.eq(act),
                weights[0].eq(self.weight_in),
                weights[1].eq(weights[0]),
                product.eq(act_mul * weights[1]),
            ]
        return m


ECP5_MULT_BITS = 18  # MULT18X18D operand width (product 36 bits)


class Multiplier(wiring.Component):
    """``product = a * b`` (signed; an unsigned operand is zero-extended), ``latency`` (3)
    cycles later: the operands registered, the product registered, then registered again at
    the output. On ECP5 one MULT18X18D with its input, pipeline and output registers (see
    :func:`_ecp5_multiplier`). Elsewhere three registers in fabric, which Yosys packs into a
    DSP48E1's A/B, M and P registers. Data registers only (no reset, no enable); ``sync`` is
    the clock (rename it with ``DomainRenamer``)."""

    latency = MULTIPLIER_LATENCY

    def __init__(self, a_shape, b_shape, product_shape):
        super().__init__({"a": In(a_shape), "b": In(b_shape), "product": Out(product_shape)})

    def elaborate(self, platform):
        m = Module()
        if getattr(platform, "family", None) == "ecp5":
            m.submodules.mult = _ecp5_multiplier(self.a, self.b, self.product)
        else:
            a = Signal.like(self.a, reset_less=True)
            b = Signal.like(self.b, reset_less=True)
            raw = Signal.like(self.product, reset_less=True)
            product = Signal.like(self.product, reset_less=True)
            m.d.sync += [a.eq(self.a), b.eq(self.b), raw.eq(a * b), product.eq(raw)]
            m.d.comb += self.product.eq(product)
        return m


def fabric_product(m: Module, a: Value, b: Value, product: Signal) -> None:
    """``product`` = ``a * b`` (both signed) two ``sync`` cycles after ``a`` and ``b``, from
    LUTs and carry chains only (no ``*`` that synthesis could map to a DSP block): the PEs
    beyond a part's DSPs (``fpga.spec.layout.fabric_pes``).

    ``b``'s low half (unsigned) and high half (signed: its top bit's row is subtracted) are
    each a chain of row adders, registered: row ``i`` adds ``a`` (or 0, by ``b[i]``) to the
    bits of the running sum that are not final yet (its lowest bit leaves the chain), so each
    row is one narrow carry chain. The wires between rows are ``keep``: Yosys would otherwise
    merge the rows into one multi-operand adder tree of single LUTs (on ECP5 a fabric PE takes
    36 CCU2C and 64 LUT4 this way, 22 CCU2C and 165 LUT4 merged). The second stage adds the two
    halves (``product`` is that register)."""
    width, split = len(b), len(b) // 2

    def rows(first: int, stop: int, subtract_top: bool):
        total, final_bits = Mux(b[first], a, 0), []
        for i in range(first + 1, stop):
            row = Mux(b[i], a, 0)
            final_bits.append(total[0])
            carried = total >> 1  # signed: the bits that are not final yet
            wire = Signal(signed(len(total) + 1), attrs={"keep": 1}, name=f"row{i}")
            top = subtract_top and i == stop - 1
            m.d.comb += wire.eq(carried - row if top else carried + row)
            total = wire
        return Cat(*final_bits, total).as_signed()

    low = Signal(signed(len(a) + split), reset_less=True)
    high = Signal(signed(len(a) + width - split), reset_less=True)
    m.d.sync += [
        low.eq(rows(0, split, False)),
        high.eq(rows(split, width, True)),
        product.eq(low + (high << split)),
    ]


def _ecp5_multiplier(a, b, product) -> Module:
    """``product`` = ``a * b`` (signed) three clock cycles later, in one ECP5 MULT18X18D with
    its input (``REG_INPUTA/B``), pipeline and output registers on the ``sync`` clock.

    Yosys does not pack registers into the ECP5 multiplier (without them nextpnr times it as
    combinational, fabric to fabric), and nextpnr's timing model of a MULT18X18D without its
    output register starts the output's path at the input register's clock (3.9 ns through
    the multiplier), whatever the pipeline register: so all three."""
    assert len(a) + (not a.shape().signed) <= ECP5_MULT_BITS
    assert len(b) + (not b.shape().signed) <= ECP5_MULT_BITS
    assert len(product) <= 2 * ECP5_MULT_BITS
    wide_a = Signal(signed(ECP5_MULT_BITS))
    wide_b = Signal(signed(ECP5_MULT_BITS))
    result = Signal(2 * ECP5_MULT_BITS)
    ports = {f"i_A{k}": wide_a[k] for k in range(ECP5_MULT_BITS)}
    ports |= {f"i_B{k}": wide_b[k] for k in range(ECP5_MULT_BITS)}
    ports |= {f"i_C{k}": 0 for k in range(ECP5_MULT_BITS)}
    ports |= {f"o_P{k}": result[k] for k in range(2 * ECP5_MULT_BITS)}
    for k in range(4):
        ports |= {f"i_CLK{k}": ClockSignal("sync") if k == 0 else 0, f"i_CE{k}": 1, f"i_RST{k}": 0}
    instance = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="CLK0",
        p_REG_INPUTB_CLK="CLK0",
        p_REG_PIPELINE_CLK="CLK0",
        p_REG_OUTPUT_CLK="CLK0",
        p_GSR="DISABLED",
        p_RESETMODE="SYNC",
        i_SIGNEDA=1,
        i_SIGNEDB=1,
        i_SOURCEA=0,
        i_SOURCEB=0,
        **ports,
    )
    module = Module()
    module.submodules.mult = instance
    module.d.comb += [wide_a.eq(a), wide_b.eq(b), product.eq(result[: len(product)])]
    return module


def diagonal_lanes(rows: int, cols: int) -> list[list[int]]:
    """The weight lanes (``r * cols + c``) of each diagonal ``d = r + c`` of the array, ``r``
    ascending: the PEs whose weights reach them ``d`` cycles after their tap entered."""
    return [
        [r * cols + (d - r) for r in range(rows) if 0 <= d - r < cols]
        for d in range(rows + cols - 1)
    ]


def signal_ports(component: wiring.Component) -> list[Signal]:
    """``component``'s ports as signals, for ``back.rtlil/verilog.convert(..., ports=...)``: an
    ``always_ready`` stream's ``ready`` is a constant 1, which is no port."""
    values = [Value.cast(value) for _, _, value in component.signature.flatten(component)]
    return [value for value in values if isinstance(value, Signal)]


#: the default tag: nothing travels alongside the taps
NO_TAG = data.StructLayout({})


def operands_layout(
    rows: int, cols: int, act_bits: int, weight_bits: int, tag: data.Layout
) -> data.StructLayout:
    """One tap entering the array: ``rows`` activations, ``rows x cols`` weights (lane
    ``r*cols + c``) and the caller's ``tag`` (side information that travels alongside)."""
    return data.StructLayout(
        {
            "act": data.ArrayLayout(signed(act_bits), rows),
            "weight": data.ArrayLayout(signed(weight_bits), rows * cols),
            "tag": tag,
        }
    )


def sums_layout(rows: int, cols: int, act_bits: int, weight_bits: int, tag: data.Layout):
    """One tap leaving the array: its ``cols`` column sums and its ``tag``."""
    sum_bits = partial_sum_bits(rows, act_bits + weight_bits)
    return data.StructLayout({"sums": data.ArrayLayout(signed(sum_bits), cols), "tag": tag})


def delayed(m: Module, value, cycles: int, name: str, *, reset_less: bool = False):
    """``value`` as it was ``cycles`` ``sync`` cycles ago: a chain of registers (data registers
    with ``reset_less``: no reset, no enable)."""
    for k in range(cycles):
        register = Signal.like(value, name=f"{name}_d{k + 1}", reset_less=reset_less)
        m.d.sync += register.eq(value)
        value = register
    return value


class MacArray(wiring.Component):
    """Stream ``operands`` (``act``: rows x int8, ``weight``: rows x cols int8 with lane
    ``r*cols + c``, ``tag``) -> stream ``sums`` (``sums[c] = sum_r act[r] * weight[r*cols + c]``,
    the same ``tag``) exactly ``latency`` cycles later, a new tap every cycle. Both streams
    are ``always_ready`` (a fixed-latency pipeline); ``valid`` and ``tag`` travel alongside
    the array in one register chain, outside the PE grid.
    """

    def __init__(
        self,
        rows: int,
        cols: int,
        act_bits: int = DEFAULT_CONFIG.act_bits,
        weight_bits: int = DEFAULT_CONFIG.weight_bits,
        tag: data.Layout = NO_TAG,
        fabric_pes: int = 0,
        skewed_weights: bool = False,
    ):
        assert 0 <= fabric_pes <= rows * cols
        self.rows, self.cols = rows, cols
        #: the caller delivers PE ``(r, c)``'s weight ``r + c`` cycles after its tap's
        #: activations (the engine's weight buffer is banked by diagonal, each bank read
        #: ``r + c`` cycles late: :func:`diagonal_lanes`), so the array has no weight delay lines
        self.skewed_weights = skewed_weights
        #: the last ``fabric_pes`` PEs in row-major order multiply in fabric (``hard=False``)
        self.fabric_pes = fabric_pes
        self.act_bits, self.weight_bits = act_bits, weight_bits
        self.sum_bits = partial_sum_bits(rows, self.act_bits + self.weight_bits)
        #: cycles from ``act``/``weight`` to ``column_sums``: operand register, product
        #: register, ``rows`` sum registers, ``cols - 1`` skew cycles (inputs + deskew), the
        #: output register; the
        #: cycle model's figure (``fpga.spec.layout.array_latency``), checked by
        # tests/hw/test_array.py
        self.latency = array_latency(rows, cols)
        layouts = (rows, cols, act_bits, weight_bits, tag)
        super().__init__(
            {
                "operands": In(stream.Signature(operands_layout(*layouts), always_ready=True)),
                "sums": Out(stream.Signature(sums_layout(*layouts), always_ready=True)),
            }
        )
        #: ``pes[r][c]``: filled in by :meth:`elaborate` (tests inspect the connectivity)
        self.pes: list[list[ProcessingElement]] = []

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        operands = self.operands.payload
        hard_pes = rows * cols - self.fabric_pes
        self.pes = [
            [
                ProcessingElement(
                    self.act_bits, self.weight_bits, self.sum_bits, hard=r * cols + c < hard_pes
                )
                for c in range(cols)
            ]
            for r in range(rows)
        ]
        for r in range(rows):
            for c in range(cols):
                pe = self.pes[r][c]
                m.submodules[f"pe_{r}_{c}"] = pe
                # activations from the left neighbour's register (row entry: skewed by r)
                if c == 0:
                    act = delayed(m, operands.act[r], r, f"act_skew_{r}", reset_less=True)
                else:
                    act = self.pes[r][c - 1].act_out
                m.d.comb += pe.act_in.eq(act)
                # this PE's own weight, skewed by r + c (here, or by the caller)
                skew = 0 if self.skewed_weights else r + c
                weight = delayed(
                    m, operands.weight[r * cols + c], skew, f"weight_skew_{r}_{c}", reset_less=True
                )
                m.d.comb += pe.weight_in.eq(weight)
                # partial sums from the PE above (row 0 starts from zero)
                if r > 0:
                    m.d.comb += pe.psum_in.eq(self.pes[r - 1][c].psum_out)
        # deskew: column c finished c cycles after column 0; then every column's sum is
        # registered once more at the array's edge, so no PE's sum register is pulled away from
        # its multiplier toward the accumulators (the last column's, with no deskew register,
        # was the 8x8 engine's critical path alone: its DSP -> 6.24 ns of routing -> its sum)
        for c in range(cols):
            total = delayed(
                m, self.pes[rows - 1][c].psum_out, cols - c, f"deskew_{c}", reset_less=True
            )
            m.d.comb += self.sums.payload.sums[c].eq(total)
        side = Signal(data.StructLayout({"valid": 1, "tag": operands.tag.shape()}))
        m.d.comb += [side.valid.eq(self.operands.valid), side.tag.eq(operands.tag)]
        side = delayed(m, side, self.latency, "side")  # valid resets
        m.d.comb += [self.sums.valid.eq(side.valid), self.sums.payload.tag.eq(side.tag)]
        return m
