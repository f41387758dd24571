"""UART PHY: 8N1 (one start bit, 8 data bits LSB first, one stop bit) at any ``baud`` <= clock/4.

The bit period ``clock_hz / baud`` need not be a whole number of cycles (the Arty A7's FT2232H
runs 12 Mbaud from a 100 MHz clock: 8 1/3 cycles a bit). It is kept as the reduced fraction
``N / D = q + r / D`` and timed by an accumulator (Bresenham / a numerically controlled
oscillator): every cycle the accumulator gains ``D``; when it reaches ``N`` a bit boundary is
due and ``N`` is taken off. Each bit therefore lasts ``q`` or ``q + 1`` cycles and bit ``k``
ends within one cycle of ``k * N / D``: the long-run rate is exact, no divisor rounding.

The receiver restarts its accumulator at half a period on a start edge (it counts in halves,
``2N / 2D``), so it samples bit ``k`` at ``ceil((k + 1/2) * N / D)`` cycles after the edge, the
middle of the bit. A start bit that is high again at its middle is a glitch; a byte whose stop
bit is low is dropped and counted (framing error; the link's CRC catches the rest). The
transmitter takes a byte (valid/ready) in the cycle its previous stop bit ends, so back-to-back
bytes keep the exact rate.
"""

from math import gcd

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

#: fewest clock cycles per bit: mid-bit sampling after a two-flop synchroniser needs margin
MIN_CYCLES_PER_BIT = 4


def bit_period(clock_hz: int, baud: int) -> tuple[int, int]:
    """``clock_hz / baud`` as a reduced fraction ``(N, D)``: cycles per bit = N / D."""
    if baud <= 0 or clock_hz <= 0:
        raise ValueError(f"UART needs a positive clock and baud, not {clock_hz} Hz / {baud} baud")
    common = gcd(clock_hz, baud)
    cycles, bits = clock_hz // common, baud // common
    if cycles < MIN_CYCLES_PER_BIT * bits:
        raise ValueError(
            f"UART at {baud:,} baud needs a clock of at least {MIN_CYCLES_PER_BIT * baud:,} Hz "
            f"({MIN_CYCLES_PER_BIT} cycles a bit), not {clock_hz:,} Hz: lower the baud"
        )
    return cycles, bits


class UART(wiring.Component):
    rx_pin: In(1, init=1)
    tx_pin: Out(1, init=1)
    #: a received byte is valid for one cycle: the line cannot be held back (always_ready)
    rx: Out(stream.Signature(8, always_ready=True))
    tx: In(stream.Signature(8))
    framing_errors: Out(16)

    def __init__(self, clock_hz: int, baud: int):
        self.clock_hz, self.baud = clock_hz, baud
        self.cycles_per_bit = bit_period(clock_hz, baud)  # (N, D)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        n, d = self.cycles_per_bit

        # -- receiver: accumulator in half-bit units, so a start edge can preload half a period
        sync = Signal(2, init=0b11)  # two-flop synchroniser of the asynchronous pin
        m.d.sync += sync.eq(Cat(self.rx_pin, sync[0]))
        rx = sync[1]
        rx_phase = Signal(range(2 * n + 2 * d))
        rx_next = rx_phase + 2 * d
        rx_tick = Signal()  # the middle of a bit
        m.d.comb += rx_tick.eq(rx_next >= 2 * n)
        rx_bit = Signal(range(8))
        rx_shift = Signal(8)
        m.d.comb += self.rx.valid.eq(0)
        with m.FSM(name="uart_rx") as rx_fsm:
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += rx_phase.eq(n)  # half of the 2N period: first tick mid start bit
                    m.next = "START"
            with m.State("START"):
                with m.If(rx_tick):
                    with m.If(rx):  # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += rx_bit.eq(0)
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(rx_tick):
                    m.d.sync += [rx_shift.eq(Cat(rx_shift[1:], rx)), rx_bit.eq(rx_bit + 1)]
                    with m.If(rx_bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(rx_tick):
                    with m.If(rx):
                        m.d.comb += self.rx.valid.eq(1)
                    with m.Else():
                        m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
                    m.next = "IDLE"  # at mid stop bit: ready for the next start edge
        with m.If(~rx_fsm.ongoing("IDLE")):
            m.d.sync += rx_phase.eq(Mux(rx_tick, rx_next - 2 * n, rx_next))
        m.d.comb += self.rx.payload.eq(rx_shift)

        # -- transmitter: the accumulator runs while a byte is on the line -------------------------
        tx_phase = Signal(range(n + d))
        tx_next = tx_phase + d
        tx_tick = Signal()  # the end of a bit
        m.d.comb += tx_tick.eq(tx_next >= n)
        tx_bits = Signal(10, init=0x3FF)
        tx_count = Signal(range(11))  # bits still to send, the one on the line included
        m.d.comb += [
            self.tx_pin.eq(tx_bits[0]),
            self.tx.ready.eq((tx_count == 0) | ((tx_count == 1) & tx_tick)),
        ]
        with m.If(tx_count != 0):
            m.d.sync += tx_phase.eq(Mux(tx_tick, tx_next - n, tx_next))
        with m.If(self.tx.valid & self.tx.ready):
            m.d.sync += [tx_bits.eq(Cat(0, self.tx.payload, 1)), tx_count.eq(10)]
        with m.Elif((tx_count != 0) & tx_tick):
            m.d.sync += [tx_bits.eq(Cat(tx_bits[1:], 1)), tx_count.eq(tx_count - 1)]
        return m
