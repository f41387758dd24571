"""The resident program checker: refuse a command list the device must not run, naming the
command."""

from __future__ import annotations

from fpga.compiler.resident import ResidentImage
from fpga.spec.commands import (
    FLAGS,
    SLOTS,
    WINDOW_BYTES,
    Flag,
    Opcode,
    ResidentError,
    buffer_sizes,
    dram_span,
    run_claims,
    touches,
)
from fpga.spec.layout import HUFFMAN_HEADER_BYTES, BufferSpace, huffman_stream_header


def check_commands(image: ResidentImage, dram_size: int | None = None, commands=None) -> None:
    """Refuse a command list the device must not run: unknown opcode or space, unknown flags
    (outside :data:`fpga.spec.commands.FLAGS`), a flagged row outside
    ``[0, slot bytes)`` of its slot, a LOAD/STORE row outside ``[0, dram_size)`` (relocated
    rows: in the last slot) or an unflagged one outside every region of the map, an unflagged
    row in the input or output region (every run relocates those), a STORE into the model or
    program, a buffer range beyond its space, no END, or a hazard: a LOAD or STORE touching
    what a SPLIT RUN under way owns (:func:`fpga.spec.commands.run_claims`; a Huffman stream:
    the WEIGHT bytes its header says it decodes into) with no WAIT, RUN or END between. Raises
    :class:`ResidentError` naming the command."""
    dram_size = image.dram_size if dram_size is None else dram_size
    commands = image.commands if commands is None else commands
    sizes = buffer_sizes(image.config)
    writable = ("activations",)
    slots = {
        Flag.INPUT: ("input", image.input_slot_bytes, image.input_address(SLOTS - 1)),
        Flag.OUTPUT: ("output", image.output_slot_bytes, image.output_address(SLOTS - 1)),
    }
    owned, dram = None, None  # what the SPLIT run under way owns; the model's bytes
    for i, rec in enumerate(commands):
        op = int(rec["opcode"])
        where = f"command {i}"
        if op not in set(Opcode):
            raise ResidentError(f"{where}: unknown opcode {op}")
        op = Opcode(op)
        flags = int(rec["flags"])
        if flags & ~int(FLAGS[op]):
            raise ResidentError(f"{where}: unknown flags {flags:#x} for {op.name}")
        if op == Opcode.END:
            return
        if op == Opcode.RUN:
            owned = run_claims(flags, image.config) if flags & Flag.SPLIT else None
            continue
        if op == Opcode.WAIT:
            owned = None
            continue
        count, length = int(rec["count"]), int(rec["length"])
        if count == 0 or length == 0:
            continue
        span = dram_span(rec)
        if flags & Flag.WINDOWS and span > WINDOW_BYTES:
            raise ResidentError(
                f"{where}: a WINDOWS LOAD spans {span:,} bytes; the window buffer has "
                f"{WINDOW_BYTES:,}"
            )
        if int(rec["space"]) not in set(BufferSpace):
            raise ResidentError(f"{where}: unknown buffer space {int(rec['space'])}")
        space = BufferSpace(int(rec["space"]))
        if op == Opcode.STORE and space != BufferSpace.ACT_OUT:
            raise ResidentError(f"{where}: STORE from {space.name}; only ACT_OUT reads back")
        buffer_end = int(rec["buffer_offset"]) + (count - 1) * int(rec["buffer_stride"]) + length
        if buffer_end > sizes[space]:
            raise ResidentError(
                f"{where}: {op.name} reaches byte {buffer_end:,} of {space.name} "
                f"({sizes[space]:,} bytes)"
            )
        target = (space, int(rec["buffer_offset"]), length, count, int(rec["buffer_stride"]))
        if space == BufferSpace.HUFFMAN_STREAM and owned is not None:
            dram = image.load_bytes() if dram is None else dram
            at = int(rec["dram_addr"])
            if int(rec["buffer_offset"]) == 0 and at + HUFFMAN_HEADER_BYTES <= len(dram):
                symbols, dest = huffman_stream_header(dram[at : at + HUFFMAN_HEADER_BYTES])
                target = (BufferSpace.WEIGHT, dest, symbols, 1, 0)
        if touches(owned, *target):
            raise ResidentError(
                f"{where}: {op.name} touches {BufferSpace(target[0]).name} bytes that the "
                "SPLIT run under way owns; put a WAIT before it"
            )
        first = int(rec["dram_addr"])
        end = first + span
        slot = next((slots[f] for f in slots if flags & f), None)
        if slot is not None:
            kind, slot_bytes, last_slot = slot
            if end > slot_bytes:
                raise ResidentError(
                    f"{where}: {op.name} addresses [{first:,}, {end:,}) of the {kind} slot "
                    f"({slot_bytes:,} bytes)"
                )
            first, end = first + last_slot, end + last_slot  # the highest slot a run may use
        if end > dram_size:
            raise ResidentError(
                f"{where}: {op.name} addresses DRAM [{first:,}, {end:,}), beyond the "
                f"{dram_size:,}-byte DRAM"
            )
        if slot is not None:
            continue
        for name, flag, kind in (("input", "INPUT", "LOAD"), ("output", "OUTPUT", "STORE")):
            base, size = image.regions[name]
            if first < base + size and base < end:
                raise ResidentError(
                    f"{where}: {op.name} at an absolute address in the {name} region; every "
                    f"run relocates it to its {name} slot (a {flag}-flagged, slot-relative "
                    f"{kind})"
                )
        inside = [
            name
            for name, (base, size) in image.regions.items()
            if base <= first and end <= base + size
        ]
        if not inside:
            raise ResidentError(
                f"{where}: {op.name} addresses DRAM [{first:,}, {end:,}), outside every region"
            )
        if op == Opcode.STORE and inside[0] not in writable:
            raise ResidentError(f"{where}: STORE into the {inside[0]} region")
    raise ResidentError("the command list has no END")
