"""The sequencer's cost model: its measured cycles per item moved, and the items a row costs.

``hw.soc.sequencer``'s cycles per command, chunk, row and window, measured in its Amaranth
simulation and checked against it by ``tests/hw/test_sequencer.py::test_transfer_costs``;
:mod:`fpga.compiler.traffic` counts the items a resident program moves.
"""

from __future__ import annotations

import numpy as np

from fpga.spec.commands import Opcode
from fpga.spec.layout import MAX_TRANSFER_BYTES

#: cycles of ``hw.sequencer`` measured in its Amaranth simulation with a 20-cycle DRAM read
#: latency (tests/hw/test_sequencer.py::test_transfer_costs): fetch + decode of one command, per
#: chunk loaded / stored over the buffer ports (:func:`row_chunks`), per DMA transfer beyond its
#: chunks; a LOAD's rows are pipelined (the next row's read goes out while the one before moves),
#: so a LOAD command pays the read latency once (``load``) and each of its rows a little more
#: (``row``); a WINDOWS LOAD: per window cut (check, next) and per byte of the span read once
SEQUENCER_COSTS = {
    "command": 24,
    "load_chunk": 1.0,
    "store_chunk": 1.0,  # a read a cycle; finished words go out while the next is read
    "load": 22,  # a LOAD command's first DMA request + read latency (once a command)
    "row": 1.6,  # each LOAD row (a DMA transfer) beyond its chunks: its request, the row switch
    "store_row": 7,  # a STORE row's request, the pipeline's fill, the drain
    # a POSTED STORE (fpga.spec.commands.Flag.POSTED): the store mover's cycles a row (the
    # above without the command FSM's two), the FSM's to hand a row over
    "posted_row": 5,
    "store_issue": 1,
    "window": 1,  # a window's next row starts as its last chunk goes
    "span_byte": 1 / 16,
}
#: the DRAM word the estimates assume (the Arty A7's 128-bit native port)
ESTIMATE_WORD_BYTES = MAX_TRANSFER_BYTES


def row_chunks(buffer_at, dram_at, length, width: int, word_bytes: int):
    """Buffer-port cycles (chunks) the sequencer spends on rows of ``length`` bytes at buffer
    byte ``buffer_at`` and DRAM byte ``dram_at`` in a space written ``width`` bytes at a time
    (1 for :data:`fpga.layout.BYTE_SPACES`): a chunk ends at every multiple of ``width`` in the
    buffer and of ``word_bytes`` in DRAM. Works on numpy arrays of rows."""
    buffer_at, dram_at = np.asarray(buffer_at, np.int64), np.asarray(dram_at, np.int64)
    if length <= 0:
        return np.zeros_like(buffer_at)

    def crossings(start, step):  # multiples of step strictly inside (start, start + length)
        return (start + length - 1) // step - start // step

    in_buffer, in_dram = crossings(buffer_at, width), crossings(dram_at, word_bytes)
    shared = np.where((buffer_at - dram_at) % width == 0, in_dram, 0)  # width | word_bytes
    return 1 + in_buffer + in_dram - shared


def load_commands(commands) -> int:
    """The LOADs of ``commands`` (command records) that move bytes: each pays
    ``SEQUENCER_COSTS["load"]`` once (``transfer_totals``' ``load_commands``)."""
    return sum(
        1
        for rec in commands
        if int(rec["opcode"]) == Opcode.LOAD and int(rec["count"]) and int(rec["length"])
    )


def transfer_cycles(totals: dict, costs: dict = SEQUENCER_COSTS) -> float:
    """The sequencer's cycles for what :func:`transfer_totals` counted (fetches, chunks, DMA
    transfers, windows; ``load_commands``: the LOADs that move bytes, each paying the read
    latency once; counted as 0 when the totals do not have it), at the measured per-item
    ``costs``."""
    t = totals
    return (
        t["commands"] * costs["command"]
        + t.get("load_commands", 0) * costs.get("load", 0)
        + t["load_chunks"] * costs["load_chunk"]
        + t["store_chunks"] * costs["store_chunk"]
        + (t["rows"] - t["store_rows"]) * costs["row"]
        + t["store_rows"] * costs["store_row"]
        + t["windows"] * costs["window"]
        + t["window_span"] * costs["span_byte"]
    )
