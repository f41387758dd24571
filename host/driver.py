"""The host driver: framed commands over any transport, with timeouts and retries.

Every request carries a sequence number; a response must echo it, have a good CRC and status OK.
A lost, corrupted or late response makes the driver resend the same request (all commands are
idempotent, see fpga.protocol) up to ``retries`` times, then raise :class:`LinkError`.
"""

from __future__ import annotations

import time

from fpga.config import AcceleratorConfig
from fpga.errors import UserError
from fpga.protocol import (
    IDENTIFY_PREFIX,
    MAGIC,
    PROTOCOL_VERSION,
    RESPONSE_FLAG,
    RESPONSE_STATUS,
    RUN_RESPONSE,
    WRITE_REQUEST,
    DeviceInfo,
    Frame,
    FrameError,
    FrameParser,
    Opcode,
    Status,
    encode_frame,
    parse_status,
    read_payload,
    write_payload,
)
from host.transport import open_transport


class LinkError(UserError, ConnectionError):
    """The device did not answer correctly after all retries."""


class DeviceMismatch(UserError, RuntimeError):
    """The device runs a different protocol or configuration than the host expects."""


class Device:
    """An accelerator behind a byte transport: write/read buffers, run layers."""

    #: slowest device we wait for: the simulated board under load (real hardware is ~100x faster)
    MIN_CYCLES_PER_SECOND = 100_000

    def __init__(self, transport, timeout: float = 2.0, retries: int = 8):
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.seq = 0
        self.retried = 0
        self.link_bytes = 0
        self.info: DeviceInfo | None = None
        self.max_payload = 256  # until IDENTIFY tells
        self.parser = FrameParser(self.max_payload + 1)

    @classmethod
    def open(cls, url: str, baud: int | None = None, **kwargs) -> Device:
        """Open the device at ``url``; ``baud`` is the UART bit rate for a serial port (take it
        from the board registry, ``fpga.boards``), ignored by sockets and PCIe."""
        return cls(open_transport(url, baud), **kwargs)

    @property
    def baud(self) -> int:
        """The bit rate the host opened the link at (0: not a UART, e.g. a socket or PCIe)."""
        return getattr(self.transport, "baudrate", 0) or 0

    def close(self) -> None:
        self.transport.close()

    # -- framing ----------------------------------------------------------------------------
    def _receive(self, deadline: float) -> Frame | None:
        """The next whole frame (fpga.protocol.FrameParser); None on timeout or a bad frame."""
        while True:
            try:
                frame = self.parser.pop()
            except FrameError:
                return None
            if frame is not None:
                self.link_bytes += frame.size
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # read no further than this frame: what follows is left in the transport
            self.parser.feed(self.transport.read(self.parser.needed(), min(left, 0.5)))

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

    def request(self, opcode: Opcode, payload: bytes = b"", timeout: float | None = None) -> bytes:
        """Send one command and return the response payload after the status byte."""
        self.seq = (self.seq + 1) & 0xFF
        frame = encode_frame(self.seq, opcode, payload)
        last = "no response"
        resync = False
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            if resync:
                self._resync()
            self.transport.write(frame)
            self.link_bytes += len(frame)
            deadline = time.monotonic() + (timeout or self.timeout)
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
                if status == Status.OK:
                    return response.payload[RESPONSE_STATUS.size :]
                if status == Status.ENGINE_ERROR:
                    raise LinkError(f"{opcode.name}: the engine rejected the layer descriptor")
                known = status in Status._value2member_map_
                last = f"device answered {Status(status).name if known else status}"
                resync = False
                break
        raise LinkError(
            f"{opcode.name} failed after {self.retries + 1} attempts ({last}); "
            "is the device connected and running the SqueezeFPGA bitstream?"
        )

    # -- commands -----------------------------------------------------------------------------
    def identify(self, expected: AcceleratorConfig | None = None) -> DeviceInfo:
        """Ask the device what it is; refuse a foreign or mismatched bitstream.

        Checks, in order: magic and protocol version; that the reported fingerprint is the one
        of the reported configuration; that the bitstream's UART baud equals the rate the host
        opened the port at (when both are known); and, given ``expected``, that the device's
        full configuration (clock included) is ``expected``.
        """
        payload = self.request(Opcode.IDENTIFY)
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
        self.info = info
        self.max_payload = info.max_payload
        self.parser.max_payload = info.max_payload + 1  # a READ answer: status + data
        return info

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

    def status(self) -> dict[str, int]:
        return parse_status(self.request(Opcode.STATUS))

    def clear(self) -> None:
        self.request(Opcode.CLEAR)
