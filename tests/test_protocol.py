"""fpga.spec.protocol: one layout table gives the host's struct packing and the gateware's
StructLayout; one frame parser; the board registry's bauds are the ones the docs quote."""

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fpga.spec import protocol
from fpga.spec.boards import BOARDS
from fpga.spec.config import ARTY35_CONFIG, DEFAULT_CONFIG, SMALL_CONFIG
from fpga.spec.protocol import (
    FRAME_OVERHEAD,
    IDENTIFY_RESPONSE,
    RESPONSE_FLAG,
    DeviceInfo,
    Frame,
    FrameError,
    FrameParser,
    PayloadLayout,
    decode_frame,
    encode_frame,
    identify_payload,
)

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = [value for value in vars(protocol).values() if isinstance(value, PayloadLayout)]


def _random_values(layout: PayloadLayout, rng: random.Random) -> dict:
    values = {}
    for (field, code), bits in zip(layout.fields, layout.widths().values(), strict=True):
        values[field] = rng.randbytes(bits // 8) if code.endswith("s") else rng.getrandbits(bits)
    return values


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_struct_layout_and_struct_packing_agree(layout):
    """The gateware's StructLayout puts every field at the bits where struct packs its bytes."""
    rng = random.Random(layout.name)
    from hw.soc.link import struct_layout

    structure = struct_layout(layout)
    assert structure.size == 8 * layout.size
    for _ in range(20):
        values = _random_values(layout, rng)
        packed = layout.pack(**values)
        assert layout.unpack(packed) == values
        const = structure.const(layout.gateware_values(**values)).as_value().value
        assert const.to_bytes(layout.size, "little") == packed


def test_layouts_refuse_missing_fields_and_short_payloads():
    with pytest.raises(TypeError, match="missing fields"):
        protocol.READ_REQUEST.pack(space=1, offset=2)
    with pytest.raises(FrameError, match="READ request payload has 3 bytes"):
        protocol.READ_REQUEST.unpack(b"abc")


def test_the_host_runs_without_amaranth():
    code = "import sys, fpga.spec.protocol, host.driver; sys.exit('amaranth' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_identify_round_trips_the_full_configuration():
    own_clock = DEFAULT_CONFIG.replace(clock_mhz=40.0, engine_clock_mhz=60.0)
    no_decoder = ARTY35_CONFIG  # IDENTIFY's features: no on-chip Huffman decoder
    assert not no_decoder.huffman_decoder
    for config in (DEFAULT_CONFIG, SMALL_CONFIG.replace(index_bits_max=4), own_clock, no_decoder):
        info = DeviceInfo.parse(identify_payload(config, baud=12_000_000, dram_bytes=1 << 28))
        assert info.config() == config and info.fingerprint == config.fingerprint()
        assert info.engine_clock_hz == round(config.compute_mhz * 1e6)
        assert info.version == protocol.PROTOCOL_VERSION == 9 and info.baud == 12_000_000
        assert info.dram_bytes == 1 << 28
    assert IDENTIFY_RESPONSE.size == len(identify_payload(DEFAULT_CONFIG))
    with pytest.raises(ValueError, match="whole number of Hz"):
        identify_payload(DEFAULT_CONFIG.replace(clock_mhz=100.0000001))
    with pytest.raises(ValueError, match="engine_clock_mhz=.* whole number of Hz"):
        identify_payload(DEFAULT_CONFIG.replace(engine_clock_mhz=60.0000001))


def test_frame_parser_hunts_splits_and_rejects():
    rng = random.Random(11)
    frames = [Frame(i, RESPONSE_FLAG | i, rng.randbytes(rng.randrange(0, 50))) for i in range(30)]
    wire = b"".join(b"\xa5junk\x5a" + encode_frame(f.seq, f.opcode, f.payload) for f in frames)
    parser, got = FrameParser(), []
    position = 0
    while position < len(wire):  # fed in random pieces
        step = rng.randrange(1, 20)
        parser.feed(wire[position : position + step])
        position += step
        while (frame := parser.pop()) is not None:
            got.append(frame)
    assert got == frames and not parser.buffer and parser.skipped == 30 * 6
    assert sum(f.size for f in got) == len(wire) - parser.skipped
    assert all(f.size == FRAME_OVERHEAD + len(f.payload) for f in got)

    good = encode_frame(3, 0x81, b"hello")
    bad = bytearray(good)
    bad[8] ^= 1
    parser = FrameParser()
    parser.feed(bytes(bad) + good)  # a corrupt frame, then a good one right behind it
    with pytest.raises(FrameError, match="CRC"):
        parser.pop()
    assert parser.pop() == Frame(3, 0x81, b"hello")

    parser = FrameParser(max_payload=4)
    parser.feed(good)
    with pytest.raises(FrameError, match="exceeds the maximum 4"):
        parser.pop()


def test_parser_needs_no_more_than_the_frame():
    """The driver reads what ``needed()`` says, so it never reads past a frame."""
    frame = encode_frame(1, 0x90, b"x" * 10)
    parser = FrameParser()
    read = 0
    while (got := parser.pop()) is None:
        n = parser.needed()
        parser.feed(frame[read : read + n])
        read += n
    assert read == len(frame) and got.payload == b"x" * 10


def test_decode_frame():
    assert decode_frame(b"\x00" + encode_frame(9, 1)) == Frame(9, 1, b"")
    with pytest.raises(FrameError, match="incomplete"):
        decode_frame(encode_frame(9, 1)[:-1])
    with pytest.raises(FrameError, match="after the frame"):
        decode_frame(encode_frame(9, 1) + b"\x00")


def test_docs_quote_the_board_registry_bauds():
    """docs/build.md's link column says each board's baud (fpga/spec/boards.py owns it)."""
    text = (ROOT / "docs" / "build.md").read_text()
    for board in BOARDS.values():
        row = re.search(rf"^\| `{board.name}` \|.*$", text, re.M)
        assert row, board.name
        mbaud = f"{board.baud / 1e6:g} Mbaud"
        assert f"UART {mbaud}" in row.group(0), (board.name, mbaud)
        assert mbaud in board.link
