"""Requantization + ReLU, exactly :func:`fpga.golden.requantize`, one lane.

``y = clamp((acc * multiplier + round) >> shift, lo, 127)`` with ``round = 2**(shift-1)``
(0 for shift 0) — round half up — and ``lo`` = 0 with ReLU, -128 without. Three pipeline
stages: the 32 x 16 product (DSP), the rounding add, then the shift and clamp.
Widths: the accumulator and output from the configuration, the multiplier and shift from
:mod:`fpga.golden` (``MULT_BITS``, ``MAX_SHIFT``).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga import golden
from fpga.config import DEFAULT_CONFIG


class Requantizer(wiring.Component):
    #: cycles from ``acc``/``valid`` to ``result``/``result_valid``
    latency = 3

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
        # signed x unsigned: one bit more than the two widths
        product = Signal(signed(self.acc_bits + golden.MULT_BITS + 1))
        shift = Signal.like(self.shift)
        relu = Signal()
        valid = Signal()
        m.d.sync += [
            product.eq(self.acc * self.multiplier),
            shift.eq(self.shift),
            relu.eq(self.relu),
            valid.eq(self.valid),
        ]
        # round = 2**(shift - 1) < 2**(MAX_SHIFT - 1): one bit more than the product
        rounding = Signal(signed(max(len(product), golden.MAX_SHIFT) + 1))
        m.d.comb += rounding.eq(Mux(shift == 0, 0, (1 << shift) >> 1))
        rounded = Signal.like(rounding)
        shift_2 = Signal.like(shift)
        relu_2 = Signal()
        valid_2 = Signal()
        m.d.sync += [
            rounded.eq(product + rounding),
            shift_2.eq(shift),
            relu_2.eq(relu),
            valid_2.eq(valid),
        ]
        shifted = Signal.like(rounded)
        m.d.comb += shifted.eq(rounded >> shift_2)
        high = (1 << (self.act_bits - 1)) - 1  # 127
        low = Mux(relu_2, 0, -(1 << (self.act_bits - 1)))  # 0 or -128
        clamped = Mux(shifted > high, high, Mux(shifted < low, low, shifted))
        m.d.sync += [self.result.eq(clamped), self.result_valid.eq(valid_2)]
        return m
