"""The simulated board's Ethernet (sim/board/ethernet.h): the MII PHY and the network it plays,
against the generated LiteEth core (fpga.build.liteeth) with a UDP echo (sim/board/eth_loopback.v)
under Verilator. Datagrams go from a 127.0.0.x socket through the harness's UDP socket, become
Ethernet/IPv4/UDP frames on the MII pins, cross the core, come back as frames (after ARP) and
leave as datagrams to their sender."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import subprocess
import time
from contextlib import contextmanager

import pytest

from sim import runner

TIMEOUT = 20.0  # seconds for one echo (generous: the machine is shared)


@pytest.fixture(scope="module")
def echo_board():
    if not runner.simulator_available("verilator"):
        pytest.skip("verilator is not installed")
    from fpga.build.liteeth import LiteEthMissing
    from sim.board import ethloop

    try:
        return ethloop.build()
    except LiteEthMissing as exc:
        pytest.skip(f"the LiteEth core cannot be generated: {exc}")


class Run:
    """A running echo board: ``port`` is its UDP socket on 127.0.0.1; after the block,
    ``counters`` has what it printed (the network's ETH counters, CYCLES, SECONDS, ECHOED...)."""

    def __init__(self, port: int):
        self.port = port
        self.counters: dict[str, float] = {}
        self.log = ""

    @property
    def address(self):
        return ("127.0.0.1", self.port)


@contextmanager
def running(echo_board, *extra):
    binary, core = echo_board
    from sim.board.ethloop import args

    process = subprocess.Popen(
        [str(binary), *args(core), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("UDP "), line + process.stderr.read()
        run = Run(int(line.split()[1]))
        yield run
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    run.log = err
    for key, value in re.findall(r"(\w+)=(\d+)", err):
        run.counters[key] = int(value)
    for key, value in re.findall(r"\b([A-Z]+) ([\d.]+)", err):
        run.counters[key.lower()] = float(value)
    for key in ("fcs_errors", "framing_errors", "ip_checksum_errors", "udp_checksum_errors"):
        assert run.counters[key] == 0, err  # the core's frames are well-formed
    assert run.counters["length_errors"] == run.counters["send_errors"] == 0, err


def udp(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.settimeout(TIMEOUT)
    return sock


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def read_capture(path, core) -> list[tuple[str, int, bytes]]:
    """The frames of a pcap file the network wrote, every one checked (layout, addresses, the
    IPv4 header checksum, the UDP checksum when nonzero): ``(direction, source port, payload)``
    of each UDP datagram, direction ``"in"`` toward the device and ``"out"`` from it."""
    device_mac = core.mac_address.to_bytes(6, "big")
    device_ip = socket.inet_aton(core.ip_address)
    data = path.read_bytes()
    magic, major, minor, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, major, minor, linktype) == (0xA1B23C4D, 2, 4, 1)
    datagrams, offset, last = [], 24, 0
    while offset < len(data):
        seconds, nanoseconds, length, original = struct.unpack("<IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        assert length == original >= 60 and nanoseconds < 10**9
        assert seconds * 10**9 + nanoseconds >= last  # simulated time
        last = seconds * 10**9 + nanoseconds
        dst, src, kind = frame[:6], frame[6:12], frame[12:14]
        if kind == b"\x08\x06":
            _, _, _, _, op, sha, spa, _, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
            if op == 1:  # the device asks for a host
                assert (dst, src, sha, spa) == (b"\xff" * 6, device_mac, device_mac, device_ip)
            else:  # a host answers
                assert op == 2 and (dst, tpa) == (device_mac, device_ip) and src == sha
                assert sha == b"\x02\x00" + spa
            continue
        assert kind == b"\x08\x00"
        ip = frame[14:34]
        assert ip[0] == 0x45 and ip[9] == 17 and _checksum(ip) == 0xFFFF
        total = struct.unpack("!H", ip[2:4])[0]
        udp = frame[34 : 14 + total]
        sport, dport, ulen, check = struct.unpack("!HHHH", udp[:8])
        assert ulen == len(udp) == total - 20
        if check:
            pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, ulen)
            assert _checksum(pseudo + udp) == 0xFFFF
        if src == device_mac:
            assert (ip[12:16], dst) == (device_ip, b"\x02\x00" + ip[16:20])
            datagrams.append(("out", sport, udp[8:]))
        else:
            assert (dst, ip[16:20], dport) == (device_mac, device_ip, core.udp_port)
            assert src == b"\x02\x00" + ip[12:16] and check != 0
            datagrams.append(("in", sport, udp[8:]))
    return datagrams


def echo_all(sock: socket.socket, board: Run, payloads: list[bytes], window: int = 8) -> None:
    """Send ``payloads`` to the board, ``window`` in flight, and check every echo arrives intact,
    in order, from the board's socket."""
    sent = 0
    for index, payload in enumerate(payloads):
        while sent < len(payloads) and sent < index + window:
            sock.sendto(payloads[sent], board.address)
            sent += 1
        data, sender = sock.recvfrom(4096)
        assert sender == board.address
        assert data == payload, f"datagram {index} ({len(payload)} bytes) came back as {len(data)}"


def test_datagrams_of_every_size_come_back_intact_several_in_flight(echo_board, tmp_path):
    rng = random.Random(33)
    sizes = [*range(1, 33), *rng.sample(range(33, 1440), 40), *range(1440, 1473)]
    rng.shuffle(sizes)
    payloads = [rng.randbytes(size) for size in sizes]
    core = echo_board[1]
    capture = tmp_path / "eth.pcap"
    with running(echo_board, "--host-port", str(core.udp_port), "--pcap", str(capture)) as board:
        with udp() as sock:
            echo_all(sock, board, payloads)
    # on the wire: every frame well-formed, the datagrams both ways with the translated port
    datagrams = read_capture(capture, core)
    assert [d for way, _, d in datagrams if way == "in"] == payloads
    assert [d for way, _, d in datagrams if way == "out"] == payloads
    assert {port for _, port, _ in datagrams} == {core.udp_port}
    counters = board.counters
    assert counters["to_device"] == counters["from_device"] == counters["echoed"] == len(sizes)
    assert counters["queue_drops"] == counters["dropped"] == counters["unroutable"] == 0
    assert counters["arp_requests"] == 1  # the device asked for 192.168.1.100 once


def test_another_host_gets_its_own_replies(echo_board):
    """127.0.0.2 is 192.168.1.101 on the simulated network: its datagrams come back to it."""
    rng = random.Random(2)
    payloads = [rng.randbytes(rng.randrange(1, 1473)) for _ in range(8)]
    with running(echo_board, "--host-port", str(echo_board[1].udp_port), "--verbose") as board:
        with udp("127.0.0.2") as sock:
            echo_all(sock, board, payloads)
    assert board.counters["echoed"] == len(payloads)
    assert "ARP: 192.168.1.101 is at 0200c0a80165" in board.log


def test_two_hosts_at_once(echo_board):
    """Two hosts talking to the board at once each get their own answers: LiteEth 2024.12's ARP
    cache answered a hit in its second entry with the first entry's MAC, which
    ``fpga.build.liteeth.ARP_CACHE_FIX`` mends in the generated core (this test timed out
    before)."""
    rng = random.Random(12)
    mine = [rng.randbytes(rng.randrange(1, 1473)) for _ in range(6)]
    theirs = [rng.randbytes(rng.randrange(1, 1473)) for _ in range(6)]
    with running(echo_board, "--host-port", str(echo_board[1].udp_port)) as board:
        with udp() as first, udp("127.0.0.2") as second:
            for sock in (first, second):
                sock.settimeout(1.0)
            for a, b in zip(mine, theirs, strict=True):
                first.sendto(a, board.address)
                second.sendto(b, board.address)
            for sock, expected in ((first, mine), (second, theirs)):
                for payload in expected:
                    data, sender = sock.recvfrom(4096)
                    assert (data, sender) == (payload, board.address)


def test_without_host_port_translation_replies_go_to_the_same_port(echo_board):
    """The plain mapping: 127.0.0.3:P is 192.168.1.102:P and back. P is the core's port (the
    raw port routes what it receives by the port it sends to)."""
    port = echo_board[1].udp_port
    try:
        sock = udp("127.0.0.3", port)
    except OSError as exc:
        pytest.skip(f"cannot bind 127.0.0.3:{port}: {exc}")
    rng = random.Random(3)
    payloads = [rng.randbytes(size) for size in (1, 700, 1472, 64, 1472)]
    with sock, running(echo_board) as board:
        echo_all(sock, board, payloads, window=5)
    assert board.counters["echoed"] == len(payloads)


def test_overflow_oversize_and_strangers_are_dropped_and_counted(echo_board):
    with running(echo_board, "--host-port", "2000", "--queue", "4") as board:
        with udp() as sock, udp("127.0.0.200") as stranger:
            stranger.sendto(b"not a host", board.address)  # 127.0.0.200: not one of the 16
            sock.sendto(bytes(1473), board.address)  # more than one frame's payload
            # a burst larger than the switch's queue: the harness drains its socket every 1024
            # cycles, so the burst arrives at once and all but 4 are dropped
            burst = [os.urandom(1000) for _ in range(20)]
            for payload in burst:
                sock.sendto(payload, board.address)
            # then a marker once the queue has drained (again if it came too soon and was
            # dropped): its echo comes after all the others
            time.sleep(0.2)
            sock.settimeout(2.0)
            echoes, markers = [], 0
            while True:
                sock.sendto(b"marker", board.address)
                markers += 1
                try:
                    while (data := sock.recvfrom(4096)[0]) != b"marker":
                        echoes.append(data)
                    break
                except TimeoutError:
                    continue  # the marker was dropped too: another
            sock.settimeout(TIMEOUT)
            assert echoes and all(echo in burst for echo in echoes)
            # the board still serves
            echo_all(sock, board, [b"still here"])
    counters = board.counters
    assert counters["stranger_drops"] == 1 and counters["too_big_drops"] == 1
    assert counters["queue_drops"] > 0
    assert counters["queue_drops"] == len(burst) - len(echoes) + markers - 1
    assert counters["echoed"] == len(echoes) + 2


def test_sticky_translation_keeps_the_first_port_as_the_host(echo_board):
    """With --sticky the host's first socket keeps port translation: another socket of the
    same address is seen by the device with its own port (and answered there), and the host's
    replies still reach the host."""
    with running(echo_board, "--host-port", str(echo_board[1].udp_port), "--sticky") as board:
        with udp() as host, udp() as other:
            echo_all(host, board, [b"host 1"])
            echo_all(other, board, [b"other"])  # one at a time: see eth_loopback.v
            echo_all(host, board, [b"host 2"])
    assert board.counters["echoed"] == 3
