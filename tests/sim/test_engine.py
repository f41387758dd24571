"""The conv engine under Verilator (or SIM=icarus) against fpga.spec.golden, bit for bit.

Random layers (seeded; the seed is printed and ENGINE_SEED reproduces a run) of every type,
plus every distinct layer shape of SqueezeNet v1.0/v1.1 at reduced spatial size. The RTL's cycle
count must equal fpga.spec.layout.predict_cycles exactly.
"""

import json
import os

import numpy as np
import pytest

from fpga.spec.boards import get_board
from fpga.spec.config import DEFAULT_CONFIG, WIDE_CONFIG
from fpga.spec.layout import fabric_pes
from hw.engine.engine import ConvEngine
from sim import cases as case_lib
from sim import runner

pytestmark = pytest.mark.skipif(
    not runner.simulator_available(), reason=f"{runner.simulator()} is not installed"
)


def default_engine():
    return ConvEngine(DEFAULT_CONFIG)


def wide_engine():
    """The 16 x 16 engine as the ULX3S builds it: 148 of its PEs multiply in fabric."""
    return ConvEngine(WIDE_CONFIG, fabric_pes(WIDE_CONFIG, get_board("ulx3s").engine_dsps()))


@pytest.fixture(scope="module")
def engine_build():
    return runner.build(default_engine(), "conv_engine")


def run_cases(engine_build, cases, tmp_path, rerun: str = "make sim", engine=default_engine):
    """Run ``cases`` on the engine; on any failure, rerun just the failing cases with waveform
    tracing (on a traced build of ``engine()``), keep the waveform under build/sim/failures/
    and say how to reproduce."""
    results, _ = case_lib.run_engine(engine_build, cases, tmp_path)
    bad = [
        i
        for i, r in enumerate(results)
        if r["mismatches"] or r["error"] or r["cycles"] != r["predicted"]
    ]
    if len(results) < len(cases):
        bad.append(len(results))  # the case the bench stopped in
    if bad:
        failing = [cases[i] for i in bad]
        waves = capture_waveform(failing, tmp_path, engine)
        summary = [results[i] if i < len(results) else {"label": cases[i]["label"]} for i in bad]
        raise AssertionError(
            f"{len(bad)} engine cases failed: {[c['label'] for c in failing][:5]}\n"
            f"waveform of the failing cases: {waves}\nrerun: {rerun}\n"
            f"details: {json.dumps(summary)[:1500]}"
        )
    return results


def capture_waveform(cases, tmp_path, engine=default_engine) -> str:
    traced = runner.build(engine(), "conv_engine", waves=True)
    case_lib.run_engine(traced, cases, tmp_path, "failing", waves=True)
    build_dir = traced[1]
    dumps = sorted(build_dir.glob("*.fst")) + sorted(build_dir.glob("*.vcd"))
    if not dumps:
        return "none written"
    keep = runner.BUILD_ROOT / "failures"
    keep.mkdir(parents=True, exist_ok=True)
    target = keep / f"{tmp_path.name}{dumps[-1].suffix}"
    target.write_bytes(dumps[-1].read_bytes())
    return str(target)


def test_random_layers_bit_exact(engine_build, tmp_path):
    seed = int(os.environ.get("ENGINE_SEED", np.random.SeedSequence().entropy % 2**32))
    print(f"ENGINE_SEED={seed}")
    rng = np.random.default_rng(seed)
    count = int(os.environ.get("ENGINE_CASES_COUNT", 120))
    cases = [case_lib.random_case(rng, DEFAULT_CONFIG, i) for i in range(count)]
    results = run_cases(
        engine_build, cases, tmp_path, f"ENGINE_SEED={seed} make sim  (SIM=icarus for Icarus)"
    )
    assert len(results) == count
    kinds = {r["label"].split(":")[1].split()[0] for r in results}
    assert kinds == {"conv", "maxpool", "add", "avgpool"}
    for r in results:
        assert r["mismatches"] == 0, r
        assert r["cycles"] == r["predicted"], r


