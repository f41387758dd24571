"""The ECP5 PLL (``EHXPLLL``): board clocks from the oscillator, exact frequencies, phase shifts.

A board's fabric clock is a board setting (``fpga.spec.boards.Board.clock_mhz``, ``fpga.build.flow
--clock-mhz``), not its oscillator: the ULX3S's 25 MHz oscillator feeds an ``EHXPLLL`` whose
outputs are the SoC clock and, for the SDR SDRAM, the same frequency shifted by 180 degrees
(LiteX's ULX3S target does the same). :func:`ecp5_pll_config` finds the dividers; it accepts only
frequencies the PLL makes *exactly* (the UART's bit timer and the predicted images/s are computed
from the configured clock, so an approximation would be a silent error) and otherwise names the
nearest ones it can make.

Limits (Lattice TN1263 / LiteX's ``ECP5PLL``): input 8..400 MHz, phase-frequency detector
10..400 MHz, VCO 400..800 MHz, outputs 3.125..400 MHz, dividers 1..128, four outputs (``CLKOP``,
``CLKOS``, ``CLKOS2``, ``CLKOS3``). The feedback path is one of the outputs (``INT_O*``); when no
requested output has a suitable divider a spare output is used for feedback.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga.spec.errors import UserError

INPUT_MHZ = (8.0, 400.0)
PFD_MHZ = (10.0, 400.0)
VCO_MHZ = (400.0, 800.0)
OUTPUT_MHZ = (3.125, 400.0)
DIVIDERS = range(1, 129)
OUTPUT_NAMES = ("P", "S", "S2", "S3")  # CLKOP, CLKOS, CLKOS2, CLKOS3
#: relative frequency error accepted as "exact" (1 ppm: far below the oscillator's tolerance)
EXACT = 1e-6


class PLLError(UserError, ValueError):
    """No PLL configuration makes the requested clocks (the message lists achievable ones)."""


@dataclass(frozen=True)
class Output:
    mhz: float
    phase_deg: float = 0.0


@dataclass(frozen=True)
class PLLConfig:
    input_mhz: float
    clki_div: int
    clkfb_div: int
    feedback: int  # output index used as the feedback path
    dividers: tuple[int, ...]  # per output index (the feedback spare included, if any)
    phases: tuple[float, ...]  # degrees, per output index

    @property
    def vco_mhz(self) -> float:
        return self.input_mhz / self.clki_div * self.clkfb_div * self.dividers[self.feedback]

    def output_mhz(self, index: int) -> float:
        return self.vco_mhz / self.dividers[index]

    def parameters(self) -> dict:
        """``Instance("EHXPLLL", ...)`` parameters and attributes (without the ports)."""
        params = {
            "a_FREQUENCY_PIN_CLKI": f"{self.input_mhz:g}",
            "a_ICP_CURRENT": "6",
            "a_LPF_RESISTOR": "16",
            "a_MFG_ENABLE_FILTEROPAMP": "1",
            "a_MFG_GMCREF_SEL": "2",
            "p_FEEDBK_PATH": f"INT_O{OUTPUT_NAMES[self.feedback]}",
            "p_CLKI_DIV": self.clki_div,
            "p_CLKFB_DIV": self.clkfb_div,
        }
        for index, (div, phase) in enumerate(zip(self.dividers, self.phases, strict=True)):
            name = OUTPUT_NAMES[index]
            # the phase in VCO eighths: coarse (CPHASE, whole VCO cycles) + fine (FPHASE)
            steps = round(phase * div / 45)
            params[f"p_CLKO{name}_ENABLE"] = "ENABLED"
            params[f"p_CLKO{name}_DIV"] = div
            params[f"p_CLKO{name}_CPHASE"] = (steps >> 3) + div - 1
            params[f"p_CLKO{name}_FPHASE"] = steps & 7
            params[f"a_FREQUENCY_PIN_CLKO{name}"] = f"{self.output_mhz(index):g}"
        return params


def _vcos(input_mhz: float):
    """Every (CLKI_DIV, CLKFB_DIV, feedback output divider, VCO MHz) inside the PFD and VCO
    limits: VCO = input / CLKI_DIV x CLKFB_DIV x the feedback output's divider."""
    for clki_div in DIVIDERS:
        pfd = input_mhz / clki_div
        if pfd < PFD_MHZ[0]:
            break
        if pfd > PFD_MHZ[1]:
            continue
        for clkfb_div in DIVIDERS:
            for fb_div in DIVIDERS:
                vco = pfd * clkfb_div * fb_div
                if vco > VCO_MHZ[1]:
                    break
                if vco >= VCO_MHZ[0]:
                    yield clki_div, clkfb_div, fb_div, vco


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= EXACT * b


