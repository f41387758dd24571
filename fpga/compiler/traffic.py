"""What a resident program moves, counted from its command list, and the cycles that takes."""

from __future__ import annotations

import numpy as np

from fpga.compiler.cost import (
    ESTIMATE_WORD_BYTES,
    SEQUENCER_COSTS,
    load_commands,
    row_chunks,
    transfer_cycles,
)
from fpga.compiler.resident import ResidentImage
from fpga.spec.commands import WIDE_STORES, Flag, Opcode, dram_span, relocation
from fpga.spec.layout import (
    BYTE_SPACES,
    HUFFMAN_HEADER_BYTES,
    BufferSpace,
    huffman_stream_header,
    predict_cycles,
    transfer_bytes,
)


def transfer_totals(
    image: ResidentImage, word_bytes: int = ESTIMATE_WORD_BYTES, commands=None
) -> dict[str, int]:
    """What the command list (or ``commands``, a slice of it) moves, counted statically: bytes
    loaded per source region, bytes stored, buffer-port chunks (``load_chunks``/
    ``store_chunks``), DMA transfers (``rows``), WINDOWS rows and spans, commands, runs, and
    the engine's predicted cycles. INPUT-flagged LOADs count as ``loaded_input``; chunks of
    relocated rows are counted at slot 0 (slots are :data:`REGION_ALIGN`-aligned, so every
    slot gives the same counts)."""
    commands = image.commands if commands is None else commands
    totals = {"commands": 0, "runs": 0, "rows": 0, "store_rows": 0, "stored": 0}
    totals.update({"windows": 0, "window_span": 0})  # WINDOWS LOADs: rows cut, bytes read
    totals.update({"load_chunks": 0, "store_chunks": 0, "load_commands": 0})
    totals.update({f"loaded_{name}": 0 for name in image.regions})
    for items in _command_items(image, commands, word_bytes):
        for key, value in items.items():
            totals[key] += value
    totals["loaded"] = sum(totals[f"loaded_{name}"] for name in image.regions)
    totals["engine_cycles"] = sum(image.program.predicted_cycles().values())
    return totals


def _command_items(image: ResidentImage, commands, word_bytes: int):
    """Per command, what it moves (the counts :func:`transfer_totals` adds up)."""
    width = min(transfer_bytes(image.config), word_bytes)
    bases = sorted((base, name) for name, (base, _) in image.regions.items())
    slot_bases = (image.input_address(0), image.output_address(0))
    for rec in commands:
        op, rows = int(rec["opcode"]), int(rec["count"]) if int(rec["length"]) else 0
        items = {"commands": 1}
        if op == Opcode.RUN:
            items["runs"] = 1
        elif op in (Opcode.LOAD, Opcode.STORE):
            length = int(rec["length"])
            moved = rows * length
            flags = int(rec["flags"])
            first = int(rec["dram_addr"]) + relocation(flags, *slot_bases)
            if rows and flags & Flag.WINDOWS:
                items["rows"] = 1  # one DMA transfer of the span
                items["windows"] = rows
                items["window_span"] = dram_span(rec)
            else:
                items["rows"] = rows
            space = int(rec["space"])
            wide = space not in BYTE_SPACES if op == Opcode.LOAD else space in WIDE_STORES
            r = np.arange(rows, dtype=np.int64)
            chunks = row_chunks(
                int(rec["buffer_offset"]) + r * int(rec["buffer_stride"]),
                first + r * int(rec["dram_stride"]),
                length,
                width if wide else 1,
                word_bytes,
            )
            if op == Opcode.STORE:
                items.update(store_rows=rows, stored=moved, store_chunks=int(chunks.sum()))
            else:
                if flags & Flag.INPUT:
                    region = "input"
                else:
                    region = [name for base, name in bases if base <= first][-1]
                items[f"loaded_{region}"] = moved
                items["load_chunks"] = int(chunks.sum())
                if space == BufferSpace.HUFFMAN_STREAM and region == "model":
                    # the decoder takes the bits while it has room and gives one symbol a
                    # cycle: a chunk's stream moves at the slower of the two
                    blob = image.model[first - image.regions["model"][0] :]
                    symbols, _ = huffman_stream_header(blob[:HUFFMAN_HEADER_BYTES])
                    items["load_chunks"] = max(moved, HUFFMAN_HEADER_BYTES + symbols)
                items["load_commands"] = load_commands([rec])
        yield items


