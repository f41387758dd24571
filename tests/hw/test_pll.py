"""hw.board.pll: the ECP5 PLL's dividers make exactly the requested clocks, inside the part's
limits."""

import pytest

from hw.board.pll import (
    ECP5PLL,
    OUTPUT_NAMES,
    PFD_MHZ,
    VCO_MHZ,
    Output,
    PLLError,
    achievable_near,
    ecp5_pll_config,
)


@pytest.mark.parametrize("mhz", [25.0, 40.0, 45.0, 50.0, 62.5, 75.0, 100.0, 125.0])
def test_dividers_make_the_exact_clock_and_its_shifted_copy(mhz):
    config = ecp5_pll_config(25.0, [Output(mhz), Output(mhz, 180.0)])
    assert PFD_MHZ[0] <= 25.0 / config.clki_div <= PFD_MHZ[1]
    assert VCO_MHZ[0] <= config.vco_mhz <= VCO_MHZ[1]
    assert config.output_mhz(0) == pytest.approx(mhz, rel=1e-9)
    assert config.output_mhz(1) == pytest.approx(mhz, rel=1e-9)
    params = config.parameters()
    assert params["p_FEEDBK_PATH"] == f"INT_O{OUTPUT_NAMES[config.feedback]}"
    # the phase in VCO cycles: CPHASE - (DIV - 1) whole cycles + FPHASE eighths
    for index, phase in enumerate((0.0, 180.0)):
        name = OUTPUT_NAMES[index]
        div = params[f"p_CLKO{name}_DIV"]
        cycles = params[f"p_CLKO{name}_CPHASE"] - (div - 1) + params[f"p_CLKO{name}_FPHASE"] / 8
        assert cycles / div * 360 == pytest.approx(phase, abs=45 / div)
    # the feedback output is unshifted, so the PLL locks to the reference's phase
    assert config.phases[config.feedback] == 0


def test_a_clock_the_pll_cannot_make_is_refused_with_nearby_ones():
    with pytest.raises(PLLError, match=r"cannot make exactly 48, 48 MHz from 25 MHz; achievable"):
        ecp5_pll_config(25.0, [Output(48.0), Output(48.0, 180.0)])
    near = achievable_near(25.0, 48.0)
    assert near and all(abs(f - 48.0) < 0.5 for f in near)
    for f in near:  # each suggestion really is achievable
        assert ecp5_pll_config(25.0, [Output(f)]).output_mhz(0) == pytest.approx(f, rel=1e-6)
    with pytest.raises(PLLError, match="outside"):
        ecp5_pll_config(25.0, [Output(500.0)])
    with pytest.raises(PLLError, match="outside"):
        ecp5_pll_config(5.0, [Output(50.0)])


def test_four_outputs_without_a_feedback_divider_use_one_of_them():
    outputs = [Output(50.0), Output(50.0, 90.0), Output(100.0), Output(25.0)]
    config = ecp5_pll_config(25.0, outputs)
    assert len(config.dividers) == 4  # no spare output was added
    assert config.phases[config.feedback] == 0


def test_the_component_instantiates_ehxplll_with_the_dividers():
    from amaranth.back import rtlil

    pll = ECP5PLL(25.0, [Output(40.0), Output(40.0, 180.0)])
    text = rtlil.convert(pll)
    assert "cell \\EHXPLLL" in text
    for key in pll.config.parameters():
        if key.startswith("p_"):
            assert f"parameter \\{key[2:]} " in text
    assert f"parameter \\CLKOP_DIV {pll.config.dividers[0]}" in text
