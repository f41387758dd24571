"""The UDP link (hw.soc.link.udp inside hw.soc.link.LinkController) under Amaranth's simulator:
datagrams in and out of LiteEth's raw port as the core presents them, beside the byte-stream
link, spoken to and answered with fpga.spec.protocol's encoder and frame decoder."""

import random

from amaranth.sim import Simulator

from fpga.spec.config import SMALL_CONFIG
from fpga.spec.layout import BufferSpace
from fpga.spec.protocol import (
    FRAME_OVERHEAD,
    RESPONSE_FLAG,
    DeviceInfo,
    FrameParser,
    LinkKind,
    Opcode,
    Status,
    decode_frame,
    encode_frame,
    identify_payload,
    parse_status,
    write_payload,
)
from hw.soc.link import LinkController
from hw.soc.link.udp import ADDRESS_BYTES, BUFFER_BYTES

UDP_PORT, RATE = 2000, 100_000_000
HOST, OTHER = (0xC0A80164, 50123), (0xC0A80165, 40000)  # 192.168.1.100 and .101


def serve(datagrams, stream=b"", seed=1, send_ready=0.7):
    """Datagrams ``(sender, bytes[, cycles before it])`` into the link's UDP port one after
    another (and ``stream`` into its byte-stream link at the same time), the UDP side
    back-pressured at random (ready with probability ``send_ready``); returns the datagrams it
    sent as ``(destination, source port, length field, bytes)`` and the frames it sent on the
    byte stream."""
    dut = LinkController(SMALL_CONFIG, timeout_cycles=64, udp_port=UDP_PORT, ethernet_bps=RATE)
    rng = random.Random(seed)
    sent, current, stream_out = [], None, FrameParser()

    async def bench(ctx):
        # (sender, bytes, cycles to wait before it): a datagram may come after a pause
        queue = [(d[0], bytes(d[1]), d[2] if len(d) > 2 else 0) for d in datagrams]
        pause = queue[0][2] if queue else 0
        position, offset, idle, held = 0, 0, 0, 0
        received, send = dut.udp_received, dut.udp_send
        ctx.set(dut.tx.ready, 1)
        ctx.set(dut.write.ready, 1)  # the engine takes every byte a WRITE brings
        nonlocal current
        while idle < 300:
            have = bool(queue) and pause == 0
            pause = max(0, pause - 1)
            if have:
                (ip, port), data, _ = queue[0]
                ctx.set(received.ip_address, ip)
                ctx.set(received.src_port, port)
                ctx.set(received.dst_port, UDP_PORT)
                ctx.set(received.length, len(data))
                ctx.set(received.data, data[offset])
                ctx.set(received.last, offset == len(data) - 1)
            ctx.set(received.valid, have)
            ctx.set(dut.rx.valid, position < len(stream))
            ctx.set(dut.rx.payload, stream[position] if position < len(stream) else 0)
            ready = rng.random() < send_ready
            ctx.set(send.ready, ready)
            taken = have and ctx.get(received.ready)
            # LiteEth's receive path has no packet buffer: the link must take every byte but
            # while it writes a datagram's sender address into its buffer
            held = held + 1 if have and not taken else 0
            assert held <= ADDRESS_BYTES + 1
            stream_taken = position < len(stream) and ctx.get(dut.rx.ready)
            out = None
            if ready and ctx.get(send.valid):
                fields = ("ip_address", "dst_port", "src_port", "length", "data", "last")
                out = {name: ctx.get(getattr(send, name)) for name in fields}
            tx = ctx.get(dut.tx.payload) if ctx.get(dut.tx.valid) else None
            waiting = ctx.get(send.valid)  # an answer's byte the network has not taken yet
            await ctx.tick()
            if taken:
                offset += 1
                if offset == len(queue[0][1]):
                    queue.pop(0)
                    offset, pause = 0, queue[0][2] if queue else 0
            position += stream_taken
            if tx is not None:
                stream_out.feed(bytes([tx]))
            if out is not None:
                if current is None:
                    current = [(out["ip_address"], out["dst_port"]), out["src_port"]]
                    current += [out["length"], bytearray()]
                assert (out["ip_address"], out["dst_port"]) == current[0]
                assert out["length"] == current[2]
                current[3].append(out["data"])
                if out["last"]:
                    sent.append((current[0], current[1], current[2], bytes(current[3])))
                    current = None
            busy = bool(queue) or position < len(stream) or waiting or tx is not None
            idle = 0 if busy else idle + 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert current is None, "a datagram without its last byte"
    frames = []
    while (frame := stream_out.pop()) is not None:
        frames.append(frame)
    return sent, frames


def answer(datagram):
    """The response frame a sent datagram carries (exactly one, filling it), and the sender it
    goes to (at the board's port, which the host binds)."""
    (ip, port), source_port, length, data = datagram
    assert port == source_port == UDP_PORT and length == len(data)
    destination = next(host for host in (HOST, OTHER) if host[0] == ip)
    frame = decode_frame(data)
    assert len(data) == FRAME_OVERHEAD + len(frame.payload)
    return destination, frame


