"""The host driver: framed commands over any transport, with timeouts and retries.

Every request carries a sequence number; a response must echo it, have a good CRC and status OK.
A lost, corrupted or late response makes the driver resend the same request (all commands are
idempotent, see fpga.protocol) up to ``retries`` times, then raise :class:`LinkError`.
"""

from __future__ import annotations

import struct
import time

from fpga.config import AcceleratorConfig
from fpga.protocol import (
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    RESPONSE_FLAG,
    SYNC,
    DeviceInfo,
    Frame,
    Opcode,
    Status,
    crc32,
    encode_frame,
    parse_status,
    read_payload,
    write_payload,
)
from host.transport import TransportError, open_transport


class LinkError(ConnectionError):
    """The device did not answer correctly after all retries."""


class DeviceMismatch(RuntimeError):
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

    @classmethod
    def open(cls, url: str, **kwargs) -> Device:
        return cls(open_transport(url), **kwargs)

    def close(self) -> None:
        self.transport.close()

    # -- framing ----------------------------------------------------------------------------
    def _read_exact(self, size: int, deadline: float) -> bytes:
        out = b""
        while len(out) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            chunk = self.transport.read(size - len(out), min(left, 0.5))
            out += chunk
        return out

    def _receive(self, deadline: float) -> Frame | None:
        """Hunt for a sync, then read one frame; None on timeout or a bad CRC."""
        window = b""
        while True:
            byte = self._read_exact(1, deadline)
            if not byte:
                return None
            window = (window + byte)[-2:]
            if window == SYNC:
                break
        header = self._read_exact(HEADER.size, deadline)
        if len(header) < HEADER.size:
            return None
        length, seq, opcode = HEADER.unpack(header)
        if length > self.max_payload + 1:
            return None
        rest = self._read_exact(length + 4, deadline)
        if len(rest) < length + 4:
            return None
        payload, crc = rest[:length], struct.unpack("<I", rest[length:])[0]
        if crc != crc32(header + payload):
            return None
        self.link_bytes += 2 + HEADER.size + length + 4
        return Frame(seq, opcode, payload)

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
                status = response.payload[0]
                if status == Status.OK:
                    return response.payload[1:]
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
        try:
            payload = self.request(Opcode.IDENTIFY)
        except TransportError:
            raise
        info = DeviceInfo.parse(payload)
        if info.magic != MAGIC:
            raise DeviceMismatch(f"not a SqueezeFPGA device (magic {info.magic!r})")
        if info.version != PROTOCOL_VERSION:
            raise DeviceMismatch(
                f"device speaks protocol v{info.version}, this host v{PROTOCOL_VERSION}: "
                "rebuild the bitstream or update the host"
            )
        if (
            expected is not None
            and info.config().fingerprint()
            != expected.replace(clock_mhz=AcceleratorConfig().clock_mhz).fingerprint()
        ):
            raise DeviceMismatch(
                f"device configuration {info.config()} differs from the expected {expected}"
            )
        self.info = info
        self.max_payload = info.max_payload
        return info

    def write(self, space, offset: int, data: bytes) -> None:
        chunk = self.max_payload - 5
        for start in range(0, len(data), chunk):
            self.request(
                Opcode.WRITE, write_payload(int(space), offset + start, data[start : start + chunk])
            )

    def read(self, space, offset: int, length: int) -> bytes:
        chunk = self.max_payload - 1
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
        return struct.unpack("<I", payload[:4])[0]

    def status(self) -> dict[str, int]:
        return parse_status(self.request(Opcode.STATUS))

    def clear(self) -> None:
        self.request(Opcode.CLEAR)
