"""UART PHY: 8N1, one start bit, 8 data bits LSB first, one stop bit, at clock / divisor baud.

The receiver samples the middle of each bit (after a start bit still low at its middle) and
drops a byte whose stop bit is low (framing error; the link's CRC catches the rest). The
transmitter has a valid/ready byte input. At 100 MHz a divisor of 8 gives 12.5 Mbaud; the
Arty A7's FT2232H runs 12 Mbaud, so use a clock that divides evenly (e.g. 96 MHz / 8).
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class UART(wiring.Component):
    rx_pin: In(1, init=1)
    tx_pin: Out(1, init=1)
    rx_data: Out(8)
    rx_valid: Out(1)  # one-cycle pulse per received byte
    tx_data: In(8)
    tx_valid: In(1)
    tx_ready: Out(1)
    framing_errors: Out(16)

    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError(f"UART divisor {divisor} < 4: the clock is too slow for this baud")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor

        # -- receiver ---------------------------------------------------------------------------
        sync = Signal(2, init=0b11)  # two-flop synchroniser of the asynchronous pin
        m.d.sync += sync.eq(Cat(self.rx_pin, sync[0]))
        rx = sync[1]
        rx_timer = Signal(range(d + 1))
        rx_bit = Signal(range(10))
        rx_shift = Signal(8)
        m.d.comb += self.rx_valid.eq(0)
        with m.FSM(name="uart_rx"):
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += rx_timer.eq(d // 2)
                    m.next = "START"
            with m.State("START"):
                with m.If(rx_timer == 0):
                    with m.If(rx):  # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [rx_timer.eq(d - 1), rx_bit.eq(0)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += rx_timer.eq(rx_timer - 1)
            with m.State("DATA"):
                with m.If(rx_timer == 0):
                    m.d.sync += [rx_shift.eq(Cat(rx_shift[1:], rx)), rx_timer.eq(d - 1)]
                    m.d.sync += rx_bit.eq(rx_bit + 1)
                    with m.If(rx_bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += rx_timer.eq(rx_timer - 1)
            with m.State("STOP"):
                with m.If(rx_timer == 0):
                    with m.If(rx):
                        m.d.comb += [self.rx_valid.eq(1)]
                    with m.Else():
                        m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += rx_timer.eq(rx_timer - 1)
        m.d.comb += self.rx_data.eq(rx_shift)

        # -- transmitter ------------------------------------------------------------------------
        tx_timer = Signal(range(d))
        tx_bits = Signal(10, init=0x3FF)
        tx_count = Signal(range(11))
        m.d.comb += [self.tx_pin.eq(tx_bits[0]), self.tx_ready.eq(tx_count == 0)]
        with m.If(tx_count == 0):
            with m.If(self.tx_valid):
                m.d.sync += [
                    tx_bits.eq(Cat(0, self.tx_data, 1)),
                    tx_count.eq(10),
                    tx_timer.eq(d - 1),
                ]
        with m.Elif(tx_timer == 0):
            m.d.sync += [
                tx_bits.eq(Cat(tx_bits[1:], 1)),
                tx_count.eq(tx_count - 1),
                tx_timer.eq(d - 1),
            ]
        with m.Else():
            m.d.sync += tx_timer.eq(tx_timer - 1)
        return m