def test_each_datagram_is_answered_to_its_sender_as_one_datagram():
    sent, _ = serve(
        [
            (HOST, encode_frame(1, Opcode.IDENTIFY)),
            (HOST, encode_frame(2, Opcode.STATUS)),
            # two frames in one datagram: both answered, each in a datagram of its own
            (HOST, encode_frame(3, Opcode.STATUS) + encode_frame(4, Opcode.IDENTIFY)),
        ]
    )
    answers = [answer(d) for d in sent]
    assert [(dest, f.seq, f.opcode) for dest, f in answers] == [
        (HOST, 1, Opcode.IDENTIFY | RESPONSE_FLAG),
        (HOST, 2, Opcode.STATUS | RESPONSE_FLAG),
        (HOST, 3, Opcode.STATUS | RESPONSE_FLAG),
        (HOST, 4, Opcode.IDENTIFY | RESPONSE_FLAG),
    ]
    identify = identify_payload(SMALL_CONFIG, link=LinkKind.ETHERNET, link_bps=RATE)
    assert answers[0][1].payload == bytes([Status.OK]) + identify
    assert parse_status(answers[1][1].payload[1:])["frames_ok"] == 2


def test_the_host_is_the_first_sender_and_whoever_sends_identify():
    sent, _ = serve(
        [
            (HOST, encode_frame(1, Opcode.STATUS)),  # the first frame: HOST is the host
            (OTHER, encode_frame(2, Opcode.STATUS)),  # dropped unanswered
            (HOST, encode_frame(3, Opcode.STATUS)),
            (OTHER, encode_frame(4, Opcode.IDENTIFY)),  # OTHER takes the board over
            (HOST, encode_frame(5, Opcode.STATUS)),  # now HOST's are dropped
            (OTHER, encode_frame(6, Opcode.STATUS)),
            (HOST, encode_frame(7, Opcode.IDENTIFY)),  # and HOST takes it back
        ]
    )
    answers = [answer(d) for d in sent]
    assert [(dest, f.seq, f.payload[0]) for dest, f in answers] == [
        (HOST, 1, Status.OK),
        (HOST, 3, Status.OK),
        (OTHER, 4, Status.OK),
        (OTHER, 6, Status.OK),
        (HOST, 7, Status.OK),
    ]
    # a dropped frame is not counted as served
    assert parse_status(answers[3][1].payload[1:])["frames_ok"] == 4


def test_a_datagram_cut_short_never_joins_the_next_one():
    whole = encode_frame(7, Opcode.STATUS)
    sent, _ = serve(
        [
            (HOST, encode_frame(1, Opcode.IDENTIFY)[:9]),  # a frame cut inside its header
            (HOST, whole),
            (HOST, bytes(random.Random(3).randrange(256) for _ in range(300))),  # garbage
            (HOST, encode_frame(2, Opcode.IDENTIFY)[:-1]),  # cut inside the CRC
            (HOST, encode_frame(8, Opcode.STATUS)),
        ]
    )
    answers = [answer(d) for d in sent]
    assert [f.seq for _, f in answers] == [7, 8]
    status = parse_status(answers[-1][1].payload[1:])
    assert status["framing_errors"] >= 2 and status["frames_ok"] == 2


def test_each_link_gets_its_own_answers():
    stream = b"".join(encode_frame(seq, Opcode.STATUS) for seq in range(10, 16))
    datagrams = [(HOST, encode_frame(seq, Opcode.IDENTIFY)) for seq in range(1, 7)]
    sent, frames = serve(datagrams, stream, seed=5)
    assert sorted(f.seq for _, f in map(answer, sent)) == list(range(1, 7))
    assert [f.seq for f in frames] == list(range(10, 16))
    assert all(f.opcode == Opcode.STATUS | RESPONSE_FLAG for f in frames)
    info = DeviceInfo.parse(answer(sent[0])[1].payload[1:])
    assert info.link_kind == LinkKind.ETHERNET


def test_datagrams_arriving_while_the_link_is_busy_wait_whole_or_are_dropped_whole():
    """Back-to-back 1 KB datagrams while the answers leave slowly: the buffer keeps whole ones
    while it has room for the largest, drops the others whole; none is cut or mixed."""
    count, size = 12, 900

    def write(seq):
        return encode_frame(seq, Opcode.WRITE, write_payload(BufferSpace.ACT_IN, 0, bytes(size)))

    # first most of twice the buffer, a datagram at a time, then a burst: its byte counts wrap
    # (at twice the buffer) inside the burst
    datagrams = [(HOST, write(seq), 4_000) for seq in range(100, 100 + 8)]
    datagrams += [(HOST, write(seq)) for seq in range(1, count + 1)]
    datagrams.append((HOST, encode_frame(99, Opcode.STATUS), 30_000))  # once all is done
    sent, _ = serve(datagrams, send_ready=0.02)
    answers = [answer(d)[1] for d in sent]
    assert [f.seq for f in answers[:8]] == list(range(100, 108))
    answers = answers[8:]
    served = [f.seq for f in answers[:-1]]
    assert served == sorted(served) and BUFFER_BYTES // (size + 20) <= len(served) < count
    assert all(f.payload == bytes([Status.OK]) for f in answers[:-1])
    status = parse_status(answers[-1].payload[1:])
    assert status["crc_errors"] == status["framing_errors"] == 0
    assert status["frames_ok"] == 8 + len(served) + 1
