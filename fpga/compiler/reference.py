"""The reference executor of a resident program: the sequencer's walk of its command list, in
Python."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpga.compiler.resident import ResidentImage
from fpga.spec.commands import (
    COMMAND_BYTES,
    COMMAND_DTYPE,
    Flag,
    Opcode,
    ResidentError,
    relocation,
    run_claims,
    touches,
)
from fpga.spec.layout import BufferSpace


@dataclass
class ResidentStats:
    engine_cycles: int = 0
    commands: int = 0
    loaded_bytes: int = 0
    stored_bytes: int = 0
    dma_requests: int = 0  # DMA transfers: one per LOAD/STORE row, one per WINDOWS LOAD


def run_commands(
    dram: bytearray,
    engine,
    pc: int,
    dram_size: int | None = None,
    after=None,
    input_base: int = 0,
    output_base: int = 0,
) -> ResidentStats:
    """Interpret the command records at DRAM byte ``pc`` until END, as the sequencer does:
    fetch from DRAM, LOAD/STORE through ``engine.write``/``engine.read`` (an
    :class:`fpga.emulator.EngineEmulator` or any object with those and ``run``).

    A command flagged INPUT addresses DRAM at ``input_base + dram_addr + r * dram_stride``,
    one flagged OUTPUT at ``output_base + ...`` (the run's slots: the base is added before
    anything else).

    A SPLIT RUN (double buffering) computes at once here but owns its halves until a WAIT, the
    next RUN or END (:func:`fpga.spec.commands.run_claims`): a LOAD or STORE row touching them
    (a Huffman stream: the WEIGHT bytes it decodes into) is refused, as the engine refuses it.

    Raises :class:`ResidentError` (like the sequencer's error codes) on an unknown opcode, a
    DRAM address (relocated) outside ``[0, dram_size)`` or such a hazard. ``after(index,
    record)`` is called after each command (index counts from the first one executed)."""
    dram_size = len(dram) if dram_size is None else dram_size
    stats = ResidentStats()
    owned = None  # what the SPLIT run under way owns
    config = getattr(engine, "config", None)
    while True:
        if pc < 0 or pc + COMMAND_BYTES > dram_size:
            raise ResidentError(f"command fetch at {pc:,} is outside the {dram_size:,}-byte DRAM")
        rec = np.frombuffer(bytes(dram[pc : pc + COMMAND_BYTES]), COMMAND_DTYPE)[0]
        stats.commands += 1
        op = int(rec["opcode"])
        if op == Opcode.END:
            return stats
        if op == Opcode.RUN:
            flags = int(rec["flags"])
            try:
                stats.engine_cycles += engine.run(flags=flags) if flags else engine.run()
            except ValueError as exc:  # a SPLIT run outside its halves: the engine's error
                raise ResidentError(f"command at {pc:,}: RUN: {exc}") from None
            owned = run_claims(flags, config) if flags & Flag.SPLIT else None
        elif op == Opcode.WAIT:
            owned = None
        elif op in (Opcode.LOAD, Opcode.STORE):
            length = int(rec["length"])
            addr, offset = int(rec["dram_addr"]), int(rec["buffer_offset"])
            flags = int(rec["flags"])
            addr += relocation(flags, input_base, output_base)
            windows = op == Opcode.LOAD and flags & Flag.WINDOWS
            for row in range(int(rec["count"]) if length else 0):
                if addr + length > dram_size:
                    raise ResidentError(
                        f"command at {pc:,}: DRAM [{addr:,}, {addr + length:,}) is outside the "
                        f"{dram_size:,}-byte DRAM"
                    )
                stats.dma_requests += not windows or row == 0
                if touches(owned, int(rec["space"]), offset, length):
                    raise ResidentError(
                        f"command at {pc:,}: {Opcode(op).name} touches "
                        f"{BufferSpace(int(rec['space'])).name} bytes [{offset:,}, "
                        f"{offset + length:,}) that the run under way owns (a WAIT first)"
                    )
                if op == Opcode.LOAD:
                    engine.write(int(rec["space"]), offset, bytes(dram[addr : addr + length]))
                    stats.loaded_bytes += length
                else:
                    dram[addr : addr + length] = engine.read(int(rec["space"]), offset, length)
                    stats.stored_bytes += length
                addr += int(rec["dram_stride"])
                offset += int(rec["buffer_stride"])
            if op == Opcode.LOAD and int(rec["space"]) == BufferSpace.HUFFMAN_STREAM:
                _decode(engine, owned, pc)
        else:
            raise ResidentError(f"command at {pc:,}: unknown opcode {op}")
        if after is not None:
            after(stats.commands - 1, rec)
        pc += COMMAND_BYTES


def _decode(engine, owned, pc: int) -> None:
    """A Huffman stream LOAD has ended: its bytes decode into WEIGHT now (the device decodes
    them as they arrive), refused where the run under way owns them."""
    stream = getattr(engine, "pending_stream", None)
    if stream is None:
        return
    dest, count = stream
    if touches(owned, BufferSpace.WEIGHT, dest, count):
        raise ResidentError(
            f"command at {pc:,}: a Huffman stream decodes into WEIGHT bytes [{dest:,}, "
            f"{dest + count:,}) that the run under way owns (a WAIT first)"
        )
    engine.flush()


def run_resident(
    image: ResidentImage,
    dram: bytearray,
    input_int8: np.ndarray,
    engine,
    after=None,
    slot: int = 0,
):
    """One inference in resident mode: write the input into input slot ``slot``, run the
    program from DRAM with that slot's input and output addresses, read output slot ``slot``.
    ``dram`` must hold :meth:`ResidentImage.load_bytes` at 0 (a model load); ``engine``:
    ``fpga.emulator.EngineEmulator(image.config)`` (passed in: this module is spec and does not
    import the emulator), or anything with its ``write``/``read``/``run``.

    Returns ``(output, stats)``: int32 (classes,) sums for SqueezeNet, and
    :class:`ResidentStats`."""
    image.write_input(dram, input_int8, slot)
    stats = run_commands(
        dram,
        engine,
        image.program_address,
        after=after,
        input_base=image.input_address(slot),
        output_base=image.output_address(slot),
    )
    return image.read_output(dram, slot), stats