def ecp5_pll_config(input_mhz: float, outputs: list[Output]) -> PLLConfig:
    """Dividers that make every output exactly (the lowest VCO that does, for lowest power).

    Raises :class:`PLLError` naming nearby achievable frequencies for the first output when
    there is none."""
    if not INPUT_MHZ[0] <= input_mhz <= INPUT_MHZ[1]:
        raise PLLError(f"PLL input {input_mhz:g} MHz is outside {INPUT_MHZ[0]:g}..{INPUT_MHZ[1]:g}")
    if not 1 <= len(outputs) <= len(OUTPUT_NAMES):
        raise PLLError(f"the ECP5 PLL has 1..{len(OUTPUT_NAMES)} outputs, not {len(outputs)}")
    for out in outputs:
        if not OUTPUT_MHZ[0] <= out.mhz <= OUTPUT_MHZ[1]:
            raise PLLError(
                f"PLL output {out.mhz:g} MHz is outside {OUTPUT_MHZ[0]:g}..{OUTPUT_MHZ[1]:g} MHz"
            )
    best = None
    for clki_div, clkfb_div, fb_div, vco in _vcos(input_mhz):
        dividers = []
        for out in outputs:
            div = round(vco / out.mhz)
            if div not in DIVIDERS or not _close(vco / div, out.mhz):
                break
            dividers.append(div)
        else:
            phases = [out.phase_deg for out in outputs]
            # feedback: an unshifted requested output with this divider, else a spare
            feedback = next(
                (
                    i
                    for i, (d, p) in enumerate(zip(dividers, phases, strict=True))
                    if d == fb_div and p == 0
                ),
                None,
            )
            if feedback is None:
                if len(outputs) == len(OUTPUT_NAMES):
                    continue
                feedback = len(dividers)
                dividers.append(fb_div)
                phases.append(0.0)
            config = PLLConfig(
                input_mhz, clki_div, clkfb_div, feedback, tuple(dividers), tuple(phases)
            )
            if best is None or config.vco_mhz < best.vco_mhz:
                best = config
    if best is None:
        raise PLLError(
            f"the ECP5 PLL cannot make exactly {', '.join(f'{o.mhz:g}' for o in outputs)} MHz "
            f"from {input_mhz:g} MHz; achievable near {outputs[0].mhz:g}: "
            + ", ".join(f"{f:g}" for f in achievable_near(input_mhz, outputs[0].mhz))
            + " MHz"
        )
    return best


def achievable_near(input_mhz: float, mhz: float, count: int = 4) -> list[float]:
    """Output frequencies the PLL makes from ``input_mhz``, nearest to ``mhz`` first."""
    found = {
        round(vco / d, 6)
        for vco in {vco for *_, vco in _vcos(input_mhz)}
        for d in DIVIDERS
        if vco / d >= OUTPUT_MHZ[0]
    }
    return sorted(found, key=lambda f: (abs(f - mhz), f))[:count]


class ECP5PLL(wiring.Component):
    """One ``EHXPLLL``: ``clk_in`` at ``input_mhz`` -> ``clk_out[i]`` at ``outputs[i]``.

    ``locked`` is the PLL's lock output (hold the clocked logic in reset while it is low). Each
    output gets a clock constraint at its exact frequency (``platform.add_clock_constraint``),
    so nextpnr times every domain it clocks.
    """

    def __init__(self, input_mhz: float, outputs: list[Output]):
        self.input_mhz = input_mhz
        self.outputs = list(outputs)
        self.config = ecp5_pll_config(input_mhz, self.outputs)
        super().__init__({"clk_in": In(1), "locked": Out(1), "clk_out": Out(len(self.outputs))})

    @staticmethod
    def output_name(index: int) -> str:
        """The name of ``clk_out[index]``'s net inside this component (``clkop``, ...): the
        netlist, and nextpnr's timing report, call it ``<submodule name>.<this>``."""
        return f"clko{OUTPUT_NAMES[index].lower()}"

    def elaborate(self, platform):
        m = Module()
        used = OUTPUT_NAMES[: len(self.config.dividers)]
        clocks = [Signal(name=self.output_name(index)) for index in range(len(used))]
        m.submodules.pll = Instance(
            "EHXPLLL",
            i_CLKI=self.clk_in,
            i_CLKFB=clocks[self.config.feedback],
            i_RST=0,
            i_STDBY=0,
            i_PHASESEL0=0,
            i_PHASESEL1=0,
            i_PHASEDIR=1,
            i_PHASESTEP=1,
            i_PHASELOADREG=1,
            i_PLLWAKESYNC=0,
            i_ENCLKOP=0,
            i_ENCLKOS=0,
            i_ENCLKOS2=0,
            i_ENCLKOS3=0,
            o_LOCK=self.locked,
            **{f"o_CLKO{name}": clk for name, clk in zip(used, clocks, strict=True)},
            **self.config.parameters(),
        )
        for index in range(len(self.outputs)):
            m.d.comb += self.clk_out[index].eq(clocks[index])
            if platform is not None:
                platform.add_clock_constraint(clocks[index], self.config.output_mhz(index) * 1e6)
        return m
