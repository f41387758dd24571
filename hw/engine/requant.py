"""Requantization + ReLU, exactly :func:`fpga.spec.golden.requantize`, one lane.

``y = clamp((acc * multiplier + round) >> shift, lo, 127)`` with ``round = 2**(shift-1)``
(0 for shift 0) — round half up — and ``lo`` = 0 with ReLU, -128 without. Eight pipeline
stages: the two 16-bit halves of the 32 x 16 product (one :class:`hw.engine.array.Multiplier` each:
its operand, product and output registers, three stages), their sum, the shift in two stages
(by the multiple of :data:`FINE_SHIFT`, then the rest), the rounding and clamp in two
(:func:`round_shifted`).
The rounding add is done after the shift, on a few bits (:func:`round_shifted`):
``(x + 2**(s-1)) >> s == ((x << 1 >> s) + 1) >> 1``, so no 50-bit adder sits next to the
50-bit barrel shifter.
Widths: the accumulator and output from the configuration, the multiplier and shift from
:mod:`fpga.spec.golden` (``MULT_BITS``, ``MAX_SHIFT``).
"""

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from fpga.spec import golden
from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.layout import REQUANT_LATENCY, SHIFT_LATENCY
from hw.engine.array import Multiplier, delayed

#: the shift's second stage shifts by ``shift % FINE_SHIFT``, the first by the rest
FINE_SHIFT = 8


def shift_halved(m: Module, value, shift, name: str):
    """``(value << 1) >> shift`` (the input of :func:`round_shifted`) in two stages
    (:data:`~fpga.spec.layout.SHIFT_LATENCY`): ``value`` shifted by the shift's multiple of
    :data:`FINE_SHIFT` and registered, then by the rest and registered; returns the second
    register. ``shift`` is the one that goes with ``value`` (this delays its low bits for the
    second stage). A whole shift by up to :data:`~fpga.spec.golden.MAX_SHIFT` in one stage is six
    LUT levels after the route from ``value``'s register: the engine's critical path alone,
    in the requantizer (9.0 ns) and then in the bypass ADD (8.45 ns)."""
    assert SHIFT_LATENCY == 2  # coarse, then halved
    fine = exact_log2(FINE_SHIFT)
    coarse = Signal(signed(len(value) + 1), name=f"{name}_coarse")
    halved = Signal(signed(len(value) + 1), name=f"{name}_halved")
    fine_shift = delayed(m, shift[:fine], 1, f"{name}_fine_shift")  # with coarse
    m.d.sync += [
        coarse.eq((value << 1) >> (shift >> fine << fine)),
        halved.eq(coarse >> fine_shift),
    ]
    return halved


def round_shifted(m: Module, halved, relu, act_bits: int, name: str):
    """``clamp((halved + 1) >> 1, lo, hi)`` for ``halved = (x << 1) >> s``: the round half
    up of ``(x + 2**(s-1)) >> s`` and the clamp to ``[lo, hi]`` (``lo`` 0 with ``relu``, else
    ``-2**(act_bits-1)``; ``hi = 2**(act_bits-1) - 1``), with the add on ``act_bits + 2``
    bits only: outside ``[2*lo - 1, 2*hi]`` the result is clamped without it.

    Two stages (:data:`~fpga.spec.layout.ROUND_LATENCY`): this registers the clamp's decisions (the
    compares on all of ``halved``'s bits, carry chains) and the rounded narrow value, and returns
    the select among them, which the caller registers. (The compares and the select in one stage,
    after the route from ``halved``'s register, had been the engine's critical path: 9.3 ns.)
    """
    high = (1 << (act_bits - 1)) - 1
    low = -(1 << (act_bits - 1))
    narrow = halved[: act_bits + 2].as_signed()  # exact where it is used: [2*low - 1, 2*high]
    rounded = Signal(signed(act_bits + 1), name=f"{name}_rounded", reset_less=True)
    over = Signal(name=f"{name}_over", reset_less=True)
    under = Signal(name=f"{name}_under", reset_less=True)
    floor = Signal(signed(act_bits), name=f"{name}_floor", reset_less=True)
    m.d.sync += [
        rounded.eq((narrow + 1) >> 1),
        over.eq(halved >= 2 * high),
        under.eq(Mux(relu, halved < -1, halved < 2 * low - 1)),
        floor.eq(Mux(relu, 0, low)),
    ]
    return Mux(over, high, Mux(under, floor, rounded))


class Requantizer(wiring.Component):
    #: cycles from ``acc``/``valid`` to ``result``/``result_valid``
    latency = REQUANT_LATENCY

    def __init__(
        self, acc_bits: int = DEFAULT_CONFIG.acc_bits, act_bits: int = DEFAULT_CONFIG.act_bits
    ):
        self.acc_bits, self.act_bits = acc_bits, act_bits
        super().__init__(
            {
                "acc": In(signed(acc_bits)),
                "multiplier": In(unsigned(golden.MULT_BITS)),
                "shift": In(range(golden.MAX_SHIFT + 1)),
                "relu": In(1),
                "valid": In(1),
                "result": Out(signed(act_bits)),
                "result_valid": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        half = self.acc_bits // 2
        # stages 1-3: the low (unsigned) and high (signed) halves of acc times the multiplier
        low = Signal(unsigned(half + golden.MULT_BITS))
        high = Signal(signed(self.acc_bits - half + golden.MULT_BITS + 1))
        for name, operand, product in (
            ("mult_low", self.acc[:half], low),
            ("mult_high", self.acc[half:].as_signed(), high),
        ):
            m.submodules[name] = multiplier = Multiplier(
                operand.shape(), self.multiplier.shape(), product.shape()
            )
            m.d.comb += [
                multiplier.a.eq(operand),
                multiplier.b.eq(self.multiplier),
                product.eq(multiplier.product),
            ]
        # stage 4: their sum, acc * multiplier (signed x unsigned: one bit more than the
        # widths); the low half's low bits pass through, only the rest is added
        product = Signal(signed(self.acc_bits + golden.MULT_BITS + 1))
        # stages 5-6: (product << 1) shifted right (:func:`shift_halved`); stages 7-8: rounded
        # and clamped
        delay = Multiplier.latency  # cycles before the product's stage
        shift = delayed(m, self.shift, delay + 1, "shift")  # with the product
        relu = delayed(m, self.relu, delay + 1 + SHIFT_LATENCY, "relu")  # with halved
        valid = delayed(m, self.valid, REQUANT_LATENCY - 1, "valid")  # then registered
        m.d.sync += product.eq(Cat(low[:half], (high + low[half:])))
        halved = shift_halved(m, product, shift, "shift")
        m.d.sync += [
            self.result.eq(round_shifted(m, halved, relu, self.act_bits, "round")),
            self.result_valid.eq(valid),
        ]
        return m
