"""The link protocol: the ONE definition of opcodes, frames and payload layouts.

Frame, both directions, little-endian::

    0xA5 0x5A | length u16 | seq u8 | opcode u8 | payload[length] | crc32 u32

``crc32`` is zlib's CRC-32 (CRC-32/ISO-HDLC) over ``length .. payload``. A response echoes the
request's ``seq`` and has ``opcode | 0x80``; its payload starts with a :class:`Status` byte.

Every fixed-size payload (and the frame header) is a :class:`PayloadLayout`: one table of
``(field, struct code)`` pairs from which the host gets :mod:`struct` packing and the
gateware (``hw.soc.link.struct_layout``) an ``amaranth.lib.data.StructLayout`` with the same fields
at the same bit offsets (byte ``i`` of the packed payload is bits ``8*i .. 8*i+7`` of the layout).
Frames are decoded in one place, :class:`FrameParser` (streaming) / :func:`decode_frame` (one
frame); the host driver and the benches use them. This module never imports amaranth: the host
runs without it.

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

from fpga.spec.config import AcceleratorConfig
from fpga.spec.errors import UserError

SYNC = b"\xa5\x5a"
#: protocol version, reported by IDENTIFY; v2 added clock_hz, baud and index_bits_max; v3 the
#: resident mode (dram_bytes, MEM_WRITE/MEM_READ/MODEL_COMMIT/RUN_RESIDENT, the model in STATUS);
#: v4 the DRAM controller's state (STATUS dram_state, status DRAM_NOT_READY); v5 runs that
#: overlap the link (RUN_RESIDENT starts with input/output addresses and answers at once,
#: RESIDENT_WAIT answers when the run ends; MEM_WRITE/MEM_READ are served while it runs); v6 the
#: engine's own clock (IDENTIFY engine_clock_hz: engine cycles are counted in it); v7 double
#: buffering in resident programs (the WAIT command, a RUN's SPLIT/HIGH_* flags:
#: ``fpga.spec.commands``), which a v6 sequencer refuses, and IDENTIFY's ``features``; v8 the
#: UDP link (IDENTIFY's ``link`` and ``link_bps``: the link the request came on, see
#: :class:`LinkKind`; a RUN_RESIDENT with the last run's seq never starts a run again, until an
#: IDENTIFY or MODEL_COMMIT); v9 a STORE's POSTED flag (``fpga.spec.commands.Flag``), which a v8
#: sequencer refuses
PROTOCOL_VERSION = 9
MAGIC = b"SQZF"
RESPONSE_FLAG = 0x80
#: inter-byte timeout of the device's frame decoder, in clock cycles
FRAME_TIMEOUT_CYCLES = 1 << 20


class FrameError(UserError):
    """A frame that cannot be decoded (bad CRC, too long)."""


class PayloadLayout:
    """A fixed-size little-endian record, defined once for host and gateware.

    ``fields`` is a table of ``(name, struct code)``: ``B``/``H``/``I``/``Q`` are unsigned
    integers of 1/2/4/8 bytes, ``Ns`` is N raw bytes (an unsigned ``8*N``-bit field in the
    gateware, its first byte least significant).
    """

    def __init__(self, name: str, fields: tuple[tuple[str, str], ...]):
        self.name = name
        self.fields = tuple(fields)
        self.names = tuple(field for field, _ in self.fields)
        self.struct = struct.Struct("<" + "".join(code for _, code in self.fields))
        self.size = self.struct.size
        self.bytes_fields = frozenset(field for field, code in self.fields if code.endswith("s"))

    def widths(self) -> dict[str, int]:
        """Field name -> width in bits, in wire order."""
        return {field: struct.calcsize("<" + code) * 8 for field, code in self.fields}

    def pack(self, **values) -> bytes:
        """The payload bytes; every field must be given by name."""
        if set(values) != set(self.names):
            missing = sorted(set(self.names) - set(values))
            extra = sorted(set(values) - set(self.names))
            raise TypeError(f"{self.name}: missing fields {missing}, unknown fields {extra}")
        return self.struct.pack(*(values[field] for field in self.names))

    def unpack(self, payload: bytes) -> dict:
        """Field name -> value from the first :attr:`size` bytes of ``payload``."""
        if len(payload) < self.size:
            raise FrameError(
                f"{self.name} payload has {len(payload)} bytes, the layout needs {self.size}"
            )
        return dict(zip(self.names, self.struct.unpack_from(payload), strict=True))

    def gateware_values(self, **values) -> dict[str, int]:
        """``values`` with raw-byte fields as little-endian ints (for ``StructLayout.const``)."""
        return {
            field: int.from_bytes(value, "little") if field in self.bytes_fields else int(value)
            for field, value in values.items()
        }

    def __repr__(self) -> str:
        return f"PayloadLayout({self.name!r}, {self.fields!r})"


# -- the layouts ---------------------------------------------------------------------------------
FRAME_HEADER = PayloadLayout("frame header", (("length", "H"), ("seq", "B"), ("opcode", "B")))
CRC_TRAILER = PayloadLayout("crc trailer", (("crc", "I"),))
#: WRITE request: this header, then the data bytes
WRITE_REQUEST = PayloadLayout("WRITE request", (("space", "B"), ("offset", "I")))
READ_REQUEST = PayloadLayout("READ request", (("space", "B"), ("offset", "I"), ("count", "H")))
#: every response payload starts with this (then the command's response layout, if any)
RESPONSE_STATUS = PayloadLayout("response status", (("status", "B"),))
#: the part of IDENTIFY that every protocol version keeps (checked before the rest is parsed)
IDENTIFY_PREFIX = PayloadLayout("IDENTIFY prefix", (("magic", "4s"), ("version", "B")))
IDENTIFY_RESPONSE = PayloadLayout(
    "IDENTIFY response",
    IDENTIFY_PREFIX.fields
    + (
        ("rows", "B"),
        ("cols", "B"),
        ("index_bits_max", "B"),
        ("act_in_bytes", "I"),
        ("act_out_bytes", "I"),
        ("weight_bytes", "I"),
        ("max_out_channels", "H"),
        ("max_payload", "H"),
        ("clock_hz", "I"),
        ("baud", "I"),  # UART bit rate the bitstream was built for; 0 for a non-UART link
        ("fingerprint", "8s"),  # AcceleratorConfig.fingerprint() of the built configuration
        ("dram_bytes", "I"),  # external memory for resident mode; 0: streamed mode only
        ("engine_clock_hz", "I"),  # the engine's clock (== clock_hz: it runs on the fabric's)
        ("features", "B"),  # Feature bits: what the bitstream has beyond the sizes above
        ("link", "B"),  # v8: LinkKind of the link this IDENTIFY came on (answered on it)
        ("link_bps", "I"),  # v8: that link's line rate in bits/s (0: a stream, no line rate)
    ),
)


class LinkKind(enum.IntEnum):
    """The link a request came on (IDENTIFY ``link``); the device answers on the same one.

    ``STREAM``: a byte stream with no line rate (the simulated board's socket, PCIe);
    ``UART``: the serial port (``link_bps`` is its baud); ``ETHERNET``: UDP through LiteEth,
    one frame per datagram (:data:`UDP_MAX_DATAGRAM`), answered to the address the datagram
    came from at the board's UDP port (LiteEth's raw port routes by it: the host binds it). The
    board serves one host: the sender of the first valid frame since reset, and of every valid
    IDENTIFY (a new host takes the board over with it); another sender's frames are dropped
    unanswered."""

    STREAM = 0
    UART = 1
    ETHERNET = 2

    @property
    def label(self) -> str:
        """The name a user sees (``--link``, ``--json``'s ``link_kind``)."""
        return self.name.lower()


#: the longest UDP payload in one Ethernet frame (1500 - IPv4 20 - UDP 8): a request or response
#: frame over the UDP link is one datagram, never split, so a board with Ethernet has a frame
#: buffer no longer than this (``udp_frame_fits``)
UDP_MAX_DATAGRAM = 1472


class Feature(enum.IntFlag):
    """IDENTIFY's ``features`` bits."""

    #: the on-chip Huffman decoder (``AcceleratorConfig.huffman_decoder``): HUFFMAN_TABLE and
    #: HUFFMAN_STREAM writes decode into WEIGHT; without it they are refused (an engine error)
    HUFFMAN_DECODER = 1


def features(config: AcceleratorConfig) -> Feature:
    """The :class:`Feature` bits of a bitstream built for ``config``."""
    return Feature.HUFFMAN_DECODER if config.huffman_decoder else Feature(0)


STATUS_RESPONSE = PayloadLayout(
    "STATUS response",
    (
        ("frames_ok", "I"),
        ("crc_errors", "H"),
        ("framing_errors", "H"),
        ("timeouts", "H"),
        ("bad_opcodes", "H"),
        ("engine_errors", "H"),
        # resident mode: the model DRAM holds (valid only after a MODEL_COMMIT whose CRC
        # matched; any MEM_WRITE below model_bytes clears it) and the sequencer's last refusal
        ("model_loaded", "B"),
        ("model_bytes", "I"),
        ("model_fingerprint", "8s"),
        ("sequencer_error", "B"),  # hw.soc.sequencer.SequencerError of the last refused command
        ("sequencer_pc", "I"),  # the DRAM address of that command (0 for a host transfer)
        ("dram_state", "B"),  # DramState: the DRAM controller's init/calibration
        ("running", "B"),  # v5: 1 while a RUN_RESIDENT program runs
    ),
)
RUN_RESPONSE = PayloadLayout("RUN response", (("cycles", "I"), ("engine_error", "B")))
#: MEM_WRITE request: this header, then the data bytes (written to DRAM at ``addr``)
MEM_WRITE_REQUEST = PayloadLayout("MEM_WRITE request", (("addr", "I"),))
#: MEM_READ request; the response is the status byte and ``count`` DRAM bytes
MEM_READ_REQUEST = PayloadLayout("MEM_READ request", (("addr", "I"), ("count", "H")))
#: MODEL_COMMIT: DRAM ``[0, bytes)`` holds the model; the device reads it back and compares its
#: CRC-32 with ``crc`` before it accepts ``program_addr`` and ``fingerprint``
MODEL_COMMIT_REQUEST = PayloadLayout(
    "MODEL_COMMIT request",
    (("bytes", "I"), ("crc", "I"), ("program_addr", "I"), ("fingerprint", "8s")),
)
#: the CRC-32 the device computed over what DRAM holds (whatever the status)
MODEL_COMMIT_RESPONSE = PayloadLayout("MODEL_COMMIT response", (("crc", "I"),))
#: RUN_RESIDENT: start the committed program with the run's input and output slots (the
#: DRAM addresses its INPUT / OUTPUT-flagged commands are relative to); answered at once
RESIDENT_RUN_REQUEST = PayloadLayout(
    "RUN_RESIDENT request", (("input_addr", "I"), ("output_addr", "I"))
)
#: RESIDENT_WAIT (no payload) -> the sequencer's accounting of the last program run, sent when
#: that run has ended
RESIDENT_RUN_RESPONSE = PayloadLayout(
    "RESIDENT_WAIT response",
    (
        ("cycles", "I"),  # start to END (or the refusal)
        ("engine_cycles", "I"),  # the engine busy with the run's RUN commands
        ("dma_wait_cycles", "I"),  # spent waiting for DRAM (requests, read data, write drain)
        ("host_cycles", "I"),  # serving the link's MEM_WRITE/MEM_READ during the run
        ("error_code", "B"),  # hw.soc.sequencer.SequencerError, 0 when the program ended
        ("pc", "I"),  # address of the last command executed (the refused one on an error)
    ),
)
#: sync + header + crc: the bytes a frame adds to its payload
FRAME_OVERHEAD = len(SYNC) + FRAME_HEADER.size + CRC_TRAILER.size


def frame_bytes(config: AcceleratorConfig) -> int:
    """Bytes of the device's frame buffer: the longest request payload or response (+ slack).
    The link builds its frame memory this deep, and the sequencer addresses it
    (``HostSpace.LINK``)."""
    responses = (IDENTIFY_RESPONSE, STATUS_RESPONSE, RUN_RESPONSE)
    responses += (MODEL_COMMIT_RESPONSE, RESIDENT_RUN_RESPONSE)
    longest = max(layout.size for layout in responses)
    return max(config.max_payload, RESPONSE_STATUS.size + longest) + 8


def udp_frame_fits(config: AcceleratorConfig) -> bool:
    """Whether every frame of a device built for ``config`` fits one UDP datagram (the UDP link
    needs it: a frame is never split across datagrams)."""
    return config.max_payload + FRAME_OVERHEAD <= UDP_MAX_DATAGRAM


class Opcode(enum.IntEnum):
    IDENTIFY = 0x01
    WRITE = 0x10
    READ = 0x11
    RUN = 0x20
    STATUS = 0x30
    CLEAR = 0x31
    # resident mode (devices with dram_bytes > 0)
    MEM_WRITE = 0x12
    MEM_READ = 0x13
    MODEL_COMMIT = 0x21
    RUN_RESIDENT = 0x22
    RESIDENT_WAIT = 0x23


class Status(enum.IntEnum):
    OK = 0
    BAD_CRC = 1
    BAD_OPCODE = 2  # unknown opcode, or a resident-mode opcode on a device without DRAM
    BAD_LENGTH = 3
    ENGINE_ERROR = 4
    DEVICE_ERROR = 5  # the sequencer refused a transfer or a command (code + pc in STATUS)
    NO_MODEL = 6  # RUN_RESIDENT with no committed model
    BAD_MODEL = 7  # MODEL_COMMIT: the CRC over DRAM differs (the response has the device's)
    DRAM_NOT_READY = 8  # a resident-mode opcode before the DRAM is initialized, or it failed
    #: v5: the request needs what a running program uses (the engine's buffers, the model, the
    #: sequencer's program): WRITE/READ/RUN, MODEL_COMMIT, a MEM_WRITE into the model, another
    #: RUN_RESIDENT; retry after RESIDENT_WAIT
    BUSY = 9
    BAD_ADDRESS = 10  # v5: RUN_RESIDENT's input or output address inside the committed model


class DramState(enum.IntEnum):
    """STATUS ``dram_state``: the board's DRAM controller (LiteDRAM's ``init_done`` /
    ``init_error``; on the Arty A7 its SERV init CPU's BIOS runs the DDR3 init and leveling)."""

    NONE = 0  # no DRAM: streamed mode only
    INITIALIZING = 1  # init/calibration running: resident opcodes answer DRAM_NOT_READY
    READY = 2
    FAILED = 3  # the calibration failed (init_error): resident mode cannot run


# -- frames --------------------------------------------------------------------------------------
def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_frame(seq: int, opcode: int, payload: bytes = b"") -> bytes:
    body = FRAME_HEADER.pack(length=len(payload), seq=seq & 0xFF, opcode=opcode) + payload
    return SYNC + body + CRC_TRAILER.pack(crc=crc32(body))


@dataclass(frozen=True)
class Frame:
    seq: int
    opcode: int
    payload: bytes

    @property
    def size(self) -> int:
        """Bytes on the wire, sync to CRC."""
        return FRAME_OVERHEAD + len(self.payload)


class FrameParser:
    """Streaming frame decoder: :meth:`feed` bytes, :meth:`pop` whole frames.

    Bytes before a sync are skipped (counted in :attr:`skipped`). A frame whose length exceeds
    ``max_payload`` or whose CRC fails raises :class:`FrameError` from :meth:`pop`; its sync is
    dropped and the parser hunts again from the next byte, so a frame hidden behind garbage
    that looked like a sync is still found.
    """

    def __init__(self, max_payload: int = 0xFFFF):
        self.max_payload = max_payload
        self.buffer = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def clear(self) -> None:
        self.buffer.clear()

    def _hunt(self) -> bool:
        """Drop bytes before the first sync; True if the buffer now starts with one."""
        at = self.buffer.find(SYNC)
        if at < 0:
            keep = 1 if self.buffer[-1:] == SYNC[:1] else 0
            self.skipped += len(self.buffer) - keep
            del self.buffer[: len(self.buffer) - keep]
            return False
        self.skipped += at
        del self.buffer[:at]
        return True

    def needed(self) -> int:
        """How many more bytes the next :meth:`pop` needs at least (>= 1 when it has none)."""
        if not self._hunt():
            return len(SYNC) - len(self.buffer)
        head = len(SYNC) + FRAME_HEADER.size
        if len(self.buffer) < head:
            return head - len(self.buffer)
        length = FRAME_HEADER.unpack(self.buffer[len(SYNC) :])["length"]
        return max(1, head + length + CRC_TRAILER.size - len(self.buffer))

    def pop(self) -> Frame | None:
        """The next whole frame, or None until more bytes are fed; raises :class:`FrameError`."""
        if not self._hunt() or len(self.buffer) < len(SYNC) + FRAME_HEADER.size:
            return None
        header = FRAME_HEADER.unpack(self.buffer[len(SYNC) :])
        length = header["length"]
        if length > self.max_payload:
            del self.buffer[: len(SYNC)]
            raise FrameError(f"frame length {length} exceeds the maximum {self.max_payload}")
        end = len(SYNC) + FRAME_HEADER.size + length
        if len(self.buffer) < end + CRC_TRAILER.size:
            return None
        body = bytes(self.buffer[len(SYNC) : end])
        received = CRC_TRAILER.unpack(self.buffer[end:])["crc"]
        if received != crc32(body):
            del self.buffer[: len(SYNC)]
            raise FrameError(f"frame CRC {received:#010x} != computed {crc32(body):#010x}")
        del self.buffer[: end + CRC_TRAILER.size]
        return Frame(header["seq"], header["opcode"], body[FRAME_HEADER.size :])


def decode_frame(data: bytes, max_payload: int = 0xFFFF) -> Frame:
    """Exactly one frame (garbage before its sync allowed) -> :class:`Frame`.

    Raises :class:`FrameError` for a bad CRC, an over-long or incomplete frame, or bytes after it.
    """
    parser = FrameParser(max_payload)
    parser.feed(data)
    frame = parser.pop()
    if frame is None:
        raise FrameError(f"incomplete frame ({len(parser.buffer)} bytes after the sync hunt)")
    if parser.buffer:
        raise FrameError(f"{len(parser.buffer)} bytes after the frame")
    return frame


# -- requests ------------------------------------------------------------------------------------
def write_payload(space: int, offset: int, data: bytes) -> bytes:
    return WRITE_REQUEST.pack(space=space, offset=offset) + data


def read_payload(space: int, offset: int, length: int) -> bytes:
    return READ_REQUEST.pack(space=space, offset=offset, count=length)


def mem_write_payload(addr: int, data: bytes) -> bytes:
    return MEM_WRITE_REQUEST.pack(addr=addr) + data


def mem_read_payload(addr: int, length: int) -> bytes:
    return MEM_READ_REQUEST.pack(addr=addr, count=length)


# -- IDENTIFY ------------------------------------------------------------------------------------
def clock_hz(config: AcceleratorConfig) -> int:
    """The configuration's clock in whole Hz (IDENTIFY carries it as u32)."""
    return _whole_hz("clock_mhz", config.clock_mhz)


def engine_clock_hz(config: AcceleratorConfig) -> int:
    """The clock the engine computes at, in whole Hz (its own, or the fabric clock)."""
    return _whole_hz("engine_clock_mhz", config.compute_mhz)


def _whole_hz(name: str, mhz: float) -> int:
    hz = round(mhz * 1e6)
    if hz / 1e6 != mhz or not 0 < hz < 1 << 32:
        raise ValueError(f"{name}={mhz} is not a whole number of Hz below 4.3 GHz")
    return hz


def identify_fields(
    config: AcceleratorConfig,
    baud: int = 0,
    dram_bytes: int = 0,
    link: LinkKind | None = None,
    link_bps: int | None = None,
) -> dict:
    """IDENTIFY's fields for a bitstream built for ``config`` (``baud`` 0: not a UART link;
    ``dram_bytes`` 0: no external memory, streamed mode only), answered on ``link`` at
    ``link_bps`` (by default the UART at ``baud`` if there is one, else a stream)."""
    if link is None:
        link = LinkKind.UART if baud else LinkKind.STREAM
    if link_bps is None:
        link_bps = baud if link == LinkKind.UART else 0
    return {
        "magic": MAGIC,
        "version": PROTOCOL_VERSION,
        "rows": config.rows,
        "cols": config.cols,
        "index_bits_max": config.index_bits_max,
        "act_in_bytes": config.act_in_bytes,
        "act_out_bytes": config.act_out_bytes,
        "weight_bytes": config.weight_bytes,
        "max_out_channels": config.max_out_channels,
        "max_payload": config.max_payload,
        "clock_hz": clock_hz(config),
        "baud": baud,
        "fingerprint": bytes.fromhex(config.fingerprint()),
        "dram_bytes": dram_bytes,
        "engine_clock_hz": engine_clock_hz(config),
        "features": int(features(config)),
        "link": int(link),
        "link_bps": link_bps,
    }


def identify_payload(
    config: AcceleratorConfig, baud: int = 0, dram_bytes: int = 0, **link
) -> bytes:
    """What the device answers to IDENTIFY (after the status byte); ``link``: as
    :func:`identify_fields`'s ``link``/``link_bps``."""
    return IDENTIFY_RESPONSE.pack(**identify_fields(config, baud, dram_bytes, **link))


@dataclass(frozen=True)
class DeviceInfo:
    magic: bytes
    version: int
    rows: int
    cols: int
    index_bits_max: int
    act_in_bytes: int
    act_out_bytes: int
    weight_bytes: int
    max_out_channels: int
    max_payload: int
    clock_hz: int
    baud: int
    fingerprint: str
    dram_bytes: int
    engine_clock_hz: int
    features: int = 0
    link: int = LinkKind.STREAM
    link_bps: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> DeviceInfo:
        """From an IDENTIFY response of this protocol version (check :data:`IDENTIFY_PREFIX`
        first: an older device's payload has another layout)."""
        fields = IDENTIFY_RESPONSE.unpack(payload)
        fields["fingerprint"] = fields["fingerprint"].hex()
        return cls(**fields)

    @property
    def link_kind(self) -> LinkKind:
        """The link the device answered on."""
        return LinkKind(self.link)

    def config(self) -> AcceleratorConfig:
        """The full configuration the bitstream was built for (including its clock)."""
        return AcceleratorConfig(
            rows=self.rows,
            cols=self.cols,
            index_bits_max=self.index_bits_max,
            act_in_bytes=self.act_in_bytes,
            act_out_bytes=self.act_out_bytes,
            weight_bytes=self.weight_bytes,
            max_out_channels=self.max_out_channels,
            max_payload=self.max_payload,
            clock_mhz=self.clock_hz / 1e6,
            engine_clock_mhz=(
                None if self.engine_clock_hz == self.clock_hz else self.engine_clock_hz / 1e6
            ),
            huffman_decoder=bool(self.features & Feature.HUFFMAN_DECODER),
        )


# -- STATUS --------------------------------------------------------------------------------------
STATUS_FIELDS = STATUS_RESPONSE.names


def parse_status(payload: bytes) -> dict:
    """STATUS fields; ``model_fingerprint`` as hex (as ``ResidentImage.fingerprint()`` gives it)."""
    fields = STATUS_RESPONSE.unpack(payload)
    fields["model_fingerprint"] = fields["model_fingerprint"].hex()
    return fields


# -- link time -----------------------------------------------------------------------------------
#: bits a UART sends per byte: 8N1, a start and a stop bit around the eight data bits
UART_BITS_PER_BYTE = 10
#: bytes Ethernet adds to every datagram on the wire: preamble and SFD 8, MAC header 14, FCS 4,
#: inter-frame gap 12, IPv4 header 20, UDP header 8 (a frame's datagram shorter than 18 bytes is
#: also padded to Ethernet's 64-byte minimum: at most 8 bytes more for the status-only
#: answers, left out)
ETHERNET_DATAGRAM_OVERHEAD = 8 + 14 + 4 + 12 + 20 + 8


@dataclass(frozen=True)
class LinkRate:
    """A link with a line rate: its :class:`LinkKind` (UART or ETHERNET) and ``bps`` bits/s."""

    kind: LinkKind
    bps: int

    def __post_init__(self):
        if self.kind == LinkKind.STREAM or self.bps <= 0:
            raise ValueError(f"{self.kind.label} at {self.bps} bits/s has no line rate")

    def seconds(self, link_bytes: int, frames: int) -> float:
        """Seconds the link needs for ``frames`` frames of ``link_bytes`` bytes in all (sync to
        CRC, both directions added up, as the two directions of a half-duplex line): a UART
        sends :data:`UART_BITS_PER_BYTE` bits a byte; Ethernet 8, plus
        :data:`ETHERNET_DATAGRAM_OVERHEAD` bytes per frame (one frame per datagram)."""
        if self.kind == LinkKind.UART:
            return link_bytes * UART_BITS_PER_BYTE / self.bps
        return (link_bytes + frames * ETHERNET_DATAGRAM_OVERHEAD) * 8 / self.bps

    def describe(self) -> str:
        """``a 12 Mbaud UART`` / ``100 Mbit/s Ethernet``."""
        if self.kind == LinkKind.UART:
            return f"a {self.bps / 1e6:g} Mbaud UART"
        return f"{self.bps / 1e6:g} Mbit/s Ethernet"
