"""The host driver: framed commands over any transport, with timeouts and retries.

Every request carries a sequence number; a response must echo it, have a good CRC and status OK.
A lost, corrupted or late response makes the driver resend the same request (all commands are
idempotent, see fpga.spec.protocol) up to ``retries`` times, then raise :class:`LinkError`. A
definite refusal (the engine's or the sequencer's error, no model, a model whose CRC differs)
is not retried: it becomes one :class:`DeviceError` saying what the device reported.

Streamed mode (``write``/``read``/``run``: the host walks the program,
``fpga.compiler.program.execute``) and resident mode
(``load_model``/``run_resident``/``run_resident_many``: the model lives in the board's DRAM and the
device's sequencer walks the command list, docs/resident.md) share the framing. Since protocol v5 a
resident run is started (``start_program``, RUN_RESIDENT answers at once) and waited for
(``wait_program``, RESIDENT_WAIT); while it runs the device serves MEM_WRITE and MEM_READ, so
``run_resident_many`` moves the next image's input and the last one's logits while the device
computes.

Over a datagram link (``udp://``, ``host.transport.UdpTransport``: one frame per datagram) the
transfers are windowed: up to :data:`UDP_WINDOW` MEM_WRITE (or MEM_READ) frames are in flight,
each answered by its seq; a frame whose answer does not come within the retransmission timeout
(:class:`RetransmitTimer`, from the measured round trips) is sent again with the same seq, and an
answer whose seq is not in flight (a late duplicate) is ignored. A serial port or a socket keeps
one frame at a time: the UART device has no input buffering. Every new RUN_RESIDENT takes a seq
other than the previous run's (protocol v8: the device answers a RUN_RESIDENT with the last run's
seq without running again, so a duplicated or resent request never runs twice).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fpga.compiler.resident import ResidentImage
from fpga.compiler.traffic import device_cycles
from fpga.spec.commands import SLOTS
from fpga.spec.config import AcceleratorConfig
from fpga.spec.errors import DEVICE_EXIT, UserError
from fpga.spec.protocol import (
    IDENTIFY_PREFIX,
    MAGIC,
    MEM_WRITE_REQUEST,
    MODEL_COMMIT_REQUEST,
    MODEL_COMMIT_RESPONSE,
    PROTOCOL_VERSION,
    RESIDENT_RUN_REQUEST,
    RESIDENT_RUN_RESPONSE,
    RESPONSE_FLAG,
    RESPONSE_STATUS,
    RUN_RESPONSE,
    UDP_MAX_DATAGRAM,
    WRITE_REQUEST,
    DeviceInfo,
    DramState,
    Frame,
    FrameError,
    FrameParser,
    Opcode,
    Status,
    crc32,
    encode_frame,
    mem_read_payload,
    mem_write_payload,
    parse_status,
    read_payload,
    udp_frame_fits,
    write_payload,
)
from host.transport import open_transport


class LinkError(UserError, ConnectionError):
    """The device did not answer correctly after all retries (a CLI exits 1: the board or the
    link failed, not the user's input)."""

    exit_code = DEVICE_EXIT


class DeviceMismatch(UserError, RuntimeError):
    """The device runs a different protocol or configuration than the host expects."""


class DeviceError(UserError, RuntimeError):
    """The device refused a command: its sequencer or engine reported an error (the message
    names the sequencer's error code and the command's DRAM address)."""


class NoModel(DeviceError):
    """RUN_RESIDENT on a device that holds no committed model (load one first)."""


class BadModel(DeviceError):
    """MODEL_COMMIT: the CRC-32 the device read back over DRAM differs from the host's."""


class DramNotReady(DeviceError):
    """The device's DRAM controller has not finished its init/calibration, or it failed."""


class DeviceBusy(DeviceError):
    """BUSY: a resident program is running on the device and the request would disturb it
    (streamed WRITE/READ/RUN, MODEL_COMMIT, a MEM_WRITE into the model, another RUN_RESIDENT)."""


class NoDram(UserError, RuntimeError):
    """A resident-mode command for a device whose IDENTIFY reports no DRAM."""


#: statuses that answer a request for good: retrying the same request cannot change them
FINAL_STATUSES = frozenset(
    {
        Status.OK,
        Status.ENGINE_ERROR,
        Status.DEVICE_ERROR,
        Status.NO_MODEL,
        Status.BAD_MODEL,
        Status.DRAM_NOT_READY,
        Status.BUSY,
        Status.BAD_ADDRESS,
    }
)

#: MEM_WRITE / MEM_READ frames in flight at once over a datagram link: enough to keep 100 Mbit
#: busy across the host's round trip, few enough for the few datagrams LiteEth buffers in front
#: of the device (one more is dropped, and resent)
UDP_WINDOW = 4
#: how far the seqs in flight may spread: a frame resent many times holds back new frames once
#: the next seq is this far past its own, so two frames in flight never share a seq, and an
#: answer is never taken for a request 256 seqs later (seq is u8)
SEQ_SPAN = 128


class RetransmitTimer:
    """The retransmission timeout of a datagram link, Jacobson/Karels as TCP's (RFC 6298): the
    smoothed round trip plus four times its mean deviation, from answers to frames sent once
    (Karn: a resent frame's answer says nothing), doubled on every timeout; between ``floor`` and
    ``ceiling`` seconds (of the driver's clock), ``ceiling`` until the first round trip."""

    def __init__(self, ceiling: float, floor: float = 0.05):
        self.floor, self.ceiling = min(floor, ceiling), ceiling
        self.rto = ceiling
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(self.ceiling, max(self.floor, self.srtt + 4 * self.rttvar))

    def backoff(self) -> None:
        self.rto = min(self.ceiling, 2 * self.rto)


@dataclass
class _InFlight:
    """A request frame sent over a datagram link and not yet answered."""

    index: int  # its place among the requests of one exchange
    seq: int
    frame: bytes
    sent_at: float = 0.0
    deadline: float = 0.0
    attempts: int = 0


@dataclass(frozen=True)
class Traffic:
    """Link traffic, frames both ways: ``bytes`` (sync to CRC) and ``frames``."""

    bytes: int = 0
    frames: int = 0

    def __sub__(self, other: Traffic) -> Traffic:
        return Traffic(self.bytes - other.bytes, self.frames - other.frames)

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.bytes + other.bytes, self.frames + other.frames)


