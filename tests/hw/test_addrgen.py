"""The engine's address generator (hw.engine.addrgen) under Amaranth's simulator, against a Python
model of the run's loops (docs/engine.md, fpga.spec.layout's word layouts): for random descriptors
of every op, the exact cycle of every issue after ``start`` (the setup cycles, the ADD's and
AVGPOOL's idle cycles), its buffer addresses (``address_latency`` cycles after it) and,
``latency`` cycles after it, its stage-1 token;
the issue count, and nothing issued after the run.

Random descriptors, seeded (the seed is printed; ADDRGEN_SEED=... reproduces a run)."""

import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from fpga.spec.config import DEFAULT_CONFIG
from fpga.spec.layout import (
    ADDRESS_LATENCY,
    BUFFER_LATENCY,
    DESCRIPTOR_BYTES,
    SETUP_CYCLES,
    LayerDescriptor,
    Op,
    add_cycles_per_vector,
)
from hw.engine.addrgen import DESCRIPTOR_LAYOUT, AddressGenerator

#: small (quick to simulate, same structure) and the default 8 x 8
CONFIGS = [DEFAULT_CONFIG.replace(rows=4, cols=4), DEFAULT_CONFIG]
IDS = [f"{c.rows}x{c.cols}" for c in CONFIGS]

#: what the engine uses of an issue, per op (the other fields are don't-cares: the engine
#: ignores ``in_bounds`` for ADD/AVGPOOL, ``b_addr`` outside ADD and MAXPOOL, ``b_in_bounds``
#: outside MAXPOOL, the weight address and
#: block outside CONV, AVGPOOL's ``out_addr`` (the pool unit counts its groups))
CHECKED = {
    Op.CONV: ("act", "weight", "in_bounds", "first", "last", "out_addr", "block"),
    Op.MAXPOOL: ("act", "b", "in_bounds", "b_in_bounds", "first", "last", "out_addr"),
    Op.ADD: ("act", "b", "first", "last", "out_addr"),
    Op.AVGPOOL: ("act", "first", "last"),
}


def seeded(offset: int) -> np.random.Generator:
    seed = int(os.environ.get("ADDRGEN_SEED", 2026)) + offset
    print(f"ADDRGEN_SEED={seed - offset} (rng seed {seed})")
    return np.random.default_rng(seed)


def model(d: LayerDescriptor, config) -> list[tuple[int, dict]]:
    """Every issue of the run ``d`` as (cycles after the start cycle, the issue's fields).

    The first issue follows the start cycle and ``SETUP_CYCLES`` setup cycles. Activation
    words are HWC, ``(y * in_w + x) * in_groups + g`` (from ``in_base`` for CONV/MAXPOOL, from
    0 for ADD/AVGPOOL), weight words ``(block * k*k + ky * k + kx) * in_groups + g``, output
    words ``(oy * out_w + ox) * out_groups + group``; all modulo the buffers' depths."""
    in_mask = (1 << config.act_in_word_bits) - 1
    out_mask = (1 << config.act_out_word_bits) - 1
    weight_mask = (1 << config.weight_word_bits) - 1
    groups = d.in_groups
    cycle = SETUP_CYCLES + 1
    issues = []

    def issue(step=1, **fields):
        nonlocal cycle
        issues.append((cycle, fields))
        cycle += step

    def tap(y, x, g):
        inside = 0 <= y < d.in_h and 0 <= x < d.in_w
        return {"act": (d.in_base + (y * d.in_w + x) * groups + g) & in_mask, "in_bounds": inside}

    if d.op == Op.CONV:
        k, s = d.kernel, d.stride
        for block in range(d.blocks):
            for oy in range(d.out_h):
                for ox in range(d.out_w):
                    out = d.out_group_offset + block + (oy * d.out_w + ox) * d.out_groups
                    for ky in range(k):
                        for kx in range(k):
                            for g in range(groups):
                                issue(
                                    **tap(oy * s - d.pad_top + ky, ox * s - d.pad_left + kx, g),
                                    weight=((block * k * k + ky * k + kx) * groups + g)
                                    & weight_mask,
                                    first=(ky, kx, g) == (0, 0, 0),
                                    last=(ky, kx, g) == (k - 1, k - 1, groups - 1),
                                    out_addr=out & out_mask,
                                    block=block,
                                )
    elif d.op == Op.MAXPOOL:  # 3x3/2 whatever the kernel and stride fields say
        # two taps of a window row per issue: (kx 0, kx 1), then (kx 2, none)
        for oy in range(d.out_h):
            for ox in range(d.out_w):
                for g in range(groups):
                    for ky in range(3):
                        for kx in (0, 2):
                            y, x = 2 * oy - d.pad_top + ky, 2 * ox - d.pad_left + kx
                            second = tap(y, x + 1, g)
                            issue(
                                **tap(y, x, g),
                                b=second["act"],
                                b_in_bounds=second["in_bounds"] and kx + 1 < 3,
                                first=(ky, kx) == (0, 0),
                                last=(ky, kx) == (2, 2),
                                out_addr=((oy * d.out_w + ox) * groups + g) & out_mask,
                            )
    elif d.op == Op.ADD:  # a vector every add_cycles_per_vector cycles
        for word in range(d.out_h * d.out_w * groups):
            issue(
                add_cycles_per_vector(config),
                act=word & in_mask,
                b=(d.b_base + word) & in_mask,
                first=True,
                last=True,
                out_addr=word & out_mask,
            )
    else:  # AVGPOOL: per group every input pixel, then the group's output words
        sum_words = config.acc_bits // config.act_bits
        for g in range(groups):
            for y in range(d.in_h):
                for x in range(d.in_w):
                    last = (y, x) == (d.in_h - 1, d.in_w - 1)
                    issue(
                        1 + sum_words * last,
                        act=((y * d.in_w + x) * groups + g) & in_mask,
                        first=(y, x) == (0, 0),
                        last=last,
                    )
    return issues


