"""The link protocol: the ONE definition of opcodes and frame layout (gateware and host import it).

Frame, both directions, little-endian::

    0xA5 0x5A | length u16 | seq u8 | opcode u8 | payload[length] | crc32 u32

``crc32`` is zlib's CRC-32 over ``length .. payload``. A response echoes the request's ``seq``
and has ``opcode | 0x80``; its payload starts with a :class:`Status` byte.

The device buffers a whole request before acting on it and commits nothing unless the CRC
checks, so a corrupted frame never writes anything. Garbage before a sync, a bad CRC, an
over-long length and an inter-byte timeout mid-frame are counted (STATUS) and, where a header
was read, answered with an error response; the decoder then hunts for the next sync. Every
command is idempotent (WRITE/READ address buffers, RUN recomputes ACT_OUT from unchanged inputs),
so the host simply retries the same sequence number after an error or a timeout.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from fpga.config import AcceleratorConfig

SYNC = b"\xa5\x5a"
HEADER = struct.Struct("<HBB")  # length, seq, opcode
PROTOCOL_VERSION = 1
MAGIC = b"SQZF"
RESPONSE_FLAG = 0x80
WRITE_HEADER = struct.Struct("<BI")  # space, offset (u32) then data
READ_REQUEST = struct.Struct("<BIH")  # space, offset, length
#: inter-byte timeout of the device's frame decoder, in clock cycles
FRAME_TIMEOUT_CYCLES = 1 << 20


class Opcode(enum.IntEnum):
    IDENTIFY = 0x01
    WRITE = 0x10
    READ = 0x11
    RUN = 0x20
    STATUS = 0x30
    CLEAR = 0x31


class Status(enum.IntEnum):
    OK = 0
    BAD_CRC = 1
    BAD_OPCODE = 2
    BAD_LENGTH = 3
    ENGINE_ERROR = 4


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_frame(seq: int, opcode: int, payload: bytes = b"") -> bytes:
    body = HEADER.pack(len(payload), seq & 0xFF, opcode) + payload
    return SYNC + body + struct.pack("<I", crc32(body))


@dataclass(frozen=True)
class Frame:
    seq: int
    opcode: int
    payload: bytes


class FrameError(Exception):
    """A frame that cannot be decoded (bad CRC, too long)."""


def write_payload(space: int, offset: int, data: bytes) -> bytes:
    return WRITE_HEADER.pack(space, offset) + data


def read_payload(space: int, offset: int, length: int) -> bytes:
    return READ_REQUEST.pack(space, offset, length)


# -- IDENTIFY ------------------------------------------------------------------------------------
IDENTIFY_FORMAT = struct.Struct("<4sBBBIIIHH8s")


def identify_payload(config: AcceleratorConfig) -> bytes:
    """What the device answers to IDENTIFY (after the status byte)."""
    return IDENTIFY_FORMAT.pack(
        MAGIC,
        PROTOCOL_VERSION,
        config.rows,
        config.cols,
        config.act_in_bytes,
        config.act_out_bytes,
        config.weight_bytes,
        config.max_out_channels,
        config.max_payload,
        bytes.fromhex(config.fingerprint()),
    )


@dataclass(frozen=True)
class DeviceInfo:
    magic: bytes
    version: int
    rows: int
    cols: int
    act_in_bytes: int
    act_out_bytes: int
    weight_bytes: int
    max_out_channels: int
    max_payload: int
    fingerprint: str

    @classmethod
    def parse(cls, payload: bytes) -> DeviceInfo:
        fields = list(IDENTIFY_FORMAT.unpack(payload[: IDENTIFY_FORMAT.size]))
        fields[-1] = fields[-1].hex()
        return cls(*fields)

    def config(self) -> AcceleratorConfig:
        return AcceleratorConfig(
            rows=self.rows,
            cols=self.cols,
            act_in_bytes=self.act_in_bytes,
            act_out_bytes=self.act_out_bytes,
            weight_bytes=self.weight_bytes,
            max_out_channels=self.max_out_channels,
            max_payload=self.max_payload,
        )


# -- STATUS --------------------------------------------------------------------------------------
STATUS_FORMAT = struct.Struct("<IHHHHH")
STATUS_FIELDS = (
    "frames_ok",
    "crc_errors",
    "framing_errors",
    "timeouts",
    "bad_opcodes",
    "engine_errors",
)


def parse_status(payload: bytes) -> dict[str, int]:
    return dict(
        zip(STATUS_FIELDS, STATUS_FORMAT.unpack(payload[: STATUS_FORMAT.size]), strict=True)
    )
