"""Canonical Huffman coding of small-alphabet symbol streams (codebook indices, gaps).

Code lengths come from symbol frequencies (limited to ``MAX_LENGTH`` bits by rescaling the
frequencies, so a table-driven decoder stays small); codes are canonical, so only the lengths
are stored. Bits are packed MSB first. One-symbol alphabets get a 1-bit code.
"""

from __future__ import annotations

import heapq

import numpy as np

MAX_LENGTH = 16


class HuffmanError(ValueError):
    """A code table or bitstream that cannot be decoded."""


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Symbol frequencies (alphabet,) -> code length per symbol (0 = unused), <= MAX_LENGTH."""
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    weights = counts[used].astype(np.float64)
    while True:
        heap = [(w, i, (int(s),)) for i, (w, s) in enumerate(zip(weights, used, strict=True))]
        heapq.heapify(heap)
        depth = dict.fromkeys(used.tolist(), 0)
        tie = len(heap)
        while len(heap) > 1:
            w1, _, a = heapq.heappop(heap)
            w2, _, b = heapq.heappop(heap)
            for s in a + b:
                depth[s] += 1
            heapq.heappush(heap, (w1 + w2, tie, a + b))
            tie += 1
        if max(depth.values()) <= MAX_LENGTH:
            break
        weights = np.ceil(weights / 2)  # flatten the distribution until the codes fit
    for s, d in depth.items():
        lengths[s] = d
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Code lengths -> canonical code values (same order as the symbols)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = sorted((int(lengths[s]), s) for s in np.flatnonzero(lengths))
    code, prev = 0, 0
    for length, s in order:
        code <<= length - prev
        codes[s] = code
        code += 1
        prev = length
    return codes


def check_lengths(lengths: np.ndarray) -> None:
    if (lengths < 0).any() or (lengths > MAX_LENGTH).any():
        raise HuffmanError("code length out of range")
    used = lengths[lengths > 0]
    if len(used) > 1 and np.sum(2.0 ** -used.astype(np.float64)) > 1.0:
        raise HuffmanError("code lengths violate the Kraft inequality")


def encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """Symbols -> packed bitstream (MSB first)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if len(symbols) == 0:
        return b""
    codes = canonical_codes(lengths)
    sym_len = lengths[symbols]
    if (sym_len == 0).any():
        raise HuffmanError("symbol without a code")
    sym_code = codes[symbols]
    total = int(sym_len.sum())
    # expand every code into its bits: bit j of a code of length L is (code >> (L-1-j)) & 1
    starts = np.concatenate([[0], np.cumsum(sym_len)[:-1]])
    owner = np.repeat(np.arange(len(symbols)), sym_len)
    pos = np.arange(total) - starts[owner]
    bits = (sym_code[owner] >> (sym_len[owner] - 1 - pos)) & 1
    return np.packbits(bits.astype(np.uint8)).tobytes()


def decode(data: bytes, count: int, lengths: np.ndarray) -> np.ndarray:
    """Packed bitstream -> ``count`` symbols (table-driven, MAX_LENGTH-bit lookahead)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    check_lengths(lengths)
    out = np.zeros(count, dtype=np.int64)
    if count == 0:
        return out
    used = np.flatnonzero(lengths)
    if len(used) == 0:
        raise HuffmanError("empty code table for a non-empty stream")
    codes = canonical_codes(lengths)
    table_sym = np.full(1 << MAX_LENGTH, -1, dtype=np.int64)
    table_len = np.zeros(1 << MAX_LENGTH, dtype=np.int64)
    for s in used:
        length = int(lengths[s])
        lo = int(codes[s]) << (MAX_LENGTH - length)
        hi = lo + (1 << (MAX_LENGTH - length))
        table_sym[lo:hi] = s
        table_len[lo:hi] = length
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    nbits = len(bits)
    padded = np.concatenate([bits, np.zeros(MAX_LENGTH, dtype=np.uint8)])
    # window value at every bit position: MAX_LENGTH bits starting there
    weights = 1 << np.arange(MAX_LENGTH - 1, -1, -1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, MAX_LENGTH)[: nbits + 1]
    values = windows.astype(np.int64) @ weights
    sym_at = table_sym[values]
    len_at = table_len[values]
    pos = 0
    for i in range(count):
        if pos >= nbits:
            raise HuffmanError("bitstream ends early")
        s = sym_at[pos]
        if s < 0:
            raise HuffmanError("invalid code in bitstream")
        out[i] = s
        pos += len_at[pos]
    if pos > nbits:
        raise HuffmanError("bitstream ends early")
    return out