def random_descriptor(rng, op: Op, config) -> LayerDescriptor:
    """A small run of ``op`` (sizes of a few pixels; bases sometimes near the buffer's end, so
    addresses wrap)."""

    def size(low=1, high=7):
        return int(rng.integers(low, high + 1))

    def base(bits):
        if rng.random() < 0.2:
            return (1 << bits) - size(1, 40)
        return size(0, 60)

    groups = size(1, 3)
    if op == Op.CONV:
        kernel, stride = int(rng.choice([1, 3])), size(1, 2)
        pads = [size(0, 2) if kernel == 3 else size(0, 1) if rng.random() < 0.2 else 0]
        pads += [size(0, 2) if kernel == 3 else 0 for _ in range(3)]
        pad_top, pad_left, pad_bottom, pad_right = pads
        in_h, in_w = size(), size()
        out_h = max(1, (in_h + pad_top + pad_bottom - kernel) // stride + 1)
        out_w = max(1, (in_w + pad_left + pad_right - kernel) // stride + 1)
        blocks = size(1, 3)
        offset = size(0, 2)
        return LayerDescriptor(
            op=Op.CONV,
            kernel=kernel,
            stride=stride,
            relu=bool(rng.integers(0, 2)),
            pad_top=pad_top,
            pad_left=pad_left,
            in_groups=groups,
            in_h=in_h,
            in_w=in_w,
            out_h=out_h,
            out_w=out_w,
            blocks=blocks,
            out_group_offset=offset,
            out_groups=offset + blocks + size(0, 1),
            in_base=base(config.act_in_word_bits),
        )
    if op == Op.MAXPOOL:  # 3x3/2, ceil mode
        in_h, in_w = size(3, 9), size(3, 9)
        pad_top, pad_left = (size(0, 1), size(0, 1)) if rng.random() < 0.3 else (0, 0)
        return LayerDescriptor(
            op=Op.MAXPOOL,
            kernel=3,
            stride=2,
            pad_top=pad_top,
            pad_left=pad_left,
            in_groups=groups,
            in_h=in_h,
            in_w=in_w,
            out_h=-(-(in_h - 3) // 2) + 1,
            out_w=-(-(in_w - 3) // 2) + 1,
            in_base=base(config.act_in_word_bits),
        )
    h, w = size(), size()
    if op == Op.ADD:
        return LayerDescriptor(
            op=Op.ADD,
            kernel=size(1, 3),  # ignored, as MAXPOOL's: the kernel counters stay at their last
            in_groups=groups,
            in_h=h,
            in_w=w,
            out_h=h,
            out_w=w,
            out_groups=groups,
            b_base=base(config.act_in_word_bits),
            mult_a=size(1, 1000),
            mult_b=size(1, 1000),
            add_shift=size(0, 15),
        )
    return LayerDescriptor(op=Op.AVGPOOL, in_groups=groups, in_h=h, in_w=w, out_groups=groups)


def simulate(dut: AddressGenerator, runs: list[LayerDescriptor], rng) -> list[dict]:
    """Run ``runs`` back to back (random idle cycles and a random descriptor between them, the
    run's descriptor from its ``start`` cycle on); per run, every issue as (cycles after the
    start cycle, fields), and the cycles ``setup`` and ``issuing`` were high."""
    descriptor_bytes = DESCRIPTOR_LAYOUT.size // 8
    assert DESCRIPTOR_LAYOUT.size % 8 == 0 and descriptor_bytes <= DESCRIPTOR_BYTES
    results = []

    async def bench(ctx):
        for desc in runs:
            for _ in range(int(rng.integers(0, 4))):  # idle, another descriptor
                garbage = int.from_bytes(rng.bytes(descriptor_bytes), "little")
                ctx.set(dut.descriptor.as_value(), garbage)
                await ctx.tick()
            packed = desc.pack()[:descriptor_bytes]
            ctx.set(dut.descriptor.as_value(), int.from_bytes(packed, "little"))
            ctx.set(dut.start, 1)
            issues, setup, issuing = [], [], []
            addresses = {}
            quiet = 0  # cycles since the run's last issue (or token)
            cycle = 0
            # a generator that never ends its run fails the test instead of hanging it
            limit = 2 * (model(desc, dut.config)[-1][0] + 16)
            while quiet < 12 and cycle < limit:
                if ctx.get(dut.setup):
                    setup.append(cycle)
                if ctx.get(dut.issuing):
                    issuing.append(cycle)
                addresses[cycle] = {
                    "act": ctx.get(dut.act_addr),
                    "b": ctx.get(dut.b_addr),
                    "weight": ctx.get(dut.weight_addr),
                }
                quiet += 1
                if ctx.get(dut.tokens.valid):
                    token = dut.tokens.payload
                    issue = cycle - dut.latency
                    fields = dict(addresses[issue + dut.address_latency])
                    for name in ("in_bounds", "b_in_bounds", "first", "last", "out_addr", "block"):
                        fields[name] = ctx.get(getattr(token, name))
                    issues.append((issue, fields))
                    quiet = 0
                await ctx.tick()
                ctx.set(dut.start, 0)
                cycle += 1
            results.append({"issues": issues, "setup": setup, "issuing": issuing})

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_issue_sequence_equals_model(config):
    """Random runs of every op (CONV 1x1/3x3, strides 1/2, paddings, 1-3 blocks and groups,
    bases that wrap; MAXPOOL 3x3/2; ADD; AVGPOOL) back to back: the setup cycles, then every
    issue in the model's cycle with the model's addresses and token, the model's issue count,
    ``issuing`` until the last issue, nothing after it."""
    dut = AddressGenerator(config)
    assert dut.address_latency == ADDRESS_LATENCY
    assert dut.latency == ADDRESS_LATENCY + BUFFER_LATENCY and dut.setup_cycles == SETUP_CYCLES
    assert dut.add_phases == add_cycles_per_vector(config)
    rng = seeded(0 if config == DEFAULT_CONFIG else 1)
    ops = [Op.CONV] * 12 + [Op.MAXPOOL] * 4 + [Op.ADD] * 4 + [Op.AVGPOOL] * 4
    rng.shuffle(ops)
    runs = [random_descriptor(rng, Op(op), config) for op in ops]
    results = simulate(dut, runs, rng)
    kernels = {(d.kernel, d.stride) for d in runs if d.op == Op.CONV}
    assert {(1, 1), (3, 1), (3, 2)} <= kernels, kernels
    for desc, result in zip(runs, results, strict=True):
        expected = model(desc, config)
        got = result["issues"]
        assert result["setup"] == list(range(1, SETUP_CYCLES + 1)), desc
        assert len(got) == len(expected), (desc, len(got), len(expected))
        assert result["issuing"] == list(range(1, expected[-1][0] + 1)), desc
        for n, ((got_cycle, got_fields), (cycle, fields)) in enumerate(
            zip(got, expected, strict=True)
        ):
            checked = {name: int(fields[name]) for name in CHECKED[desc.op]}
            assert (got_cycle, {name: got_fields[name] for name in checked}) == (
                cycle,
                checked,
            ), f"issue {n} of {desc}"
