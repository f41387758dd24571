"""The MAC array: ``rows`` input-channel lanes x ``cols`` output-channel lanes.

Dataflow: **output-stationary per pixel with weights streamed**. Each cycle one activation
vector (``rows`` channels of one input tap) is broadcast along the columns, each PE multiplies
it by its own weight (one int8 x int8 product, one DSP48E1), and each column reduces its
``rows`` products in a registered adder tree into the column's accumulator (in the engine).
Why this shape for SqueezeNet: 1x1 convolutions dominate, and with every output pixel
reading whole channel vectors there is no window reuse for a weight-stationary array to exploit;
streaming weights from the wide weight buffer keeps every PE busy on 1x1 *and* 3x3 layers
whenever C_in is a multiple of ``rows`` (all SqueezeNet layers but conv1), with no skew/drain
per pixel. The cost is a weight-buffer read of rows*cols indices per cycle (one wide BRAM word).

Latency: products are registered (stage 1), column sums are registered (stage 2).
"""

from amaranth import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


class MacArray(wiring.Component):
    """``act`` (rows x int8) and ``weight`` (rows x cols int8, lane r*cols + c) ->
    ``column_sums`` (cols x int32) two cycles later; ``valid`` travels alongside.
    """

    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols
        super().__init__(
            {
                "act": In(data.ArrayLayout(signed(8), rows)),
                "weight": In(data.ArrayLayout(signed(8), rows * cols)),
                "valid": In(1),
                "column_sums": Out(data.ArrayLayout(signed(32), cols)),
                "sums_valid": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        products = [
            Signal(signed(16), name=f"product_{r}_{c}") for r in range(rows) for c in range(cols)
        ]
        products_valid = Signal()
        for r in range(rows):
            for c in range(cols):
                # one PE: int8 x int8 -> int16, registered (maps to one DSP48E1 with its MREG)
                m.d.sync += products[r * cols + c].eq(self.act[r] * self.weight[r * cols + c])
        m.d.sync += products_valid.eq(self.valid)
        for c in range(cols):
            total = sum(products[r * cols + c] for r in range(rows))
            m.d.sync += self.column_sums[c].eq(total)
        m.d.sync += self.sums_valid.eq(products_valid)
        return m