class ModelLoad(NamedTuple):
    """What :meth:`Device.load_model` did: whether it wrote the model (False: the device already
    held it) and the link bytes and frames it took, both ways (the STATUS query included)."""

    loaded: bool
    link_bytes: int
    link_frames: int = 0


class Device:
    """An accelerator behind a byte transport: write/read buffers, run layers."""

    #: slowest device we wait for, in cycles per second of the device's ``clock``: the simulated
    #: board with its DRAM controller runs ~60-400 k cycles per second of its own CPU time
    #: (real hardware is ~250x faster). Only a lost response waits this long; a response that
    #: comes late is a retry the device executes twice, delaying every later command (a long
    #: MODEL_COMMIT repeated this way made the next MEM_WRITEs time out), so the bound is
    #: generous.
    MIN_CYCLES_PER_SECOND = 25_000
    #: the first IDENTIFY over a datagram link: per attempt (seconds of the clock), and attempts,
    #: so that a board that does not answer is one error within a few seconds
    CONTACT_TIMEOUT = 0.5
    CONTACT_ATTEMPTS = 4

    def __init__(self, transport, timeout: float = 2.0, retries: int = 8, clock=time.monotonic):
        """``timeout`` and the cycle-based waits are seconds of ``clock``: the wall clock for a
        real board; for a simulated one the board's own (``host.simulated.BoardProcess.clock``,
        its CPU time), which a busy machine slows down with the board, where the wall clock
        would not. Over a datagram link ``timeout`` is the longest retransmission timeout."""
        self.transport = transport
        self.timeout = timeout
        self.clock = clock
        self.retries = retries
        self.seq = 0
        self.retried = 0
        self.link_bytes = 0
        self.link_frames = 0
        self.info: DeviceInfo | None = None
        self.max_payload = 256  # until IDENTIFY tells
        self.parser = FrameParser(self.max_payload + 1)
        #: whole frames per datagram (``host.transport.UdpTransport``): windowed transfers
        self.datagrams = bool(getattr(transport, "datagrams", False))
        self.window = UDP_WINDOW if self.datagrams else 1
        self.timer = RetransmitTimer(timeout)
        #: the seq of the last RUN_RESIDENT the device may have started (a new one avoids it)
        self.last_run_seq: int | None = None

    @classmethod
    def open(cls, url: str, baud: int | None = None, board: str | None = None, **kwargs) -> Device:
        """Open the device at ``url``; ``baud`` is the UART bit rate for a serial port (take it
        from the board registry, ``fpga.spec.boards``), ignored by sockets, PCIe and UDP;
        ``board`` names the board whose Ethernet address completes ``udp://``."""
        return cls(open_transport(url, baud, board), **kwargs)

    @property
    def url(self) -> str:
        return getattr(self.transport, "url", "the device")

    @property
    def traffic(self) -> Traffic:
        """Link bytes and frames so far, both ways (retries included)."""
        return Traffic(self.link_bytes, self.link_frames)

    @property
    def baud(self) -> int:
        """The bit rate the host opened the link at (0: not a UART, e.g. a socket or PCIe)."""
        return getattr(self.transport, "baudrate", 0) or 0

    def close(self) -> None:
        self.transport.close()

    # -- framing ----------------------------------------------------------------------------
    def _receive(self, deadline: float) -> Frame | None:
        """The next whole frame (fpga.spec.protocol.FrameParser); None on timeout or a bad frame."""
        # Past the deadline, bytes that have arrived already are still taken, without a wait
        # and up to one frame's worth: a host that a busy machine kept off the CPU while the
        # device answered has no timeout to report.
        late_budget = self.max_payload + 64
        while True:
            try:
                frame = self.parser.pop()
            except FrameError:
                return None
            if frame is not None:
                self.link_bytes += frame.size
                self.link_frames += 1
                return frame
            left = deadline - self.clock()
            if left <= 0 and late_budget <= 0:
                return None
            # read no further than this frame: what follows is left in the transport (a datagram
            # link hands out whole frames: take the next one at once)
            size = max(self.parser.needed(), UDP_MAX_DATAGRAM if self.datagrams else 0)
            data = self.transport.read(size, min(max(left, 0.0), 0.5))
            if left <= 0:
                if not data:
                    return None
                late_budget -= len(data)
            self.parser.feed(data)

    def _resync(self) -> None:
        """Bring the device's frame decoder back to hunting for a sync.

        A corrupted length field can leave the device waiting for up to ``max_payload`` more
        bytes, swallowing our retries. A run of zeros (never a sync byte) longer than any frame
        completes that frame (which then fails its CRC); we drain whatever it answers until
        the line is quiet, so no stale response is taken for the retry's.
        """
        self.transport.write(bytes(self.max_payload + 16))
        while self.transport.read(4096, 0.05):
            pass
        self.parser.clear()

    def exchange(
        self, opcode: Opcode, payload: bytes = b"", timeout: float | None = None
    ) -> tuple[Status, bytes]:
        """Send one command until the device answers it for good (a status in
        :data:`FINAL_STATUSES`); returns that status and the payload after the status byte.

        A lost or corrupted response, or a status saying the request arrived damaged
        (``BAD_CRC``, ``BAD_LENGTH``), makes it resend the same frame, up to ``retries`` times.
        """
        if self.datagrams:
            return self._exchange_datagrams(opcode, [payload], timeout)[0]
        frame = encode_frame(self._next_seq(opcode), opcode, payload)
        last = "no response"
        resync = False
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            if resync:
                self._resync()
            self.transport.write(frame)
            self.link_bytes += len(frame)
            self.link_frames += 1
            deadline = self.clock() + (timeout or self.timeout)
            while True:
                response = self._receive(deadline)
                if response is None:
                    last = "timeout or corrupted response"
                    resync = True
                    break
                if response.seq != self.seq or response.opcode != (opcode | RESPONSE_FLAG):
                    continue  # a stale answer to an earlier attempt: keep listening
                if not response.payload:
                    last = "empty response"
                    break
                status = RESPONSE_STATUS.unpack(response.payload)["status"]
                if status in FINAL_STATUSES:
                    return Status(status), response.payload[RESPONSE_STATUS.size :]
                known = status in Status._value2member_map_
                last = f"device answered {Status(status).name if known else status}"
                resync = False
                break
        raise LinkError(
            f"{opcode.name} failed after {self.retries + 1} attempts ({last}); "
            "is the device connected and running the SqueezeFPGA bitstream?"
        )

    def _next_seq(self, opcode: Opcode) -> int:
        """The next request's seq; a RUN_RESIDENT skips the previous run's (which the device
        would take for a replay of that run)."""
        self.seq = (self.seq + 1) & 0xFF
        if opcode == Opcode.RUN_RESIDENT and self.seq == self.last_run_seq:
            self.seq = (self.seq + 1) & 0xFF
        return self.seq

    def _exchange_datagrams(
        self,
        opcode: Opcode,
        payloads: list[bytes],
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> list[tuple[Status, bytes] | None]:
        """``opcode`` requests with ``payloads`` over a datagram link, up to :attr:`window` of
        them in flight; ``(status, payload after the status byte)`` of each, in order.

        A request is answered by a frame with its seq and a status in :data:`FINAL_STATUSES`.
        One whose answer does not come in time (``timeout``, else the :class:`RetransmitTimer`'s),
        or is answered ``BAD_CRC``/``BAD_LENGTH``, is sent again with the same seq, up to
        ``attempts`` times in all (default ``retries + 1``), then :class:`LinkError`. An answer
        whose seq is not in flight is a late duplicate and is ignored. The first final status
        that is not OK ends the exchange (the requests after it are left None)."""
        attempts = self.retries + 1 if attempts is None else attempts
        results: list[tuple[Status, bytes] | None] = [None] * len(payloads)
        flight: dict[int, _InFlight] = {}
        sent = answered = 0
        last = "no response"

        def send(item: _InFlight) -> None:
            if item.attempts >= attempts:
                silent = last == "no answer in time"
                raise LinkError(
                    f"{opcode.name} failed after {attempts} attempts ({last}): the board at "
                    f"{self.url} "
                    + (
                        "stopped answering. Another host may have taken it over (the board "
                        "serves the sender of the last IDENTIFY and drops other hosts' frames "
                        "unanswered: run this session again to take it back), or it lost power "
                        "or its network"
                        if silent
                        else "does not take the request: is it running the SqueezeFPGA bitstream?"
                    )
                )
            if item.attempts:
                self.retried += 1
            item.attempts += 1
            self.transport.write(item.frame)
            self.link_bytes += len(item.frame)
            self.link_frames += 1
            item.sent_at = self.clock()
            item.deadline = item.sent_at + (timeout or self.timer.rto)

        def room() -> bool:
            if sent == len(payloads) or len(flight) >= self.window:
                return False
            oldest = min(flight.values(), key=lambda item: item.index, default=None)
            return oldest is None or (self.seq + 2 - oldest.seq) & 0xFF < SEQ_SPAN

        while answered < len(payloads):
            while room():
                seq = self._next_seq(opcode)
                flight[seq] = _InFlight(sent, seq, encode_frame(seq, opcode, payloads[sent]))
                send(flight[seq])
                sent += 1
            response = self._receive(min(item.deadline for item in flight.values()))
            if response is None:
                now = self.clock()
                expired = [item for item in flight.values() if item.deadline <= now]
                if expired:
                    last = "no answer in time"
                    if timeout is None:
                        self.timer.backoff()
                for item in expired:
                    send(item)
                continue
            item = flight.get(response.seq)
            if item is None or response.opcode != (opcode | RESPONSE_FLAG):
                continue  # a late answer to a request answered before
            status = response.payload[0] if response.payload else None
            if status not in FINAL_STATUSES:
                known = status in Status._value2member_map_
                name = Status(status).name if known else status
                last = "empty response" if status is None else f"device answered {name}"
                send(item)
                continue
            if item.attempts == 1 and timeout is None:
                self.timer.sample(self.clock() - item.sent_at)
            del flight[response.seq]
            results[item.index] = (Status(status), response.payload[RESPONSE_STATUS.size :])
            answered += 1
            if status != Status.OK:
                break
        return results

    def _request_all(self, opcode: Opcode, payloads: list[bytes]) -> list[bytes]:
        """:meth:`request` for each of ``payloads``, in order; windowed over a datagram link."""
        if not self.datagrams:
            return [self.request(opcode, payload) for payload in payloads]
        results = self._exchange_datagrams(opcode, payloads)
        for result in results:
            if result is not None and result[0] != Status.OK:
                self._refused(opcode, *result)
        return [body for _, body in results]

    def request(self, opcode: Opcode, payload: bytes = b"", timeout: float | None = None) -> bytes:
        """Send one command and return the response payload after the status byte; any status
        but OK raises (:class:`LinkError`, :class:`DeviceError`, :class:`NoModel`)."""
        status, body = self.exchange(opcode, payload, timeout)
        if status != Status.OK:
            self._refused(opcode, status, body)
        return body

    def _refused(self, opcode: Opcode, status: Status, body: bytes) -> None:
        """Raise the error a final non-OK ``status`` means."""
        if status == Status.ENGINE_ERROR:
            raise LinkError(f"{opcode.name}: the engine rejected the layer descriptor")
        if status == Status.NO_MODEL:
            raise NoModel(
                f"{opcode.name}: the device holds no model (none was committed, or a write into "
                "the model's DRAM range since made it forget it); load the model first"
            )
        if status == Status.DEVICE_ERROR:
            raise self._device_error(opcode, body)
        if status == Status.DRAM_NOT_READY:
            raise self._dram_not_ready(opcode)
        if status == Status.BUSY:
            raise DeviceBusy(
                f"{opcode.name}: the device is busy running a resident program (a RUN_RESIDENT "
                "not yet waited for, perhaps from an earlier session) and refuses what would "
                "disturb it: wait for the run to end (Device.wait_program, RESIDENT_WAIT; a "
                "run ends by itself, so from the CLI simply run again), then retry"
            )
        if status == Status.BAD_ADDRESS:
            raise DeviceError(
                f"{opcode.name}: the input or output address lies inside the committed model "
                "(below its end in DRAM): the host's map does not match the model the device "
                "holds; load the model again (Device.load_model(image, force=True))"
            )
        raise DeviceError(f"{opcode.name}: the device answered {status.name}")

    def _dram_not_ready(self, opcode: Opcode) -> DramNotReady:
        """DRAM_NOT_READY: still initializing, or its calibration failed (STATUS says which)."""
        state = DramState(self.status()["dram_state"])
        if state == DramState.FAILED:
            why = (
                "its DRAM init/calibration FAILED (LiteDRAM init_error): check the board's DRAM "
                "and the bitstream's DRAM constraints, then reload the bitstream"
            )
        else:
            why = f"its DRAM is not initialized yet ({state.name.lower()}): retry in a second"
        return DramNotReady(f"{opcode.name}: the device refused resident mode: {why}")

    def _device_error(self, opcode: Opcode, body: bytes) -> DeviceError:
        """DEVICE_ERROR: the sequencer's error code and command address, from RESIDENT_WAIT's
        response (the run's) or else from STATUS."""
        run_opcodes = (Opcode.RUN_RESIDENT, Opcode.RESIDENT_WAIT)
        if opcode in run_opcodes and len(body) >= RESIDENT_RUN_RESPONSE.size:
            run = RESIDENT_RUN_RESPONSE.unpack(body)
            code, pc = run["error_code"], run["pc"]
        else:
            status = self.status()
            code, pc = status["sequencer_error"], status["sequencer_pc"]
        where = f"the command at DRAM address {pc:#x}" if pc else "a host transfer"
        return DeviceError(
            f"{opcode.name}: the device refused {where} with sequencer error {code} "
            "(the codes: SequencerError in hw/soc/sequencer.py, see docs/resident.md; "
            "STATUS keeps the last one)"
        )

    # -- commands -----------------------------------------------------------------------------
    def identify(self, expected: AcceleratorConfig | None = None) -> DeviceInfo:
        """Ask the device what it is; refuse a foreign or mismatched bitstream.

        Checks, in order: magic and protocol version; that the reported fingerprint is the one
        of the reported configuration; that the bitstream's UART baud equals the rate the host
        opened the port at (when both are known); and, given ``expected``, that the device's
        full configuration (clock included) is ``expected``.
        """
        payload = self._contact() if self.datagrams else self.request(Opcode.IDENTIFY)
        prefix = IDENTIFY_PREFIX.unpack(payload)
        if prefix["magic"] != MAGIC:
            raise DeviceMismatch(f"not a SqueezeFPGA device (magic {prefix['magic']!r})")
        if prefix["version"] != PROTOCOL_VERSION:
            raise DeviceMismatch(
                f"device speaks protocol v{prefix['version']}, this host v{PROTOCOL_VERSION}: "
                "rebuild the bitstream or update the host"
            )
        info = DeviceInfo.parse(payload)
        config = info.config()
        if info.fingerprint != config.fingerprint():
            raise DeviceMismatch(
                f"bitstream reports a fingerprint that does not match its own configuration "
                f"(reported {info.fingerprint}, computed {config.fingerprint()} from {config}): "
                "rebuild the bitstream with this toolflow"
            )
        if info.baud and self.baud and info.baud != self.baud:
            raise DeviceMismatch(
                f"the bitstream's UART runs at {info.baud:,} baud but the port was opened at "
                f"{self.baud:,} baud: pass --board NAME (its baud comes from the board registry) "
                f"or --baud {info.baud}"
            )
        if expected is not None and config.fingerprint() != expected.fingerprint():
            raise DeviceMismatch(
                f"device configuration {config} differs from the expected {expected}"
            )
        if self.datagrams and not udp_frame_fits(config):
            raise DeviceMismatch(
                f"the bitstream's frames (max_payload {config.max_payload}) do not fit one UDP "
                f"datagram: rebuild it with a max_payload that does (fpga.spec.protocol."
                "udp_frame_fits)"
            )
        self.info = info
        self.max_payload = info.max_payload
        self.parser.max_payload = info.max_payload + 1  # a READ answer: status + data
        return info

    def _contact(self) -> bytes:
        """IDENTIFY over a datagram link, bounded (:data:`CONTACT_TIMEOUT` x
        :data:`CONTACT_ATTEMPTS`): a board that does not answer is one :class:`LinkError`
        naming its address."""
        try:
            status, body = self._exchange_datagrams(
                Opcode.IDENTIFY, [b""], self.CONTACT_TIMEOUT, self.CONTACT_ATTEMPTS
            )[0]
        except LinkError:
            wait = self.CONTACT_TIMEOUT * self.CONTACT_ATTEMPTS
            raise LinkError(
                f"no answer from the board at {self.url} ({self.CONTACT_ATTEMPTS} IDENTIFY "
                f"datagrams in {wait:g} s): is it powered and programmed with an Ethernet "
                "bitstream, and is this host on its network (a route to its address)?"
            ) from None
        if status != Status.OK:
            self._refused(Opcode.IDENTIFY, status, body)
        return body

    def write(self, space, offset: int, data: bytes) -> None:
        chunk = self.max_payload - WRITE_REQUEST.size
        for start in range(0, len(data), chunk):
            self.request(
                Opcode.WRITE, write_payload(int(space), offset + start, data[start : start + chunk])
            )

    def read(self, space, offset: int, length: int) -> bytes:
        chunk = self.max_payload - RESPONSE_STATUS.size
        out = bytearray()
        for start in range(0, length, chunk):
            n = min(chunk, length - start)
            data = self.request(Opcode.READ, read_payload(int(space), offset + start, n))
            if len(data) != n:
                raise LinkError(f"READ returned {len(data)} bytes, expected {n}")
            out += data
        return bytes(out)

    def run(self, expected_cycles: int = 0) -> int:
        """Start the layer in the descriptor buffer; returns the device's cycle count.

        The response timeout grows with ``expected_cycles`` so that a lost response to a long
        run is retried after a bounded wait rather than never.
        """
        timeout = self.timeout + expected_cycles / self.MIN_CYCLES_PER_SECOND
        payload = self.request(Opcode.RUN, timeout=timeout)
        return RUN_RESPONSE.unpack(payload)["cycles"]

    def status(self) -> dict:
        return parse_status(self.request(Opcode.STATUS))

    def clear(self) -> None:
        self.request(Opcode.CLEAR)

    # -- resident mode --------------------------------------------------------------------------
    def _require_dram(self, what: str) -> None:
        if self.info is not None and not self.info.dram_bytes:
            raise NoDram(
                f"{what} needs a device with DRAM, and this bitstream reports none "
                "(dram_bytes 0): use streamed mode (--mode streamed) or a board with DRAM"
            )

    def mem_write(self, addr: int, data: bytes) -> None:
        """Write ``data`` into the device's DRAM at ``addr`` (MEM_WRITE frames of at most
        ``max_payload`` bytes). A write below the committed model's end unloads the model."""
        self._require_dram("MEM_WRITE")
        chunk = self.max_payload - MEM_WRITE_REQUEST.size
        payloads = [
            mem_write_payload(addr + start, data[start : start + chunk])
            for start in range(0, len(data), chunk)
        ]
        self._request_all(Opcode.MEM_WRITE, payloads)

    def mem_read(self, addr: int, length: int) -> bytes:
        """``length`` bytes of the device's DRAM from ``addr`` (MEM_READ frames)."""
        self._require_dram("MEM_READ")
        chunk = self.max_payload - RESPONSE_STATUS.size
        starts = range(0, length, chunk)
        counts = [min(chunk, length - start) for start in starts]
        payloads = [
            mem_read_payload(addr + start, n) for start, n in zip(starts, counts, strict=True)
        ]
        out = bytearray()
        for data, n in zip(self._request_all(Opcode.MEM_READ, payloads), counts, strict=True):
            if len(data) != n:
                raise LinkError(f"MEM_READ returned {len(data)} bytes, expected {n}")
            out += data
        return bytes(out)

    def _check_image(self, image: ResidentImage) -> None:
        self._require_dram("resident mode")
        if self.info is None:
            return
        if image.config.fingerprint() != self.info.config().fingerprint():
            raise DeviceMismatch(
                f"the resident program was compiled for {image.config}, "
                f"the device is {self.info.config()}"
            )
        end = image.describe()["total"][1]
        if end > self.info.dram_bytes:
            raise DeviceMismatch(
                f"the resident program's DRAM map ends at {end:,} bytes, beyond the device's "
                f"{self.info.dram_bytes:,}: compile it with dram_size=info.dram_bytes"
            )

    def commit_model(
        self, size: int, crc: int, program_addr: int, fingerprint: str
    ) -> tuple[Status, int]:
        """MODEL_COMMIT: the device reads DRAM ``[0, size)`` back through a CRC-32 and, when it
        equals ``crc``, holds a model. Returns the status (OK or BAD_MODEL) and the device's CRC;
        :meth:`load_model` is the usual way in."""
        payload = MODEL_COMMIT_REQUEST.pack(
            bytes=size, crc=crc, program_addr=program_addr, fingerprint=bytes.fromhex(fingerprint)
        )
        # the device reads [0, size) once: give it a byte per cycle on top of the usual wait
        timeout = self.timeout + size / self.MIN_CYCLES_PER_SECOND
        status, body = self.exchange(Opcode.MODEL_COMMIT, payload, timeout)
        if status not in (Status.OK, Status.BAD_MODEL):
            self._refused(Opcode.MODEL_COMMIT, status, body)
        return status, MODEL_COMMIT_RESPONSE.unpack(body)["crc"]

    def load_model(self, image: ResidentImage, force: bool = False) -> ModelLoad:
        """Put ``image`` (``fpga.compiler.resident.compile_resident``) into the device's DRAM and
        commit it, unless STATUS says the device already holds this model (same fingerprint) and not
        ``force``. Writes ``load_bytes()`` at 0, then MODEL_COMMIT over ``commit_size`` bytes;
        a CRC the device computes otherwise raises :class:`BadModel` naming both."""
        self._check_image(image)
        before = self.traffic
        fingerprint = image.fingerprint()
        if not force:
            status = self.status()
            if status["model_loaded"] and status["model_fingerprint"] == fingerprint:
                return self._model_load(False, before)
        blob = image.load_bytes()
        self.mem_write(0, blob)
        crc = crc32(blob[: image.commit_size])
        status, device_crc = self.commit_model(
            image.commit_size, crc, image.program_address, fingerprint
        )
        if status == Status.BAD_MODEL:
            raise BadModel(
                f"MODEL_COMMIT: the device read CRC-32 {device_crc:#010x} over DRAM "
                f"[0, {image.commit_size:,}) but the host wrote {crc:#010x}; no model is loaded "
                "(the DRAM did not keep what the link delivered: load again, or check the "
                "board's memory)"
            )
        return self._model_load(True, before)

    def _model_load(self, loaded: bool, before: Traffic) -> ModelLoad:
        traffic = self.traffic - before
        return ModelLoad(loaded, traffic.bytes, traffic.frames)

    def start_program(self, input_addr: int, output_addr: int) -> None:
        """RUN_RESIDENT: start the committed model's program with the run's input and output
        slots (the DRAM addresses its INPUT/OUTPUT-flagged commands are relative to). The device
        answers at once; :meth:`wait_program` answers the run's end. A lost answer is resent
        with the same seq, which the device answers OK without starting a second run.

        Raises :class:`DeviceBusy` (another run is going), :class:`NoModel`,
        :class:`DeviceError` (an address inside the model), :class:`DramNotReady`."""
        self._require_dram("RUN_RESIDENT")
        payload = RESIDENT_RUN_REQUEST.pack(input_addr=input_addr, output_addr=output_addr)
        try:
            self.request(Opcode.RUN_RESIDENT, payload)
        except LinkError:
            self.last_run_seq = self.seq  # unanswered: it may have started
            raise
        self.last_run_seq = self.seq  # started, or the replay of a run with this seq

    def wait_program(self, expected_cycles: int = 0) -> dict:
        """RESIDENT_WAIT: the device's accounting of the last run (``RESIDENT_RUN_RESPONSE``:
        ``cycles``, ``engine_cycles``, ``dma_wait_cycles``, ``host_cycles``, ``error_code``,
        ``pc``), answered when it ends (at once when none runs). Raises :class:`DeviceError`
        naming the refused command when the run failed, :class:`NoModel`."""
        self._require_dram("RESIDENT_WAIT")
        # a lost response is retried after a bounded wait; the estimate (the engine's cycles)
        # is rough: the sequential sequencer needs up to ~2.5x (huffman weights), allow 4x
        timeout = self.timeout + 4 * expected_cycles / self.MIN_CYCLES_PER_SECOND
        return RESIDENT_RUN_RESPONSE.unpack(self.request(Opcode.RESIDENT_WAIT, timeout=timeout))

    def run_program(
        self,
        expected_cycles: int = 0,
        input_addr: int | None = None,
        output_addr: int | None = None,
    ) -> dict:
        """Run the committed program to its end (:meth:`start_program`, :meth:`wait_program`);
        the device's accounting. Addresses left out are the committed model's end (STATUS
        ``model_bytes``): enough for a hand-built program without INPUT/OUTPUT commands."""
        if input_addr is None or output_addr is None:
            end = self.status()["model_bytes"]
            input_addr = end if input_addr is None else input_addr
            output_addr = end if output_addr is None else output_addr
        self.start_program(input_addr, output_addr)
        return self.wait_program(expected_cycles)

    @staticmethod
    def _run_stats(image: ResidentImage, run: dict, traffic: Traffic, overlapped: bool) -> dict:
        return {
            "cycles": run["cycles"],
            "engine_cycles": run["engine_cycles"],
            "dma_wait_cycles": run["dma_wait_cycles"],
            "other_cycles": run["cycles"] - run["engine_cycles"] - run["dma_wait_cycles"],
            "host_cycles": run["host_cycles"],
            "link_bytes": traffic.bytes,
            "link_frames": traffic.frames,
            "minimum_link_bytes": image.link_bytes_per_image(),
            "overlapped": overlapped,
        }

    def run_resident(
        self, image: ResidentImage, input_int8: np.ndarray, slot: int = 0
    ) -> tuple[np.ndarray, dict]:
        """One inference on the model :meth:`load_model` put on the device: write the image into
        input slot ``slot``, start the program on that slot's input and output, wait for its
        end, read the logits back (nothing overlaps: :meth:`run_resident_many` does).

        Returns ``(output, stats)``: the output as ``ResidentImage.decode_output`` decodes it
        (int32 class sums for SqueezeNet) and the device's cycles (``cycles`` =
        ``engine_cycles`` + ``dma_wait_cycles`` + ``other_cycles``; ``host_cycles``, the
        sequencer's cycles serving MEM_WRITE/MEM_READ during the run, are inside ``other`` or
        overlap the engine's), the link bytes and ``link_frames`` this image took (frames both
        ways, retries included), ``minimum_link_bytes`` (input + logits payload,
        ``ResidentImage.link_bytes_per_image``) and ``overlapped`` (False)."""
        self._check_image(image)
        before = self.traffic
        blob = image.input_blob(input_int8)
        self.mem_write(image.input_address(slot), blob)
        self.start_program(image.input_address(slot), image.output_address(slot))
        run = self.wait_program(device_cycles(image)["total"])
        data = self.mem_read(image.output_address(slot), image.output_bytes())
        stats = self._run_stats(image, run, self.traffic - before, overlapped=False)
        return image.decode_output(data), stats

    def run_resident_many(
        self, image: ResidentImage, inputs: Iterable[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, dict]]:
        """Inferences on a stream of images with the link and the device working at once;
        yields ``(output, stats)`` per image, in order (stats as :meth:`run_resident`'s, with
        ``overlapped`` True).

        The schedule (image ``i`` uses input and output slot ``i % SLOTS``): write x0, start
        run 0; then for each next image i: MEM_WRITE x_i while run i-1 goes, RESIDENT_WAIT run
        i-1, start run i, MEM_READ run i-1's logits while run i goes (then yield them); at the
        end wait for and read the last run. An image's ``link_bytes`` are its own frames: its
        input write, its start and wait, its output read. Closing the generator early waits for
        a run still going, so the device is left idle."""
        self._check_image(image)
        expected = device_cycles(image)["total"]
        in_flight = None  # (slot, link bytes so far) of the run started and not yet waited for
        try:
            for index, x in enumerate(inputs):
                slot = index % SLOTS
                blob = image.input_blob(x)
                before = self.traffic
                self.mem_write(image.input_address(slot), blob)
                own = self.traffic - before
                finished = None
                if in_flight is not None:
                    waited, in_flight = in_flight, None  # a failed wait is not repeated
                    before = self.traffic
                    run = self.wait_program(expected)
                    finished = (*waited, run, self.traffic - before)
                before = self.traffic
                self.start_program(image.input_address(slot), image.output_address(slot))
                in_flight = (slot, own + (self.traffic - before))
                if finished is not None:
                    yield self._collect(image, *finished)
            if in_flight is not None:
                waited, in_flight = in_flight, None
                before = self.traffic
                run = self.wait_program(expected)
                yield self._collect(image, *waited, run, self.traffic - before)
        finally:
            if in_flight is not None:  # stopped early (or failed): leave the device idle
                with contextlib.suppress(UserError):
                    self.wait_program(expected)

    def _collect(
        self, image: ResidentImage, slot: int, traffic: Traffic, run: dict, wait: Traffic
    ) -> tuple[np.ndarray, dict]:
        """Read a finished run's logits from its output slot (overlapping the next run)."""
        before = self.traffic
        data = self.mem_read(image.output_address(slot), image.output_bytes())
        traffic = traffic + wait + (self.traffic - before)
        return image.decode_output(data), self._run_stats(image, run, traffic, True)
