"""The on-chip Huffman decoder (hw.soc.huffman) under Amaranth's simulator, against the host
encoder."""

import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from fpga.spec import huffman
from fpga.spec.layout import (
    HUFFMAN_HEADER_BYTES,
    BufferSpace,
    decode_huffman_stream,
    huffman_lengths,
    pack_huffman_stream,
    pack_huffman_table,
)
from hw.soc.huffman import HuffmanDecoder

SEED = int(os.environ.get("HUFFMAN_SEED", "5"))


def skewed_symbols(rng, count, alphabet, steep):
    """Symbols with a geometric-like histogram: long codes for the rare ones."""
    p = steep ** -np.arange(alphabet, dtype=np.float64)
    p /= p.sum()
    perm = rng.permutation(256)[:alphabet]
    return perm[rng.choice(alphabet, size=count, p=p)].astype(np.uint8)


def run_decoder(
    table, chunks, in_width, p_valid=1.0, p_ready=1.0, seed=0, replay=False, abort_at=None
):
    """Feed ``table`` and each stream chunk; returns (outputs, output cycles, error, busy)."""
    dut = HuffmanDecoder(in_width=in_width)
    rng = np.random.default_rng(seed)
    step = in_width // 8
    out, when, result = [], [], {}

    def words(stream):
        header = [(a, stream[a]) for a in range(HUFFMAN_HEADER_BYTES)]
        bits = stream[HUFFMAN_HEADER_BYTES:]
        bits = bits + bytes(-len(bits) % step)
        body = [
            (HUFFMAN_HEADER_BYTES + i, int.from_bytes(bits[i : i + step], "little"))
            for i in range(0, len(bits), step)
        ]
        if replay and len(body) > 4:
            # link retries: the first frame (header + a quarter) is sent twice, then a frame
            # without the header is sent twice
            half = len(body) // 2
            quarter = half // 2
            return header + body[:quarter] + header + body[:half] + body[quarter:half] + body[half:]
        return header + body

    async def bench(ctx):
        for addr, byte in enumerate(table):
            ctx.set(dut.table_en, 1)
            ctx.set(dut.table_addr, addr)
            ctx.set(dut.table_data, byte)
            await ctx.tick()
        ctx.set(dut.table_en, 0)
        cycle = 0
        for stream in chunks:
            pending = words(stream)
            started = False
            while pending or not started or ctx.get(dut.busy):
                assert cycle < 200_000, "decoder hangs"
                if pending and rng.random() < p_valid:
                    addr, data = pending[0]
                    ctx.set(dut.stream_en, 1)
                    ctx.set(dut.stream_addr, addr)
                    ctx.set(dut.stream_data, data)
                else:
                    ctx.set(dut.stream_en, 0)
                ctx.set(dut.o.ready, int(rng.random() < p_ready))
                ctx.set(dut.abort, int(abort_at is not None and cycle == abort_at))
                took = ctx.get(dut.stream_en) and ctx.get(dut.stream_ready)
                if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                    payload = ctx.get(dut.o.payload)
                    out.append((payload & 0xFF, payload >> 8))
                    when.append(cycle)
                await ctx.tick()
                cycle += 1
                if took:
                    started = started or pending[0][0] == HUFFMAN_HEADER_BYTES - 1
                    pending.pop(0)
                if ctx.get(dut.error):
                    break
            if ctx.get(dut.error):
                break
        ctx.set(dut.stream_en, 0)
        await ctx.tick()
        result["error"] = ctx.get(dut.error)
        result["busy"] = ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out, when, result["error"], result["busy"]


def chunk_case(rng, count, alphabet, steep, dest):
    data = skewed_symbols(rng, count, alphabet, steep).tobytes()
    lengths = huffman_lengths(data)
    return data, lengths, pack_huffman_table(lengths), pack_huffman_stream(data, lengths, dest)


def test_decodes_one_symbol_per_cycle_with_long_codes():
    rng = np.random.default_rng(SEED)
    print(f"HUFFMAN_SEED={SEED}")
    # Fibonacci frequencies give the deepest Huffman tree: 17 symbols -> codes of 1..16 bits
    fib = [1, 1]
    while len(fib) < 17:
        fib.append(fib[-1] + fib[-2])
    symbols = rng.permutation(256)[:17]
    data = rng.permutation(np.repeat(symbols, fib)).astype(np.uint8).tobytes()
    lengths = huffman_lengths(data)
    table, stream = pack_huffman_table(lengths), pack_huffman_stream(data, lengths, 100)
    assert lengths.max() == huffman.MAX_LENGTH  # the longest codes are exercised
    out, when, error, busy = run_decoder(table, [stream], in_width=16)
    assert not error and not busy
    assert bytes(s for s, _ in out) == data
    assert [a for _, a in out] == list(range(100, 100 + len(data)))
    # one symbol every cycle from the first to the last: no bubble, whatever the code lengths
    assert when[-1] - when[0] == len(data) - 1


