"""Requantization + ReLU, exactly :func:`fpga.golden.requantize`, one lane.

``y = clamp((acc * multiplier + round) >> shift, lo, 127)`` with ``round = 2**(shift-1)``
(0 for shift 0) — round half up — and ``lo`` = 0 with ReLU, -128 without. Three pipeline
stages: the 32 x 16 product (DSP), the rounding add, then the shift and clamp.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class Requantizer(wiring.Component):
    acc: In(signed(32))
    multiplier: In(unsigned(16))
    shift: In(unsigned(6))
    relu: In(1)
    valid: In(1)
    result: Out(signed(8))
    result_valid: Out(1)

    def elaborate(self, platform):
        m = Module()
        product = Signal(signed(49))
        shift = Signal(unsigned(6))
        relu = Signal()
        valid = Signal()
        m.d.sync += [
            product.eq(self.acc * self.multiplier),
            shift.eq(self.shift),
            relu.eq(self.relu),
            valid.eq(self.valid),
        ]
        rounding = Signal(signed(50))
        m.d.comb += rounding.eq(Mux(shift == 0, 0, (1 << shift) >> 1))
        rounded = Signal(signed(50))
        shift_2 = Signal(unsigned(6))
        relu_2 = Signal()
        valid_2 = Signal()
        m.d.sync += [
            rounded.eq(product + rounding),
            shift_2.eq(shift),
            relu_2.eq(relu),
            valid_2.eq(valid),
        ]
        shifted = Signal(signed(50))
        m.d.comb += shifted.eq(rounded >> shift_2)
        low = Mux(relu_2, 0, -128)
        clamped = Mux(shifted > 127, 127, Mux(shifted < low, low, shifted))
        m.d.sync += [self.result.eq(clamped), self.result_valid.eq(valid_2)]
        return m
