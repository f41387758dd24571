"""The host's UDP link (``udp://``: host.transport.UdpTransport, host.driver's windowed transfers)
against a Python stand-in for the board's Ethernet, no simulator needed.

``FakeUdpBoard`` is tests/test_resident_host.py's ``FakeResidentBoard`` behind a UDP socket on
127.0.0.1, with protocol v8's UDP rules as hw.soc.link.udp has them: one frame per datagram,
answered to its sender; a datagram that is not exactly one good frame is dropped; the host is
the sender of the first valid frame, an IDENTIFY from anywhere makes its sender the host, any
other sender's frames are dropped unanswered; a RUN_RESIDENT with the last started
run's seq is answered OK without running again (until an IDENTIFY or a MODEL_COMMIT); frames are
served one at a time from a bounded inbox (a datagram arriving when it is full is dropped, as
in front of LiteEth's buffers). tests/netem.py's ``LossyProxy`` sits between the two.

These tests prove the host's logic; the simulated board's gateware over the same path is
tests/e2e's (it needs the Ethernet harness).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import socket
import threading
import time
from collections import Counter, deque

import numpy as np
import pytest

from fpga.spec.commands import SLOTS
from fpga.spec.image import bundled_photos
from fpga.spec.protocol import (
    ETHERNET_DATAGRAM_OVERHEAD,
    FRAME_OVERHEAD,
    MEM_WRITE_REQUEST,
    RESPONSE_FLAG,
    FrameError,
    LinkKind,
    LinkRate,
    Opcode,
    Status,
    decode_frame,
    encode_frame,
    identify_payload,
    mem_write_payload,
)
from host.driver import UDP_WINDOW, Device, LinkError, RetransmitTimer
from host.transport import TransportError, UdpTransport
from tests.netem import LossyProxy
from tests.test_resident_host import FakeResidentBoard, small, sqz_model, three  # noqa: F401

ETHERNET_BPS = 100_000_000


class FakeUdpBoard(FakeResidentBoard):
    """A :class:`FakeResidentBoard` serving UDP on 127.0.0.1 (see the module doc).

    ``capacity``: datagrams the inbox holds (one more is dropped: ``counts["overflow"]``);
    ``gather``: wait until this many datagrams are in the inbox (or none came for 50 ms) before
    serving one, so that the host's frames in flight are seen together (``most_waiting``)."""

    def __init__(self, capacity: int = 8, gather: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.capacity, self.gather = capacity, gather
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.url = f"udp://127.0.0.1:{self.address[1]}"
        self.peer: str | None = None
        self.replay = False  # a RUN_RESIDENT with run_seq replays the last run
        self.run_seq: int | None = None
        self.counts = Counter()  # malformed, not_peer (dropped), overflow
        self.inbox: deque = deque()
        self.most_waiting = 0  # the most MEM_WRITE seqs in the inbox at once
        self.deaf: dict[int, int] = {}  # MEM_WRITE address -> copies of it to ignore
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def handle(self, opcode: Opcode, payload: bytes, seq: int = 0):
        if opcode == Opcode.IDENTIFY:
            self.replay = False
            return Status.OK, identify_payload(
                self.config,
                dram_bytes=self.dram_bytes,
                link=LinkKind.ETHERNET,
                link_bps=ETHERNET_BPS,
            )
        replayed = self.replay and seq == self.run_seq and self.model["loaded"]
        if opcode == Opcode.RUN_RESIDENT and self.running is None and replayed:
            return Status.OK, b""  # the replay of the last run: answered, not run again
        started = len(self.starts)
        status, body = super().handle(opcode, payload, seq)
        if opcode == Opcode.MODEL_COMMIT:
            self.replay = False
        if len(self.starts) > started:
            self.replay, self.run_seq = True, seq
        return status, body

    # -- the network side -------------------------------------------------------------------
    def _take(self, timeout: float) -> bool:
        """Move the datagrams that arrive within ``timeout`` into the inbox; any came?"""
        came = False
        while select.select([self.sock], [], [], timeout)[0]:
            timeout = 0
            try:
                data, sender = self.sock.recvfrom(65535)
            except OSError:
                continue
            came = True
            if len(self.inbox) >= self.capacity:
                self.counts["overflow"] += 1
            else:
                self.inbox.append((data, sender))
        # the distinct MEM_WRITE seqs waiting (header: sync, length, seq at 4, opcode at 5)
        waiting = {data[4] for data, _ in self.inbox if data[5:6] == bytes([Opcode.MEM_WRITE])}
        self.most_waiting = max(self.most_waiting, len(waiting))
        return came

    def serve(self) -> None:
        while not self.stop.is_set():
            came = self._take(0.05 if not self.inbox else 0)
            if self.gather and 0 < len(self.inbox) < self.gather and came:
                # gather the host's window, or go on after a quarter second (a busy CI machine
                # takes its time between two sends; the test's resend timer waits a second)
                deadline = time.monotonic() + 0.25
                while len(self.inbox) < self.gather and time.monotonic() < deadline:
                    self._take(0.05)
            if self.inbox:
                self.serve_one(*self.inbox.popleft())

    def serve_one(self, data: bytes, sender: tuple[str, int]) -> None:
        try:
            frame = decode_frame(data, self.config.max_payload)
        except FrameError:
            self.counts["malformed"] += 1
            return
        if frame.opcode not in Opcode._value2member_map_:
            self.answer(frame.seq, frame.opcode, Status.BAD_OPCODE, sender)
            return
        if self.peer not in (None, sender[0]) and frame.opcode != Opcode.IDENTIFY:
            self.counts["not_peer"] += 1  # dropped unanswered
            return
        self.peer = sender[0]
        if frame.opcode == Opcode.MEM_WRITE:
            addr = MEM_WRITE_REQUEST.unpack(frame.payload)["addr"]
            if self.deaf.get(addr):
                self.deaf[addr] -= 1
                return
        self.write(data)  # FakeResidentBoard: handle it, the answer in pending
        if self.pending:
            self.sock.sendto(bytes(self.pending), sender)
            self.pending.clear()

    def answer(self, seq: int, opcode: int, status: Status, to) -> None:
        self.sock.sendto(encode_frame(seq, opcode | RESPONSE_FLAG, bytes([status])), to)


@pytest.fixture
def board():
    board = FakeUdpBoard()
    yield board
    board.close()


def udp_device(url: str, **kwargs) -> Device:
    """A device on ``url`` with the short waits a Python stand-in allows: a lost RESIDENT_WAIT
    costs 0.5 s, not the cycle-based bound meant for the simulated board."""
    device = Device.open(url, **{"timeout": 0.5, "retries": 10, **kwargs})
    device.MIN_CYCLES_PER_SECOND = 10**12
    device.timer = RetransmitTimer(0.5, floor=0.02)
    return device


# -- the transport ------------------------------------------------------------------------------
def test_the_transport_takes_whole_frames_from_the_boards_address_only():
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    board.bind(("127.0.0.1", 0))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    transport = UdpTransport("udp://test", board.getsockname())
    try:
        transport.write(encode_frame(1, Opcode.STATUS))
        data, host = board.recvfrom(65535)  # one datagram, one frame, from an ephemeral port
        assert decode_frame(data).opcode == Opcode.STATUS and host[1] == transport.local_port
        answer = encode_frame(1, Opcode.STATUS | RESPONSE_FLAG, bytes([Status.OK]))
        other.sendto(answer, host)  # another address: ignored
        board.sendto(answer[:-1], host)  # not a whole frame: dropped
        board.sendto(answer + b"x", host)  # a frame and more: dropped
        board.sendto(answer, host)
        assert transport.read(1000, 2.0) == answer
        assert (transport.ignored, transport.malformed) == (1, 2)
        assert transport.read(1000, 0.0) == b""
        with pytest.raises(TransportError, match="does not fit one datagram"):
            transport.write(bytes(1473))
    finally:
        transport.close()
        board.close()
        other.close()


def test_ethernet_link_time_counts_each_datagrams_overhead():
    ethernet = LinkRate(LinkKind.ETHERNET, ETHERNET_BPS)
    assert ETHERNET_DATAGRAM_OVERHEAD == 66
    assert ethernet.seconds(1000, 2) == pytest.approx((1000 + 2 * 66) * 8 / 1e8)
    # a full MEM_WRITE (1024-byte payload: 1020 data bytes) and its status-only answer: the
    # data use > 80 % of the line rate, both directions added up
    request, answer = FRAME_OVERHEAD + 1024, FRAME_OVERHEAD + 1
    data_s = 1020 * 8 / ETHERNET_BPS
    assert 0.8 < data_s / ethernet.seconds(request + answer, 2) < 0.9
    with pytest.raises(ValueError, match="no line rate"):
        LinkRate(LinkKind.STREAM, 0)


# -- the driver over UDP ------------------------------------------------------------------------
def test_identify_reports_ethernet_and_mem_writes_keep_a_window_in_flight(board):
    board.gather = UDP_WINDOW
    device = udp_device(board.url)
    device.timer = RetransmitTimer(1.0, floor=1.0)  # no resends while the board gathers
    info = device.identify()
    assert (info.link_kind, info.link_bps) == (LinkKind.ETHERNET, ETHERNET_BPS)
    chunk = info.max_payload - MEM_WRITE_REQUEST.size
    data = np.random.default_rng(3).integers(0, 256, 10 * chunk + 7, dtype=np.uint8).tobytes()
    device.mem_write(5000, data)
    assert bytes(board.dram[5000 : 5000 + len(data)]) == data
    assert board.dram[4999] == 0 and board.dram[5000 + len(data)] == 0
    # the host sent UDP_WINDOW frames before the first answer, never more
    assert board.most_waiting == UDP_WINDOW and device.retried == 0
    assert device.mem_read(5000, len(data)) == data
    device.close()


def test_a_small_inbox_drops_datagrams_and_the_retries_still_land_exactly(board):
    board.capacity = 1  # the board holds one datagram while it serves one: the rest are lost
    board.gather = 0
    device = udp_device(board.url)
    device.identify()
    data = np.random.default_rng(4).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    device.mem_write(0, data)
    assert bytes(board.dram[: len(data)]) == data
    device.close()


def test_a_frame_resent_many_times_never_shares_its_seq(board):
    """The first MEM_WRITE is ignored 5 times while the rest of the window moves on: more than
    256 frames go by meanwhile, and no new frame may take the stuck one's seq."""
    device = udp_device(board.url)
    device.identify()
    board.deaf[0] = 5
    chunk = device.max_payload - MEM_WRITE_REQUEST.size
    data = np.random.default_rng(5).integers(0, 256, 400 * chunk, dtype=np.uint8).tobytes()
    device.mem_write(0, data)
    assert bytes(board.dram[: len(data)]) == data
    assert board.deaf[0] == 0 and device.retried >= 5
    device.close()


def test_a_new_run_never_takes_the_last_runs_seq(small, board):  # noqa: F811
    _, x, images, expected = small
    image = images["indices"]
    device = udp_device(board.url)
    device.identify()
    device.load_model(image)
    logits, _ = device.run_resident(image, x)
    first = device.last_run_seq
    device.seq = (first - 1) & 0xFF  # the next request would take the last run's seq
    logits, _ = device.run_resident(image, x)
    np.testing.assert_array_equal(logits, expected)
    assert len(board.starts) == 2 and board.run_seq == device.last_run_seq != first
    device.seq = 0xFF  # and across the wrap
    device.last_run_seq = 0
    device.start_program(image.input_address(0), image.output_address(0))
    assert board.run_seq == 1 and len(board.starts) == 3
    device.wait_program()
    device.close()


@pytest.mark.parametrize("rate,seed", [(0.01, 1), (0.05, 2)])
def test_a_lossy_link_loads_runs_and_reads_exactly(small, three, board, rate, seed):  # noqa: F811
    """Drops, duplicates, reorders and delays at ``rate`` each, both ways: the model lands
    byte for byte, every image's logits equal golden, each image starts exactly one run."""
    _, _, images, _ = small
    xs, expected = three
    image = images["huffman"]
    fates = {"loss": rate, "duplicate": rate, "reorder": rate, "delay": rate}
    with LossyProxy(board.address, seed=seed, **fates) as proxy:
        device = udp_device(proxy.url)
        device.identify()
        load = device.load_model(image)
        assert load.loaded and board.model["loaded"]
        assert bytes(board.dram[: image.load_size]) == image.load_bytes()
        done = list(device.run_resident_many(image, xs))
        device.close()
    for (logits, stats), want in zip(done, expected, strict=True):
        np.testing.assert_array_equal(logits, want)
        assert stats["link_frames"] > 0
    slots = [i % SLOTS for i in range(len(xs))]
    assert board.starts == [(image.input_address(s), image.output_address(s)) for s in slots]
    for i in range(len(xs) - SLOTS, len(xs)):  # the last inputs are in their slots
        at = image.input_address(i % SLOTS)
        assert bytes(board.dram[at : at + image.input_bytes()]) == image.input_blob(xs[i])
    for fate in ("dropped", "duplicated", "reordered", "delayed"):
        assert proxy.total(fate) > 0, (fate, proxy.counts)
    assert device.retried > 0
    print(f"rate {rate}: {proxy.counts}, {device.retried} resent")


def test_garbage_on_the_port_leaves_the_board_serving_its_host(small, three, board):  # noqa: F811
    """Random datagrams of any length (from the host's address and another), and good frames
    from another address, while the host loads a model and runs: the board keeps its host,
    drops the other sender's frames."""
    _, _, images, _ = small
    xs, expected = three
    image = images["indices"]
    device = udp_device(board.url)
    device.identify()
    stop = threading.Event()
    sent = Counter()

    def spray():
        rng = random.Random(7)
        near = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        near.bind(("127.0.0.1", 0))
        far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        far.bind(("127.0.0.2", 0))
        junk = bytes(range(256)) * 4
        frames = [
            encode_frame(9, Opcode.MEM_WRITE, mem_write_payload(0, junk[:1000])),
            encode_frame(10, Opcode.STATUS),
            encode_frame(11, Opcode.RUN_RESIDENT, bytes(8)),
        ]
        with near, far:
            while not stop.is_set():
                length = rng.choice([0, 1, 5, 13, 100, 1472, 1500, 4000])
                noise = rng.randbytes(length)
                near.sendto(noise, board.address)
                far.sendto(noise, board.address)
                far.sendto(rng.choice(frames), board.address)
                sent["datagrams"] += 3
                time.sleep(0.001)

    sprayer = threading.Thread(target=spray, daemon=True)
    sprayer.start()
    try:
        assert device.load_model(image).loaded
        done = list(device.run_resident_many(image, xs))
    finally:
        stop.set()
        sprayer.join()
    for (logits, _), want in zip(done, expected, strict=True):
        np.testing.assert_array_equal(logits, want)
    model = image.load_bytes()[: image.commit_size]
    assert bytes(board.dram[: image.commit_size]) == model  # not the other sender's MEM_WRITE
    assert board.peer == "127.0.0.1" and len(board.starts) == len(xs)
    assert board.counts["not_peer"] > 0 and board.counts["malformed"] > 0
    assert device.status()["model_loaded"] == 1
    device.close()


def test_another_host_taking_the_board_is_one_clear_error(board):
    device = udp_device(board.url, retries=2)
    device.identify()
    device.status()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    with other:
        other.sendto(encode_frame(1, Opcode.IDENTIFY), board.address)  # the other host's session
        other.settimeout(5)
        assert decode_frame(other.recv(65535)).payload[0] == Status.OK
    served = len(board.frames)
    with pytest.raises(LinkError, match="Another host may have taken it over") as caught:
        device.status()
    assert caught.value.exit_code == 1 and board.url in str(caught.value)
    assert len(board.frames) == served and board.counts["not_peer"] == 3  # dropped, not served
    device.identify()  # this host's IDENTIFY takes the board back
    assert board.peer == "127.0.0.1" and device.status()["frames_ok"] > served
    device.close()


@pytest.fixture
def silent():
    """A UDP port where nothing answers, and what it received."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def received() -> list[int]:
        sock.settimeout(0)
        opcodes = []
        with contextlib.suppress(BlockingIOError):
            while True:
                opcodes.append(decode_frame(sock.recv(65535)).opcode)
        return opcodes

    yield f"udp://127.0.0.1:{sock.getsockname()[1]}", received
    sock.close()


def test_a_board_that_does_not_answer_is_one_error_naming_its_address(silent):
    url, received = silent
    device = udp_device(url)
    device.CONTACT_TIMEOUT = 0.05
    with pytest.raises(LinkError, match=f"no answer from the board at {url}") as caught:
        device.identify()
    assert caught.value.exit_code == 1
    assert received() == [Opcode.IDENTIFY] * Device.CONTACT_ATTEMPTS
    device.close()


def test_the_cli_exits_1_with_one_line_for_a_dead_board(silent, tmp_path, capsys):
    from fpga.spec.image import bundled_photos
    from fpga.spec.sqz import write_model
    from host.infer import main
    from tests.sqz_samples import shared_weights, tiny_network

    url, received = silent
    network = tiny_network(np.random.default_rng(33))
    model = tmp_path / "tiny.sqz"
    write_model(model, network, shared_weights(network), 6)
    photo = str(bundled_photos()[0])
    assert main([photo, "--model", str(model), "--device", url, "--no-progress"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no answer from the board at {url}")
    assert received() == [Opcode.IDENTIFY] * Device.CONTACT_ATTEMPTS


def test_the_simulated_board_on_ethernet_is_started_reached_over_udp_and_stopped(tmp_path):
    """BoardProcess(link="ethernet") reads "UDP <port>" and ends the board with SIGTERM (it has
    no connection whose end would end it)."""
    from host.simulated import BoardProcess, SimulatedBoardError

    ethernet, uart = tmp_path / "ethernet-board", tmp_path / "uart-board"
    ethernet.write_text(
        "#!/bin/sh\ntrap 'echo CYCLES 7 >&2; exit 0' TERM\necho UDP 4321\n"
        "while :; do sleep 0.05; done\n"
    )
    uart.write_text("#!/bin/sh\necho PORT 1234\n")
    for binary in (ethernet, uart):
        binary.chmod(0o755)
    with BoardProcess(ethernet, "ethernet") as board:
        assert board.url == "udp://127.0.0.1:4321"
    assert board.cycles == 7  # it ended on SIGTERM, not on the 5 s kill
    with BoardProcess(uart) as board:
        assert board.url == "socket://127.0.0.1:1234"
    with pytest.raises(SimulatedBoardError, match="unknown link 'pcie'"):
        BoardProcess(uart, "pcie")


def test_udp_urls_take_what_they_leave_out_from_the_board_registry():
    from fpga.spec.boards import BOARDS
    from host.transport import udp_address, udp_local_port

    arty = BOARDS["arty_a7"].ethernet
    assert udp_address("udp://") == (arty.ip_address, arty.udp_port) == ("192.168.1.50", 2000)
    assert udp_address("udp://", "arty_a7_100") == ("192.168.1.50", 2000)
    assert udp_address("udp://10.0.0.7") == ("10.0.0.7", 2000)
    assert udp_address("udp://localhost:4000") == ("127.0.0.1", 4000)
    # the host binds the board's port (the board answers it), any port for a board on this host
    assert udp_local_port(("192.168.1.50", 2000)) == 2000
    assert udp_local_port(("127.0.0.1", 4000)) == 0


def test_infer_cli_over_udp_predicts_over_the_boards_ethernet(board, sqz_model, capsys):  # noqa: F811
    from host.classify import predicted_images_per_s
    from host.infer import main

    photos = [str(p) for p in bundled_photos()[:2]]
    argv = [*photos, "--model", str(sqz_model), "--device", board.url, "--no-progress"]
    assert main([*argv, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert all(r["mode"] == "resident" and r["golden_match"] for r in results)
    for r in results:
        link = (r["link_kind"], r["link_bps"], r["device_link"])
        assert link == ("ethernet", ETHERNET_BPS, "ethernet")
        seconds = LinkRate(LinkKind.ETHERNET, ETHERNET_BPS).seconds(
            r["link_bytes"], r["link_frames"]
        )
        assert seconds > r["link_bytes"] * 8 / ETHERNET_BPS  # each datagram's overhead counts
        assert r["predicted_images_per_s"] == predicted_images_per_s(
            r["cycles"], r["clock_hz"], seconds, overlap=True
        )
    assert len(board.starts) == len(photos)
    main(argv)  # the text report names the link
    assert "over 100 Mbit/s Ethernet" in capsys.readouterr().out


def test_a_request_the_board_keeps_refusing_is_resent_then_one_error(board):
    """BAD_CRC answers (the request arrived damaged) are resent like lost ones, then end in
    one error that does not blame a silent board."""
    device = udp_device(board.url, retries=2)
    device.identify()
    board.handle = lambda opcode, payload, seq=0: (Status.BAD_CRC, b"")
    with pytest.raises(
        LinkError, match=r"STATUS failed after 3 attempts \(device answered BAD_CRC"
    ):
        device.status()
    assert board.frames.count(Opcode.STATUS) == 3 and device.retried == 2
    device.close()


def test_sessions_with_several_boards_share_the_port_the_boards_answer():
    """Boards answer the host at their own port number: two sessions on one host (a batch over
    two boards) both bind it, and each gets its own board's datagrams only."""
    port = 20_000 + os.getpid() % 20_000
    boards = []
    for ip in ("127.0.0.2", "127.0.0.3"):
        board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        board.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        board.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # the hosts' port, too
        board.bind((ip, port))
        boards.append(board)
    sessions = [
        UdpTransport(f"udp://{ip}:{port}", (ip, port), port) for ip in ("127.0.0.2", "127.0.0.3")
    ]
    try:
        for _ in range(3):
            for seq, board in enumerate(boards):
                board.sendto(encode_frame(seq, Opcode.STATUS), ("127.0.0.1", port))
        for seq, session in enumerate(sessions):
            got = b""
            while len(got) < 3 * len(encode_frame(seq, Opcode.STATUS)):
                chunk = session.read(4096, 2.0)
                assert chunk, "a session missed its board's datagrams"
                got += chunk
            assert got == 3 * encode_frame(seq, Opcode.STATUS)
    finally:
        for s in (*sessions, *boards):
            s.close()
