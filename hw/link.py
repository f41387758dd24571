"""Frame decoder, command decoder and response encoder of the link (see fpga.protocol).

Byte streams in and out (valid/ready). A request is buffered whole in ``frame`` memory and its
CRC-32 checked before anything is executed; responses are built in the same memory (status byte
first) and sent with their own CRC. Counters for STATUS: good frames, bad CRCs, framing errors
(over-long length), inter-byte timeouts, unknown opcodes, engine errors.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fpga.config import AcceleratorConfig
from fpga.protocol import (
    FRAME_TIMEOUT_CYCLES,
    RESPONSE_FLAG,
    Opcode,
    Status,
    identify_payload,
)

CRC_POLY = 0xEDB88320


def _crc_step_reference(crc: int, byte: int) -> int:
    value = crc ^ byte
    for _ in range(8):
        value = (value >> 1) ^ (CRC_POLY if value & 1 else 0)
    return value


def _crc_masks() -> list[tuple[int, int]]:
    """Per output bit: which crc bits and which data bits it XORs (the update is linear)."""
    masks = []
    for bit in range(32):
        crc_mask = sum(1 << i for i in range(32) if _crc_step_reference(1 << i, 0) >> bit & 1)
        data_mask = sum(1 << i for i in range(8) if _crc_step_reference(0, 1 << i) >> bit & 1)
        masks.append((crc_mask, data_mask))
    return masks


_CRC_MASKS = _crc_masks()


def crc32_update(crc, byte):
    """Combinational CRC-32 (reflected, zlib) register after one more byte.

    Written as a flat XOR network (the update is linear over GF(2)); a bit-serial loop of
    Muxes would duplicate the expression tree 2**8 times.
    """
    bits = []
    for crc_mask, data_mask in _CRC_MASKS:
        terms = [crc[i] for i in range(32) if crc_mask >> i & 1]
        terms += [byte[i] for i in range(8) if data_mask >> i & 1]
        acc = terms[0]
        for term in terms[1:]:
            acc = acc ^ term
        bits.append(acc)
    return Cat(*bits)


class LinkController(wiring.Component):
    def __init__(self, config: AcceleratorConfig, timeout_cycles: int = FRAME_TIMEOUT_CYCLES):
        self.config = config
        self.timeout_cycles = timeout_cycles
        super().__init__(
            {
                "rx_data": In(8),
                "rx_valid": In(1),
                "rx_ready": Out(1),
                "tx_data": Out(8),
                "tx_valid": Out(1),
                "tx_ready": In(1),
                "idle": Out(1),
                # engine side (see hw.engine.ConvEngine)
                "write_en": Out(1),
                "write_space": Out(4),
                "write_addr": Out(24),
                "write_data": Out(8),
                "write_ready": In(1, init=1),  # the write is taken in a cycle where this is 1
                "read_en": Out(1),
                "read_space": Out(4),
                "read_addr": Out(24),
                "read_valid": In(1),
                "read_data": In(8),
                "start": Out(1),
                "busy": In(1),
                "done": In(1),
                "cycles": In(32),
                "error": In(1),
                "clear_error": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        depth = cfg.max_payload + 8
        m.submodules.frame = frame = Memory(shape=8, depth=depth, init=[])
        wr = frame.write_port()
        rd = frame.read_port(domain="comb")

        length = Signal(16)
        seq = Signal(8)
        opcode = Signal(8)
        crc = Signal(32, init=0xFFFFFFFF)
        received_crc = Signal(32)
        index = Signal(16)
        timer = Signal(range(self.timeout_cycles + 1))

        frames_ok = Signal(32)
        crc_errors = Signal(16)
        framing_errors = Signal(16)
        timeouts = Signal(16)
        bad_opcodes = Signal(16)
        engine_errors = Signal(16)

        status = Signal(8)
        resp_len = Signal(16)  # response payload bytes incl. status, held in frame[0..]
        tx_crc = Signal(32)
        tx_index = Signal(16)

        # request fields, parsed from frame[0..6] while executing
        space = Signal(4)
        offset = Signal(32)
        count = Signal(16)
        pending_reads = Signal(16)

        m.d.comb += [wr.en.eq(0), self.write_en.eq(0), self.read_en.eq(0), self.start.eq(0)]

        byte_in = self.rx_data
        rx_fire = Signal()
        m.d.comb += rx_fire.eq(self.rx_valid & self.rx_ready)

        # -- inter-byte timeout while inside a frame ---------------------------------------------
        in_frame = Signal()
        with m.If(rx_fire | ~in_frame):
            m.d.sync += timer.eq(0)
        with m.Elif(timer != self.timeout_cycles):
            m.d.sync += timer.eq(timer + 1)
        timed_out = Signal()
        m.d.comb += timed_out.eq(in_frame & (timer == self.timeout_cycles))

        identify = identify_payload(cfg)
        status_bytes = Cat(
            frames_ok, crc_errors, framing_errors, timeouts, bad_opcodes, engine_errors
        )
        fill_index = Signal(8)

        def hunt_on_timeout():
            # a stalled frame: count it and hunt for the next sync
            with m.If(timed_out):
                m.d.sync += timeouts.eq(timeouts + 1)
                m.next = "SYNC0"

        def respond(code):
            m.d.sync += [status.eq(code), resp_len.eq(1)]
            m.next = "RESPOND"

        with m.FSM():
            with m.State("SYNC0"):
                m.d.comb += [self.rx_ready.eq(1), self.idle.eq(1)]
                with m.If(rx_fire & (byte_in == 0xA5)):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                m.d.comb += [self.rx_ready.eq(1), in_frame.eq(1)]
                hunt_on_timeout()
                with m.If(rx_fire):
                    with m.If(byte_in == 0x5A):
                        m.d.sync += [crc.eq(0xFFFFFFFF), index.eq(0)]
                        m.next = "HEADER"
                    with m.Elif(byte_in != 0xA5):
                        m.next = "SYNC0"
            with m.State("HEADER"):
                m.d.comb += [self.rx_ready.eq(1), in_frame.eq(1)]
                hunt_on_timeout()
                with m.If(rx_fire):
                    m.d.sync += [crc.eq(crc32_update(crc, byte_in)), index.eq(index + 1)]
                    with m.Switch(index):
                        with m.Case(0):
                            m.d.sync += length[:8].eq(byte_in)
                        with m.Case(1):
                            m.d.sync += length[8:].eq(byte_in)
                        with m.Case(2):
                            m.d.sync += seq.eq(byte_in)
                        with m.Case(3):
                            m.d.sync += [opcode.eq(byte_in), index.eq(0)]
                            with m.If(length > cfg.max_payload):
                                m.d.sync += framing_errors.eq(framing_errors + 1)
                                m.next = "SYNC0"
                            with m.Elif(length == 0):
                                m.next = "CRC"
                            with m.Else():
                                m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.rx_ready.eq(1), in_frame.eq(1)]
                hunt_on_timeout()
                m.d.comb += [wr.addr.eq(index), wr.data.eq(byte_in), wr.en.eq(rx_fire)]
                with m.If(rx_fire):
                    m.d.sync += [crc.eq(crc32_update(crc, byte_in)), index.eq(index + 1)]
                    with m.If(index == length - 1):
                        m.d.sync += index.eq(0)
                        m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += [self.rx_ready.eq(1), in_frame.eq(1)]
                hunt_on_timeout()
                with m.If(rx_fire):
                    m.d.sync += [
                        received_crc.eq(Cat(received_crc[8:], byte_in)),
                        index.eq(index + 1),
                    ]
                    with m.If(index == 3):
                        m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(received_crc != (crc ^ 0xFFFFFFFF)):
                    m.d.sync += crc_errors.eq(crc_errors + 1)
                    respond(Status.BAD_CRC)
                with m.Else():
                    m.d.sync += [frames_ok.eq(frames_ok + 1), index.eq(0)]
                    m.next = "PARSE"
            with m.State("PARSE"):
                # frame[0] = space, frame[1..4] = offset, frame[5..6] = count (READ)
                m.d.comb += rd.addr.eq(index)
                m.d.sync += index.eq(index + 1)
                with m.Switch(index):
                    with m.Case(0):
                        m.d.sync += space.eq(rd.data)
                    for i in range(4):
                        with m.Case(1 + i):
                            m.d.sync += offset[8 * i : 8 * i + 8].eq(rd.data)
                    with m.Case(5):
                        m.d.sync += count[:8].eq(rd.data)
                    with m.Case(6):
                        m.d.sync += count[8:].eq(rd.data)
                    with m.Case(7):
                        with m.Switch(opcode):
                            with m.Case(Opcode.IDENTIFY):
                                m.d.sync += [fill_index.eq(0)]
                                m.next = "IDENTIFY"
                            with m.Case(Opcode.STATUS):
                                m.d.sync += [fill_index.eq(0)]
                                m.next = "STATUS"
                            with m.Case(Opcode.CLEAR):
                                m.d.sync += [
                                    crc_errors.eq(0),
                                    framing_errors.eq(0),
                                    timeouts.eq(0),
                                    bad_opcodes.eq(0),
                                    engine_errors.eq(0),
                                ]
                                m.d.comb += self.clear_error.eq(1)
                                respond(Status.OK)
                            with m.Case(Opcode.WRITE):
                                with m.If(length < 5):
                                    respond(Status.BAD_LENGTH)
                                with m.Elif(length == 5):
                                    respond(Status.OK)
                                with m.Else():
                                    m.d.sync += index.eq(5)
                                    m.next = "WRITE"
                            with m.Case(Opcode.READ):
                                with m.If((length != 7) | (count > cfg.max_payload - 1)):
                                    respond(Status.BAD_LENGTH)
                                with m.Else():
                                    m.d.sync += [index.eq(0), pending_reads.eq(0)]
                                    m.next = "READ"
                            with m.Case(Opcode.RUN):
                                m.next = "RUN"
                            with m.Default():
                                m.d.sync += bad_opcodes.eq(bad_opcodes + 1)
                                respond(Status.BAD_OPCODE)
            with m.State("WRITE"):
                m.d.comb += [
                    rd.addr.eq(index),
                    self.write_en.eq(1),
                    self.write_space.eq(space),
                    self.write_addr.eq(offset + index - 5),
                    self.write_data.eq(rd.data),
                ]
                with m.If(self.write_ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == length - 1):
                        respond(Status.OK)
            with m.State("READ"):
                # issue one engine read per cycle, store each returned byte at frame[1 + i]
                m.d.comb += [
                    self.read_space.eq(space),
                    self.read_addr.eq(offset + index),
                    self.read_en.eq(index < count),
                ]
                with m.If(index < count):
                    m.d.sync += index.eq(index + 1)
                with m.If(self.read_valid):
                    m.d.comb += [
                        wr.addr.eq(1 + pending_reads),
                        wr.data.eq(self.read_data),
                        wr.en.eq(1),
                    ]
                    m.d.sync += pending_reads.eq(pending_reads + 1)
                    with m.If(pending_reads == count - 1):
                        m.d.sync += [status.eq(Status.OK), resp_len.eq(1 + count)]
                        m.next = "RESPOND"
                with m.If(count == 0):
                    respond(Status.OK)
            with m.State("RUN"):
                m.d.comb += self.start.eq(1)
                m.next = "WAIT_DONE"
            with m.State("WAIT_DONE"):
                with m.If(self.done):
                    m.next = "RUN_RESULT"
            with m.State("RUN_RESULT"):
                # payload: status, cycles u32, engine error u8
                result = Cat(self.cycles, self.error.as_unsigned(), Const(0, 7))
                m.d.comb += [
                    wr.addr.eq(1 + fill_index),
                    wr.data.eq(result.word_select(fill_index[:3], 8)),
                    wr.en.eq(1),
                ]
                m.d.sync += fill_index.eq(fill_index + 1)
                with m.If(fill_index == 4):
                    code = Mux(self.error, Status.ENGINE_ERROR, Status.OK)
                    m.d.sync += [status.eq(code), resp_len.eq(6), fill_index.eq(0)]
                    with m.If(self.error):
                        m.d.sync += engine_errors.eq(engine_errors + 1)
                    m.next = "RESPOND"
            with m.State("IDENTIFY"):
                table = Array(Const(b, 8) for b in identify)
                m.d.comb += [wr.addr.eq(1 + fill_index), wr.data.eq(table[fill_index]), wr.en.eq(1)]
                m.d.sync += fill_index.eq(fill_index + 1)
                with m.If(fill_index == len(identify) - 1):
                    m.d.sync += [status.eq(Status.OK), resp_len.eq(1 + len(identify))]
                    m.next = "RESPOND"
            with m.State("STATUS"):
                n = len(status_bytes) // 8
                m.d.comb += [
                    wr.addr.eq(1 + fill_index),
                    wr.data.eq(status_bytes.word_select(fill_index, 8)),
                    wr.en.eq(1),
                ]
                m.d.sync += fill_index.eq(fill_index + 1)
                with m.If(fill_index == n - 1):
                    m.d.sync += [status.eq(Status.OK), resp_len.eq(1 + n)]
                    m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += [wr.addr.eq(0), wr.data.eq(status), wr.en.eq(1)]
                m.d.sync += [tx_index.eq(0), tx_crc.eq(0xFFFFFFFF)]
                m.next = "TX"
            with m.State("TX"):
                # sync(2) + length(2) + seq + opcode + payload(resp_len) + crc(4)
                header = Array(
                    [
                        Const(0xA5, 8),
                        Const(0x5A, 8),
                        resp_len[:8],
                        resp_len[8:],
                        seq,
                        opcode | RESPONSE_FLAG,
                    ]
                )
                crc_out = tx_crc ^ 0xFFFFFFFF
                total = resp_len + 10
                byte = Signal(8)
                m.d.comb += rd.addr.eq(tx_index - 6)
                with m.If(tx_index < 6):
                    m.d.comb += byte.eq(header[tx_index[:3]])
                with m.Elif(tx_index < resp_len + 6):
                    m.d.comb += byte.eq(rd.data)
                with m.Else():
                    m.d.comb += byte.eq(crc_out.word_select((tx_index - resp_len - 6)[:2], 8))
                m.d.comb += [self.tx_data.eq(byte), self.tx_valid.eq(1)]
                with m.If(self.tx_ready):
                    m.d.sync += tx_index.eq(tx_index + 1)
                    with m.If((tx_index >= 2) & (tx_index < resp_len + 6)):
                        m.d.sync += tx_crc.eq(crc32_update(tx_crc, byte))
                    with m.If(tx_index == total - 1):
                        m.next = "SYNC0"

        return m
