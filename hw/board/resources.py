"""Board resources the amaranth-boards platforms lack or describe differently, and how the
generated LiteDRAM core's pad ports map onto them.

**Arty A7 DDR3L** (one MT41K128M16, 16 bits, bank 34 at 1.35 V). :data:`ARTY_DDR3` is LiteX's own
``ddram`` resource (``litex_boards/platforms/digilent_arty.py``, litex-boards 2023.12) written
for Amaranth: the same pins, SSTL135 / DIFF_SSTL135, ``SLEW=FAST`` on every pin and
``IN_TERM=UNTUNED_SPLIT_40`` on DQ *and* DQS, with LiteX's subsignal names, so subsignal ``x`` is
the core's port ``ddram_x``. It is named ``"ddram"`` because amaranth-boards 0.0.21's Arty
platforms already define a ``"ddr3"`` resource (same pins, Amaranth names, but no input
termination on DQS) and ``add_resources`` refuses a second ``("ddr3", 0)``. Use::

    platform.add_resources(ARTY_DDR3)
    pads = ddr3_pads(platform.request("ddram", 0, dir="-"), core.ports)
    # -> {"ddram_a": IOValue, ...}: pass to hw.soc.dram.LiteDRAMNative(pads=...)

:func:`ddr3_pads` also accepts amaranth-boards' built-in ``"ddr3"`` record
(:data:`BUILTIN_DDR3_PADS`). The pads are requested raw (``dir="-"``): the core instantiates the
I/O buffers itself (``OBUFDS`` for the clock, ``IOBUFDS`` for DQS, ``IOBUF`` for DQ) and drives the
active-low pins (``ras_n``, ``reset_n``, ...) with their pin levels, so no inversion is wanted.
The DDR3 bank also needs ``INTERNAL_VREF 0.675`` (``constraints/arty_a7.xdc``).
"""

from __future__ import annotations

from amaranth.build import Attrs, Pins, Resource, Subsignal

#: the generated core's DDR3 pad ports start with this (``ddram_a``, ``ddram_dq``, ...)
CORE_PAD_PREFIX = "ddram_"
#: resource name of :data:`ARTY_DDR3`
ARTY_DDR3_NAME = "ddram"


def _sstl(pins: str, dir: str, diff: bool = False, term: bool = False) -> tuple:
    attrs = {"IOSTANDARD": "DIFF_SSTL135" if diff else "SSTL135"}
    if term:
        attrs["IN_TERM"] = "UNTUNED_SPLIT_40"
    return Pins(pins, dir=dir), Attrs(**attrs)


#: the Arty A7's DDR3L pins (LiteX's ``ddram`` resource, litex-boards 2023.12)
ARTY_DDR3 = [
    Resource(
        ARTY_DDR3_NAME,
        0,
        Subsignal("a", *_sstl("R2 M6 N4 T1 N6 R7 V6 U7 R8 V7 R6 U6 T6 T8", "o")),
        Subsignal("ba", *_sstl("R1 P4 P2", "o")),
        Subsignal("ras_n", *_sstl("P3", "o")),
        Subsignal("cas_n", *_sstl("M4", "o")),
        Subsignal("we_n", *_sstl("P5", "o")),
        Subsignal("cs_n", *_sstl("U8", "o")),
        Subsignal("dm", *_sstl("L1 U1", "o")),
        Subsignal("dq", *_sstl("K5 L3 K3 L6 M3 M1 L4 M2 V4 T5 U4 V5 V1 T3 U3 R3", "io", term=True)),
        Subsignal("dqs_p", *_sstl("N2 U2", "io", diff=True, term=True)),
        Subsignal("dqs_n", *_sstl("N1 V2", "io", diff=True, term=True)),
        Subsignal("clk_p", *_sstl("U9", "o", diff=True)),
        Subsignal("clk_n", *_sstl("V9", "o", diff=True)),
        Subsignal("cke", *_sstl("N5", "o")),
        Subsignal("odt", *_sstl("R5", "o")),
        Subsignal("reset_n", *_sstl("K6", "o")),
        Attrs(SLEW="FAST"),
    )
]

#: core port -> subsignal of :data:`ARTY_DDR3` (the LiteX names: ``ddram_x`` -> ``x``)
ARTY_DDR3_PADS = {
    CORE_PAD_PREFIX + sub.name: sub.name for sub in ARTY_DDR3[0].ios if isinstance(sub, Subsignal)
}

#: core port -> (subsignal, ``None`` | ``"p"`` | ``"n"``) of amaranth-boards' own Arty ``"ddr3"``
#: resource (differential pairs are one subsignal there; active-low pins are ``PinsN``)
BUILTIN_DDR3_PADS = {
    "ddram_a": ("a", None),
    "ddram_ba": ("ba", None),
    "ddram_ras_n": ("ras", None),
    "ddram_cas_n": ("cas", None),
    "ddram_we_n": ("we", None),
    "ddram_cs_n": ("cs", None),
    "ddram_dm": ("dm", None),
    "ddram_dq": ("dq", None),
    "ddram_dqs_p": ("dqs", "p"),
    "ddram_dqs_n": ("dqs", "n"),
    "ddram_clk_p": ("clk", "p"),
    "ddram_clk_n": ("clk", "n"),
    "ddram_cke": ("clk_en", None),
    "ddram_odt": ("odt", None),
    "ddram_reset_n": ("rst", None),
}


class PadMappingError(ValueError):
    """The DRAM pads and the generated core's pad ports do not match one to one."""


def _io(port, half: str | None):
    """The raw I/O value of a ``dir="-"`` port (``SingleEndedPort.io`` / ``DifferentialPort.p``),
    or the value itself (tests hand in plain objects with a length)."""
    if half is not None:
        return getattr(port, half)
    return getattr(port, "io", port)


def ddr3_pads(pads, core_ports: dict) -> dict:
    """``{core port name: I/O value}`` for every ``ddram_*`` port of the generated core.

    ``pads``: ``platform.request("ddram", 0, dir="-")`` (:data:`ARTY_DDR3`) or amaranth-boards'
    ``platform.request("ddr3", 0, dir="-")``; ``core_ports``: ``GeneratedCore.ports``
    (``{name: (direction, width)}``). Raises :class:`PadMappingError` if a core pad port has no
    pin, a pin no core port, or a width differs.
    """
    wanted = {name: spec for name, spec in core_ports.items() if name.startswith(CORE_PAD_PREFIX)}
    builtin = not hasattr(pads, "ras_n")
    table = (
        BUILTIN_DDR3_PADS
        if builtin
        else {port: (sub, None) for port, sub in ARTY_DDR3_PADS.items()}
    )
    unmatched = sorted(set(wanted) - set(table))
    if unmatched:
        raise PadMappingError(f"core ports without a DDR3 pin: {', '.join(unmatched)}")
    present = {port for port, (sub, _) in table.items() if hasattr(pads, sub)}
    missing = sorted(set(wanted) - present)
    if missing:
        raise PadMappingError(f"the DDR3 pads lack the core's ports {', '.join(missing)}")
    leftover = sorted(present - set(wanted))
    if leftover:
        raise PadMappingError(f"DDR3 pins the core does not drive: {', '.join(leftover)}")
    result = {}
    for port, (direction, width) in wanted.items():
        sub, half = table[port]
        value = _io(getattr(pads, sub), half)
        if len(value) != width:
            raise PadMappingError(
                f"{port}: the core has {width} bits ({direction}), the pin group {sub!r} has "
                f"{len(value)}"
            )
        result[port] = value
    return result