def device_cycles(image: ResidentImage, costs: dict = SEQUENCER_COSTS) -> dict[str, int]:
    """Device cycles of one inference, walking the command list on a timeline of the command
    FSM, the engine and the store mover: each command costs the FSM its fetch and its rows
    (:func:`transfer_totals` x ``costs``); a POSTED STORE's rows go to the store mover one after
    the other (the FSM goes on once it has handed over the last) and the mover moves them
    meanwhile; a LOAD that reads back what the posted STORE writes waits for it; a RUN starts
    when the run under way and the posted STORE have ended and lasts its ``predict_cycles``; a
    SPLIT RUN lets the next commands go on meanwhile (double buffering), any other RUN, a WAIT
    and END wait for it (END for the STORE too). ``total``: the program's cycles; ``engine``:
    the runs' cycles; ``transfer``: the FSM's and the mover's own; ``exposed``: ``total -
    engine``, what the engine's runs did not hide."""
    runs = iter(
        predict_cycles(run.descriptor, image.config)
        for unit in image.program.units
        for tile in unit.tiles
        for run in tile.runs
    )
    zero = dict.fromkeys(("commands", "load_chunks", "store_chunks", "rows", "store_rows"), 0)
    zero["load_commands"] = 0
    zero.update(windows=0, window_span=0)
    now = engine_free = store_free = transfer = engine = 0
    stored = (0, 0)  # the posted STORE's DRAM span
    slot_bases = (image.input_address(0), image.output_address(0))
    items = _command_items(image, image.commands, ESTIMATE_WORD_BYTES)
    for rec, counts in zip(image.commands, items, strict=True):
        op = int(rec["opcode"])
        cost = transfer_cycles({**zero, **counts}, costs)
        transfer += cost
        if op == Opcode.STORE and counts.get("store_rows") and int(rec["flags"]) & Flag.POSTED:
            rows = counts["store_rows"]
            mover = cost - costs["command"] - rows * (costs["store_row"] - costs["posted_row"])
            now = max(now + costs["command"], store_free)  # the first row is taken
            store_free = now + mover
            now += (rows - 1) * mover / rows + costs["store_issue"]
            stored = _span(rec, slot_bases)
            continue
        # after the posted STORE under way: a STORE's rows, a LOAD that reads its bytes back
        if op == Opcode.STORE or (op == Opcode.LOAD and _meets(_span(rec, slot_bases), stored)):
            now = max(now + costs["command"], store_free) + cost - costs["command"]
            continue
        now += cost
        if op == Opcode.RUN:
            cycles = next(runs)
            now = max(now, engine_free, store_free)
            engine_free, engine = now + cycles, engine + cycles
            if not int(rec["flags"]) & Flag.SPLIT:
                now = engine_free
        elif op == Opcode.WAIT:
            now = max(now, engine_free)
        elif op == Opcode.END:
            now = max(now, engine_free, store_free)
    return {
        "engine": engine,
        "transfer": int(transfer),
        "total": int(now),
        "exposed": int(now) - engine,
    }


def _span(rec, slot_bases) -> tuple[int, int]:
    """A LOAD's or STORE's DRAM bytes, first row's first to last row's last (slot 0)."""
    first = int(rec["dram_addr"]) + relocation(int(rec["flags"]), *slot_bases)
    return first, first + dram_span(rec)


def _meets(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def sequential_cycles(image: ResidentImage, costs: dict = SEQUENCER_COSTS) -> dict[str, int]:
    """Device cycles of one inference on the sequential ``hw.sequencer`` (no overlap of DMA and
    engine), estimated from :func:`transfer_totals` and the measured per-item ``costs``."""
    t = transfer_totals(image)
    transfer = transfer_cycles(t, costs)
    return {
        "engine": t["engine_cycles"],
        "transfer": int(transfer),
        "total": int(transfer) + t["engine_cycles"],
    }
