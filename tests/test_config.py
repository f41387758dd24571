"""AcceleratorConfig: derived sizes and the constraint messages."""

import pytest

from fpga.spec.config import (
    DEFAULT_CONFIG,
    LARGE_CONFIG,
    SMALL_CONFIG,
    AcceleratorConfig,
    ConfigError,
)


def test_default_config_fits_arty_a7_35t_dsps():
    assert DEFAULT_CONFIG.pes <= 90 * 0.8  # 90 DSP48E1 on the xc7a35t, keep margin
    assert DEFAULT_CONFIG.act_in_addr_bits == 15


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"rows": 0}, "rows and cols"),
        ({"act_bits": 16}, "int8"),
        ({"index_bits_max": 5}, "index_bits_max"),
        ({"act_in_bytes": 3000}, "power of two"),
        ({"weight_bytes": 64}, "3x3 block"),
        ({"max_out_channels": 512}, "conv10"),
    ],
)
def test_bad_configs_name_the_constraint(changes, message):
    with pytest.raises(ConfigError, match=message):
        DEFAULT_CONFIG.replace(**changes)


def test_fingerprint_changes_with_any_field():
    prints = {c.fingerprint() for c in (DEFAULT_CONFIG, SMALL_CONFIG, LARGE_CONFIG)}
    assert len(prints) == 3
    assert AcceleratorConfig().fingerprint() == DEFAULT_CONFIG.fingerprint()