@pytest.mark.parametrize(
    "full", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["reduced", "full-width"]
)
def test_every_squeezenet_layer_shape_bit_exact(engine_build, tmp_path, full):
    """Every distinct layer shape of v1.0@227 and v1.1@224: reduced 7x7 planes in CI; under
    ``slow`` the real width with as many rows as one engine run holds (whole layers run tiled
    this way in tests/e2e)."""
    rng = np.random.default_rng(7)
    cases = []
    for variant, size in (("v1.0", 227), ("v1.1", 224)):
        for shape in case_lib.squeezenet_shapes(variant, size):
            case = case_lib.shape_case(rng, DEFAULT_CONFIG, shape, full)
            case["label"] = f"{variant} {case['label']}"
            cases.append(case)
    kinds = {c["label"].split()[1] for c in cases}
    assert kinds == {"conv", "maxpool", "avgpool"} and len(cases) >= 40
    results = run_cases(
        engine_build, cases, tmp_path, "pytest tests/sim/test_engine.py -k layer_shape"
    )
    assert len(results) == len(cases)
    for r in results:
        assert r["mismatches"] == 0, r
        assert r["cycles"] == r["predicted"], r


def test_wide_array_with_fabric_pes_bit_exact(tmp_path):
    """The 16 x 16 engine with the PEs beyond the ECP5-85F's multipliers in fabric
    (``hw.engine.array.fabric_product``, simulated here as it is built): random layers of every type
    and every SqueezeNet layer shape (reduced), bit- and cycle-exact."""
    engine = wide_engine()
    assert 0 < engine.fabric_pes < WIDE_CONFIG.pes
    seed = int(os.environ.get("ENGINE_SEED", np.random.SeedSequence().entropy % 2**32))
    print(f"ENGINE_SEED={seed}")
    rng = np.random.default_rng(seed)
    cases = [case_lib.random_case(rng, WIDE_CONFIG, i) for i in range(40)]
    for variant, size in (("v1.0", 227), ("v1.1", 224)):
        for shape in case_lib.squeezenet_shapes(variant, size):
            cases.append(case_lib.shape_case(rng, WIDE_CONFIG, shape, False))
    results = run_cases(
        runner.build(engine, "conv_engine"),
        cases,
        tmp_path,
        f"ENGINE_SEED={seed} pytest tests/sim/test_engine.py -k wide",
        engine=wide_engine,
    )
    assert len(results) == len(cases)
    assert {r["label"].split(":")[1].split()[0] for r in results[:40]} == {
        "conv",
        "maxpool",
        "add",
        "avgpool",
    }
    for r in results:
        assert r["mismatches"] == 0, r
        assert r["cycles"] == r["predicted"], r


def test_a_failing_case_keeps_its_waveform_and_says_how_to_rerun(engine_build, tmp_path):
    """The checker's failure path: one wrong expected byte -> AssertionError naming the case, a
    VCD of the failing case kept under build/sim/failures/, and the rerun command."""
    rng = np.random.default_rng(1)
    cases = [case_lib.random_case(rng, DEFAULT_CONFIG, i) for i in range(3)]
    expected = bytearray.fromhex(cases[1]["expected"])
    mask = bytes.fromhex(cases[1]["mask"])
    expected[next(i for i, m in enumerate(mask) if m)] ^= 1
    cases[1]["expected"] = expected.hex()
    with pytest.raises(AssertionError) as failure:
        run_cases(engine_build, cases, tmp_path, "ENGINE_SEED=1 make sim")
    message = str(failure.value)
    assert cases[1]["label"] in message and "rerun: ENGINE_SEED=1 make sim" in message
    wave = message.split("waveform of the failing cases: ")[1].split("\n")[0]
    from pathlib import Path

    assert Path(wave).stat().st_size > 10_000 and "failures" in wave