@pytest.mark.parametrize("alphabet,steep", [(1, 1.0), (16, 1.1), (64, 1.05), (256, 1.0)])
def test_byte_fed_with_stalls_and_backpressure(alphabet, steep):
    rng = np.random.default_rng(SEED + alphabet)
    data, _, table, stream = chunk_case(rng, 300, alphabet, steep, dest=7)
    out, _, error, busy = run_decoder(table, [stream], 8, p_valid=0.7, p_ready=0.6, seed=SEED)
    assert not error and not busy
    assert bytes(s for s, _ in out) == data
    assert decode_huffman_stream(table, stream) == (7, data)  # the emulator's model agrees


def test_consecutive_chunks_and_replayed_frames():
    rng = np.random.default_rng(SEED + 1)
    data = skewed_symbols(rng, 900, 40, 1.2).tobytes()
    lengths = huffman_lengths(data)
    table = pack_huffman_table(lengths)
    parts = [data[:400], data[400:401], data[401:]]
    streams, dest = [], 0
    for part in parts:
        streams.append(pack_huffman_stream(part, lengths, dest))
        dest += len(part)
    out, _, error, _ = run_decoder(table, streams, 8, replay=True, p_ready=0.8, seed=SEED)
    assert not error
    # a replayed header restarts its chunk: keep the last decode of every address
    final = {}
    for symbol, addr in out:
        final[addr] = symbol
    assert bytes(final[a] for a in range(len(data))) == data


def test_invalid_code_and_abort_set_error():
    # only symbol 9 has a code ("0"); a stream of 1-bits is not a valid code
    lengths = np.zeros(256, dtype=np.int64)
    lengths[9] = 1
    table = pack_huffman_table(lengths)
    bad = (5).to_bytes(4, "little") + (0).to_bytes(4, "little") + b"\x3f\xff\xff"
    out, _, error, busy = run_decoder(table, [bad], 8)
    assert error and not busy
    assert [s for s, _ in out] == [9, 9]  # the two valid leading codes, then the error
    with pytest.raises(ValueError):
        decode_huffman_stream(table, bad)

    rng = np.random.default_rng(SEED + 2)
    _, _, table, stream = chunk_case(rng, 200, 20, 1.1, dest=0)
    out, _, error, busy = run_decoder(table, [stream], 8, p_valid=0.5, abort_at=40)
    assert error and not busy and len(out) < 200


def test_a_config_without_the_decoder_refuses_huffman_chunks():
    """AcceleratorConfig.huffman_decoder False (the A7-35T): the arbiter drops a HUFFMAN_TABLE or
    HUFFMAN_STREAM chunk and flags huffman_error (until clear_error); other chunks go on to the
    engine as before; the compiler refuses Huffman weights for the config."""
    from fpga.compiler.program import CompileError, compile_network
    from fpga.spec.config import ARTY35_CONFIG, DEFAULT_CONFIG
    from fpga.spec.network import shape_network
    from hw.soc.arbiter import BufferArbiter

    with pytest.raises(CompileError, match="no on-chip Huffman decoder"):
        compile_network(shape_network("v1.1", 64), ARTY35_CONFIG, weights_mode="huffman")
    compile_network(shape_network("v1.1", 64), ARTY35_CONFIG, weights_mode="indices")
    assert DEFAULT_CONFIG.huffman_decoder

    dut = BufferArbiter(ARTY35_CONFIG, resident=False)
    seen = []

    async def bench(ctx):
        ctx.set(dut.engine_write.ready, 1)
        for space, expect_error in (
            (BufferSpace.WEIGHT, 0),
            (BufferSpace.HUFFMAN_STREAM, 1),
            (BufferSpace.ACT_IN, 1),  # the error stays until cleared
        ):
            ctx.set(dut.link_write.valid, 1)
            ctx.set(dut.link_write.payload.space, space)
            ctx.set(dut.link_write.payload.addr, 5)
            ctx.set(dut.link_write.payload.count, 1)
            assert ctx.get(dut.link_write.ready)
            seen.append((space, ctx.get(dut.engine_write.valid)))
            await ctx.tick()
            ctx.set(dut.link_write.valid, 0)
            assert ctx.get(dut.huffman_error) == expect_error, space
        ctx.set(dut.clear_error, 1)
        await ctx.tick()
        ctx.set(dut.clear_error, 0)
        assert not ctx.get(dut.huffman_error)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [
        (BufferSpace.WEIGHT, 1),
        (BufferSpace.HUFFMAN_STREAM, 0),
        (BufferSpace.ACT_IN, 1),
    ]
