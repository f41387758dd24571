"""Double buffering (issue 32) on the conv engine under Verilator, against the EngineEmulator.

A SPLIT run (``fpga.spec.commands``) owns one half of ACT_IN, ACT_OUT, WEIGHT and PARAMS; its
own accesses are moved there by ``run_address`` (the top address bit flipped), and while it runs
the other halves, DESCRIPTOR and CODEBOOK stay usable (``run_claims``). One bench run executes a
plan of steps (writes, starts with flags, reads, waits) built here together with its
expectations from :class:`fpga.compiler.emulator.EngineEmulator` (the spec's model: every byte
read back must equal the emulator's, every run's cycles ``predict_cycles``, every ``error`` what
``run_claims`` / ``tile_bytes`` say). Seeded: ``HALVES_SEED`` reproduces a plan.

The cocotb part (:func:`halves_bench`) runs inside the simulator; the pytest part builds the plan,
runs it once per module and checks each scenario's steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import numpy as np
import pytest
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from fpga.compiler.emulator import EngineEmulator
from fpga.spec.commands import HALF_SPACES, Flag, half_bytes, run_address, run_claims
from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.layout import BufferSpace, LayerDescriptor, predict_cycles, tile_bytes
from sim import cases as case_lib
from sim import runner
from sim.engine_bench import ENGINE_PERIOD_NS, HOST_PERIOD_NS, EngineDriver, EngineMonitor

CONFIG = DEFAULT_CONFIG
ALL_HIGH = Flag.HIGH_ACT_IN | Flag.HIGH_ACT_OUT | Flag.HIGH_WEIGHT | Flag.HIGH_PARAMS


# -- the bench (inside the simulator) ----------------------------------------------------------
@cocotb.test()
async def halves_bench(dut):
    """Execute the plan in ``HALVES_PLAN``; write what each recording step saw to
    ``HALVES_RESULTS``. A background monitor catches every ``done`` (a run may end while the
    plan is still writing or reading)."""
    plan = json.loads(Path(os.environ["HALVES_PLAN"]).read_text())
    cocotb.start_soon(Clock(dut.clk, HOST_PERIOD_NS, unit="ns").start())
    cocotb.start_soon(Clock(dut.engine_clk, ENGINE_PERIOD_NS, unit="ns").start())
    driver, monitor = EngineDriver(dut), EngineMonitor(dut)
    dut.run_flags.value = 0
    await driver.reset()
    await FallingEdge(dut.clk)
    dones = []

    async def watch_done():
        while True:
            await FallingEdge(dut.clk)
            if dut.done.value == 1:
                await FallingEdge(dut.clk)  # cycles and error settle the cycle after done
                dones.append((dut.cycles.value.to_unsigned(), int(dut.error.value)))

    cocotb.start_soon(watch_done())
    waited = 0
    results = []
    for step in plan:
        kind = step["step"]
        if kind == "write":
            await driver.write(step["space"], step["offset"], bytes.fromhex(step["data"]))
        elif kind == "start":
            dut.run_flags.value = step["flags"]
            dut.start.value = 1
            await FallingEdge(dut.clk)
            dut.start.value = 0
            dut.run_flags.value = 0
        elif kind == "wait":
            for _ in range(step["limit"]):
                if len(dones) > waited:
                    break
                await FallingEdge(dut.clk)
            else:
                raise TimeoutError(f"no done after {step['limit']} cycles: {step['label']}")
            cycles, error = dones[waited]
            waited += 1
            results.append({"cycles": cycles, "error": error})
        elif kind == "read":
            data = await monitor.read(step["space"], step["offset"], step["length"])
            results.append({"data": data.hex()})
        elif kind == "status":
            results.append({"busy": int(dut.busy.value), "error": int(dut.error.value)})
        elif kind == "clear":
            dut.clear_error.value = 1
            await FallingEdge(dut.clk)
            dut.clear_error.value = 0
        else:
            raise ValueError(kind)
    Path(os.environ["HALVES_RESULTS"]).write_text(json.dumps(results))


# -- the plan and its expectations (host side) -------------------------------------------------
class Plan:
    """Steps for the bench, each recording step with what it must see, and the emulator that
    says it: the emulator sees every write the engine must take, in the same order."""

    def __init__(self):
        self.steps: list[dict] = []
        self.emulator = EngineEmulator(CONFIG)
        self.flags = 0  # the run under way (None: none)
        self.running = False

    def write(self, space, offset: int, data: bytes, refused: bool = False) -> None:
        self.steps.append(
            {"step": "write", "space": int(space), "offset": offset, "data": bytes(data).hex()}
        )
        if not refused:
            self.emulator.write(space, offset, data)

    def start(self, flags: int, label: str) -> int:
        """Start a run (the emulator runs it now: the run reads only what it owns, so later
        writes to the other halves cannot change it). Returns the predicted cycles."""
        descriptor = LayerDescriptor.unpack(self.emulator.buffers[BufferSpace.DESCRIPTOR])
        self.steps.append({"step": "start", "flags": int(flags), "label": label})
        self.emulator.run(predict_cycles(descriptor, CONFIG), flags)
        self.flags, self.running = flags, True
        return predict_cycles(descriptor, CONFIG)

    def start_refused_by_model(self, flags: int, label: str) -> None:
        """Start a SPLIT run whose tile leaves its halves: the emulator raises ValueError (and
        changes nothing); the engine must end the run with ``error``."""
        with pytest.raises(ValueError, match="beyond its half"):
            self.emulator.run(0, flags)
        self.steps.append({"step": "start", "flags": int(flags), "label": label})
        self.flags, self.running = flags, True

    def wait(self, scenario: str, label: str, cycles: int | None, error: int) -> None:
        limit = 4 * (cycles or 20_000) + 400
        expect = {"error": error} if cycles is None else {"cycles": cycles, "error": error}
        self._record({"step": "wait", "limit": limit}, scenario, label, expect)
        self.running = False

    def read(
        self, scenario: str, label: str, space, offset: int, length: int, mask: str = ""
    ) -> None:
        """Read back; the engine's bytes must equal the emulator's (``mask``: hex, only where
        it is nonzero)."""
        expect = {"data": self.emulator.read(space, offset, length).hex(), "mask": mask}
        step = {"step": "read", "space": int(space), "offset": offset, "length": length}
        self._record(step, scenario, label, expect)

    def status(self, scenario: str, label: str, busy: int, error: int) -> None:
        self._record({"step": "status"}, scenario, label, {"busy": busy, "error": error})

    def clear(self) -> None:
        self.steps.append({"step": "clear"})

    def _record(self, step: dict, scenario: str, label: str, expect: dict) -> None:
        step.update(scenario=scenario, label=label, expect=expect)
        self.steps.append(step)


def owned(flags: int, space, offset: int, length: int) -> bool:
    """Whether any of the bytes touches a byte a run with ``flags`` owns (the spec's rule)."""
    claim = run_claims(flags, CONFIG).get(BufferSpace(space), range(0))
    return any(byte in claim for byte in range(offset, offset + length))


def placed(case: dict, flags: int) -> list[tuple[int, int, bytes]]:
    """A case's writes at the addresses the run with ``flags`` reads them from (``run_address``
    of each byte: a write that crosses the half is cut there, each piece moved on its own)."""
    writes = []
    for space, offset, blob in case["writes"]:
        data = bytes.fromhex(blob)
        space = BufferSpace(space)
        if not (flags & Flag.SPLIT and space in HALF_SPACES and flags & HALF_SPACES[space]):
            writes.append((space, offset, data))
            continue
        half = half_bytes(space, CONFIG)
        cut = max(0, min(len(data), half - offset))
        for at, piece in ((offset, data[:cut]), (offset + cut, data[cut:])):
            if piece:
                writes.append((space, run_address(space, at, flags, CONFIG), piece))
    return writes


def out_offset(case: dict, flags: int) -> int:
    high = flags & Flag.SPLIT and flags & Flag.HIGH_ACT_OUT
    return case["read"][0] + (half_bytes(BufferSpace.ACT_OUT, CONFIG) if high else 0)


def load(plan: Plan, case: dict, flags: int) -> None:
    for space, offset, data in placed(case, flags):
        plan.write(space, offset, data)


def check_golden(plan: Plan, case: dict, flags: int) -> None:
    """The emulator's result of a case equals the golden expectation of ``sim.cases`` (so the
    bench's model is the spec)."""
    offset, length = out_offset(case, flags), case["read"][1]
    actual = plan.emulator.read(BufferSpace.ACT_OUT, offset, length)
    expected, mask = bytes.fromhex(case["expected"]), bytes.fromhex(case["mask"])
    assert all(a == e for a, e, m in zip(actual, expected, mask, strict=True) if m), case["label"]


def split_case(rng, index: int, kind: str) -> dict:
    """A random case of ``kind`` (``sim.cases.random_case``) whose tile fits in a half."""
    while True:
        case = case_lib.random_case(rng, CONFIG, index)
        if case["label"].split(":")[1].split()[0] != kind:
            continue
        descriptor = LayerDescriptor.unpack(bytes.fromhex(case["writes"][0][2]))
        need = tile_bytes(descriptor, CONFIG)
        if all(need[space.name.lower()] <= half_bytes(space, CONFIG) for space in HALF_SPACES):
            return case


def long_conv(rng, label: str) -> dict:
    """A CONV tile of ~6.6 k engine cycles (~4.6 k host cycles): long enough for the next
    tile's loads and the last tile's reads to happen while it runs."""
    return case_lib.conv_case(rng, CONFIG, 24, 24, 9, 9, 3, 1, (1, 1, 1, 1), label=label)


def run_case(plan: Plan, scenario: str, case: dict, flags: int, masked: bool = False) -> None:
    """Load ``case`` into the halves of ``flags``, run it, read its result (``masked``: only
    the bytes the run writes are compared)."""
    load(plan, case, flags)
    cycles = plan.start(flags, case["label"])
    check_golden(plan, case, flags)
    plan.wait(scenario, case["label"], cycles, 0)
    offset, length = out_offset(case, flags), case["read"][1]
    mask = case["mask"] if masked else ""
    plan.read(scenario, case["label"], BufferSpace.ACT_OUT, offset, length, mask)


def random_halves(plan: Plan, rng) -> None:
    """(a) random shapes of every op as SPLIT runs in random halves."""
    kinds = ["conv"] * 6 + ["maxpool", "add", "avgpool"] * 2
    for i, kind in enumerate(kinds):
        flags = Flag.SPLIT | (int(rng.integers(0, 16)) << 4)
        case = split_case(rng, i, kind)
        case["label"] = f"{case['label']} flags {flags:#x}"
        run_case(plan, "random", case, flags)


def overlap(plan: Plan, rng) -> None:
    """(b) while a SPLIT run computes, the next tile's operands (and descriptor and codebook)
    go into the other halves and the previous tile's results are read from the other ACT_OUT
    half; then the next tile runs there. Both ways round."""
    for first in (Flag(0), ALL_HIGH):
        other = ALL_HIGH & ~first
        previous = case_lib.conv_case(rng, CONFIG, 16, 16, 5, 5, 3, 1, (1, 1, 1, 1), label="prev")
        running = long_conv(rng, "running")
        following = case_lib.conv_case(rng, CONFIG, 16, 16, 6, 6, 3, 1, (1, 1, 1, 1), label="next")
        tag = f"overlap high {int(first):#x}"
        run_case(plan, "overlap", previous, Flag.SPLIT | other)
        load(plan, running, Flag.SPLIT | first)
        cycles = plan.start(Flag.SPLIT | first, f"{tag} running")
        # the next descriptor at once, the bytes that differ first: the cycle after the start,
        # before the start token has crossed to the engine (which copies what was latched)
        now, then = (bytes.fromhex(case["writes"][0][2]) for case in (following, running))
        for i in (i for i in range(len(now)) if now[i] != then[i]):
            plan.write(BufferSpace.DESCRIPTOR, i, now[i : i + 1])
        load(plan, following, Flag.SPLIT | other)  # descriptor, codebook, other halves
        plan.read(
            "overlap",
            f"{tag} previous results during the run",
            BufferSpace.ACT_OUT,
            out_offset(previous, Flag.SPLIT | other),
            previous["read"][1],
        )
        plan.status("overlap", f"{tag} still running, no error", 1, 0)
        plan.wait("overlap", f"{tag} running", cycles, 0)
        check_golden(plan, running, Flag.SPLIT | first)
        plan.read(
            "overlap",
            f"{tag} running's results",
            BufferSpace.ACT_OUT,
            out_offset(running, Flag.SPLIT | first),
            running["read"][1],
        )
        cycles = plan.start(Flag.SPLIT | other, f"{tag} next")
        check_golden(plan, following, Flag.SPLIT | other)
        plan.wait("overlap", f"{tag} next", cycles, 0)
        plan.read(
            "overlap",
            f"{tag} next's results",
            BufferSpace.ACT_OUT,
            out_offset(following, Flag.SPLIT | other),
            following["read"][1],
        )


def claims(plan: Plan, rng) -> None:
    """(c) an intrusion while a run is under way, one per run: a write (or an ACT_OUT read)
    into a byte the run owns is an error and a write is dropped; outside the claims it is
    taken. SPLIT runs in both halves and runs without SPLIT (which own every space)."""
    half = {space: half_bytes(space, CONFIG) for space in HALF_SPACES}
    noise = bytes(rng.integers(0, 256, 8, dtype=np.uint8))
    for flags in (Flag.SPLIT, Flag.SPLIT | ALL_HIGH, Flag(0)):
        # ~900 engine cycles: the intrusion and the status come long before its end
        tile = case_lib.conv_case(
            rng, CONFIG, 16, 16, 5, 5, 3, 1, (1, 1, 1, 1), label=f"claims {int(flags):#x}"
        )
        load(plan, tile, flags)
        own = {  # where the run's half begins (without SPLIT: every byte is the run's)
            space: half[space] if flags & Flag.SPLIT and flags & bit else 0
            for space, bit in HALF_SPACES.items()
        }
        other = {space: half[space] - own[space] if flags & Flag.SPLIT else 0 for space in own}
        # (space, offset, read?): on the run's operands and at the same place in the other
        # half (the engine has no host write port into ACT_OUT: a write there is only checked)
        intrusions = [
            (BufferSpace.ACT_IN, own[BufferSpace.ACT_IN] + 8, False),
            (BufferSpace.ACT_IN, other[BufferSpace.ACT_IN] + 8, False),
            (BufferSpace.WEIGHT, own[BufferSpace.WEIGHT] + 64, False),
            (BufferSpace.WEIGHT, other[BufferSpace.WEIGHT] + 64, False),
            (BufferSpace.PARAMS, own[BufferSpace.PARAMS], False),
            (BufferSpace.PARAMS, other[BufferSpace.PARAMS] + 8, False),
            (BufferSpace.ACT_OUT, own[BufferSpace.ACT_OUT], True),
            (BufferSpace.ACT_OUT, other[BufferSpace.ACT_OUT], True),
            (BufferSpace.ACT_OUT, own[BufferSpace.ACT_OUT] + 16, False),
            (BufferSpace.DESCRIPTOR, 0, False),
            (BufferSpace.CODEBOOK, 0, False),
        ]
        for space, offset, is_read in intrusions:
            what = f"flags {int(flags):#x}: {'read' if is_read else 'write'} {space.name}@{offset}"
            length = 1 if space in (BufferSpace.DESCRIPTOR, BufferSpace.CODEBOOK) else 8
            refused = owned(flags, space, offset, length)
            cycles = plan.start(flags, what)
            if is_read:
                if refused:  # the data of a refused read is anything: not checked
                    plan.steps.append(
                        {"step": "read", "space": int(space), "offset": offset, "length": length}
                    )
                    plan.steps[-1].update(scenario="claims", label=what, expect={})
                else:
                    plan.read("claims", what, space, offset, length)
            else:
                # a DESCRIPTOR or CODEBOOK intrusion writes what is there already: taken or
                # not, the next run of the tile is the same
                data = (
                    plan.emulator.buffers[space][offset : offset + length]
                    if space in (BufferSpace.DESCRIPTOR, BufferSpace.CODEBOOK)
                    else noise[:length]
                )
                plan.write(space, offset, bytes(data), refused=refused)
            plan.status("claims", f"{what} (status)", 1, int(refused))
            plan.wait("claims", what, cycles, int(refused))
            plan.read("claims", f"{what}: result", BufferSpace.ACT_OUT, out_offset(tile, flags), 64)
            plan.clear()
        # the refused writes were dropped: the tile runs again to the same (model's) result
        cycles = plan.start(flags, f"flags {int(flags):#x}: again")
        plan.wait("claims", f"flags {int(flags):#x}: again", cycles, 0)
        plan.read(
            "claims",
            f"flags {int(flags):#x}: again, result",
            BufferSpace.ACT_OUT,
            out_offset(tile, flags),
            tile["read"][1],
        )


def overflow(plan: Plan, rng) -> None:
    """(d) SPLIT runs whose tile leaves a half end with ``error`` exactly when the emulator
    raises (``fpga.spec.layout.tile_bytes``), one space at a time, each beside its largest tile
    that fits; the other half of ACT_OUT keeps what it held (the engine drops the writes that
    would leave)."""
    lanes = CONFIG.rows
    act_half_words = half_bytes(BufferSpace.ACT_IN, CONFIG) // lanes
    out_half_words = half_bytes(BufferSpace.ACT_OUT, CONFIG) // lanes
    out_groups = (out_half_words - 8) // 15  # 16 pixels: the last one's group 7 is the last word
    assert 15 * out_groups + 8 == out_half_words
    tiles = {
        # ACT_IN: a 4x4x8 input ending at the half's last word, then one word beyond
        "act_in": [
            case_lib.conv_case(
                rng, CONFIG, 8, 8, 4, 4, 1, 1, (0,) * 4, label="act_in", in_base=base
            )
            for base in (act_half_words - 16, act_half_words - 15)
        ],
        # ACT_OUT: 16 pixels 136 groups apart, ending at the half's last word, then beyond
        "act_out": [
            case_lib.conv_case(
                rng,
                CONFIG,
                8,
                8,
                4,
                4,
                1,
                1,
                (0,) * 4,
                label="act_out",
                out_group_offset=offset,
                extra_out_groups=out_groups - offset - 1,
            )
            for offset in (7, 8)
        ],
        # WEIGHT: 64 -> 256 channels 1x1 is 16 KiB (the half); 264 channels is beyond
        "weight": [
            case_lib.conv_case(rng, CONFIG, 64, c_out, 2, 2, 1, 1, (0,) * 4, label="weight")
            for c_out in (256, 264)
        ],
        # PARAMS: 512 channels are the half (4 KiB); 520 are beyond
        "params": [
            case_lib.conv_case(rng, CONFIG, 8, c_out, 2, 2, 1, 1, (0,) * 4, label="params")
            for c_out in (512, 520)
        ],
    }
    # the other ACT_OUT half holds a result first (its upper half: the runs below are low)
    keep = case_lib.conv_case(rng, CONFIG, 16, 16, 5, 5, 3, 1, (1, 1, 1, 1), label="keep")
    run_case(plan, "overflow", keep, Flag.SPLIT | Flag.HIGH_ACT_OUT)
    for name, (fits, leaves) in tiles.items():
        for flags in (Flag.SPLIT, Flag.SPLIT | (ALL_HIGH & ~Flag.HIGH_ACT_OUT)):
            fits["label"] = f"overflow {name} fits flags {int(flags):#x}"
            run_case(plan, "overflow", fits, flags, masked=True)
            label = f"overflow {name} leaves flags {int(flags):#x}"
            load(plan, leaves, flags)
            plan.start_refused_by_model(flags, label)
            plan.wait("overflow", label, None, 1)
            plan.clear()
            plan.read(
                "overflow",
                f"{label}: the other ACT_OUT half kept",
                BufferSpace.ACT_OUT,
                out_offset(keep, Flag.SPLIT | Flag.HIGH_ACT_OUT),
                keep["read"][1],
            )
            # the emulator did not run the refused tile: the model's buffers are behind the
            # engine's own halves now; the next "fits" run rewrites what it reads back


SCENARIOS = {"random": random_halves, "overlap": overlap, "claims": claims, "overflow": overflow}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Build the plan (seeded), run it once on the engine; returns ``(steps, results, seed)``
    with each recording step paired with what the engine showed."""
    if not runner.simulator_available():
        pytest.skip(f"{runner.simulator()} is not installed")
    seed = int(os.environ.get("HALVES_SEED", np.random.SeedSequence().entropy % 2**32))
    print(f"HALVES_SEED={seed}")
    rng = np.random.default_rng(seed)
    plan = Plan()
    for build in SCENARIOS.values():  # overflow last: after it the model lags the engine
        build(plan, rng)
    from hw.engine.engine import ConvEngine

    built, build_dir = runner.build(ConvEngine(CONFIG), "conv_engine")
    work = tmp_path_factory.mktemp("halves")
    plan_path, results_path = work / "plan.json", work / "results.json"
    plan_path.write_text(json.dumps(plan.steps))
    env = {"HALVES_PLAN": str(plan_path), "HALVES_RESULTS": str(results_path)}
    try:
        runner.run(built, build_dir, "conv_engine", "tests.sim.test_engine_halves", env=env)
    except SystemExit:
        pass
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    recorded = [step for step in plan.steps if "expect" in step]
    return recorded, results, seed


def check(bench, scenario: str) -> int:
    recorded, results, seed = bench
    assert len(results) == len(recorded), (
        f"the bench stopped after {len(results)} of {len(recorded)} steps; "
        f"rerun: HALVES_SEED={seed} pytest tests/sim/test_engine_halves.py"
    )
    bad = []
    count = 0
    for step, result in zip(recorded, results, strict=True):
        if step["scenario"] != scenario:
            continue
        count += 1
        expect = dict(step["expect"])
        mask = bytes.fromhex(expect.pop("mask", ""))
        if mask and "data" in result:
            actual, wanted = bytes.fromhex(result["data"]), bytes.fromhex(expect["data"])
            keep = [i for i, m in enumerate(mask) if m]
            result = {**result, "data": bytes(actual[i] for i in keep if i < len(actual)).hex()}
            expect["data"] = bytes(wanted[i] for i in keep).hex()
        wrong = {k: (result.get(k), v) for k, v in expect.items() if result.get(k) != v}
        if wrong:
            bad.append(
                (step["label"], {k: (str(a)[:80], str(e)[:80]) for k, (a, e) in wrong.items()})
            )
    assert not bad, (
        f"{len(bad)} {scenario} steps differ (actual, expected): {bad[:6]}\n"
        f"rerun: HALVES_SEED={seed} pytest tests/sim/test_engine_halves.py"
    )
    return count


def test_split_runs_in_random_halves_equal_the_emulator(bench):
    """(a) every op, random shapes and halves: bit-exact, exact cycles, no error."""
    assert check(bench, "random") == 2 * 12


def test_overlap_loads_and_stores_the_other_halves_while_a_split_run_computes(bench):
    """(b) the next tile's operands written and the previous results read during a run: both
    runs bit-exact, the reads the previous results, the run still busy, no error."""
    assert check(bench, "overlap") == 2 * 8


def test_intrusions_into_a_runs_claims_are_refused_and_dropped(bench):
    """(c) per run_claims: refused writes/reads set error (writes dropped: the tile reruns to
    the same result), the rest are taken; without SPLIT every intrusion is refused."""
    recorded = [step for step in bench[0] if step["scenario"] == "claims"]
    refusals = [s for s in recorded if s["step"] == "status" and s["expect"]["error"]]
    assert len(refusals) == 2 * 5 + 11  # 5 of a SPLIT run's intrusions each, all 11 without
    assert check(bench, "claims") == len(recorded)


def test_a_split_run_leaving_its_halves_ends_with_error_as_the_emulator_raises(bench):
    """(d) per space: the largest tile that fits runs (no error); one more word / channel
    ends with error; the other ACT_OUT half is kept."""
    assert check(bench, "overflow") == 2 + 4 * 2 * 4
