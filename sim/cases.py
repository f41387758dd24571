"""Random engine test cases: buffer contents, descriptor and the golden expected output.

A case is a plain dict (JSON-serialisable): ``writes`` [(space, offset, hex)], ``descriptor``
(hex), ``read`` (offset, length), ``expected`` (hex of the bytes the engine must produce at
``read``, with ``mask`` hex: 1 where a byte is checked), ``cycles`` (predicted), ``label``.
Everything derives from the seed; :func:`fpga.spec.golden` is the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fpga.spec import golden
from fpga.spec.config import AcceleratorConfig
from fpga.spec.layout import (
    BufferSpace,
    LayerDescriptor,
    Op,
    check_fits,
    groups,
    pack_activations,
    pack_codebook,
    pack_params,
    pack_weight_indices,
    predict_cycles,
)


def _case(label, desc, writes, read_offset, expected, mask, config):
    check_fits(desc, config)
    writes = [(int(BufferSpace.DESCRIPTOR), 0, desc.pack())] + writes
    return {
        "label": label,
        "writes": [(int(s), int(o), bytes(b).hex()) for s, o, b in writes],
        "read": [read_offset, len(expected)],
        "expected": bytes(expected).hex(),
        "mask": bytes(mask).hex(),
        "cycles": predict_cycles(desc, config),
    }


def conv_case(
    rng: np.random.Generator,
    config: AcceleratorConfig,
    c_in: int,
    c_out: int,
    h: int,
    w: int,
    kernel: int,
    stride: int,
    pads: tuple[int, int, int, int],
    relu: bool = True,
    index_bits: int = 8,
    out_group_offset: int = 0,
    extra_out_groups: int = 0,
    label: str = "conv",
    in_base: int = 0,
) -> dict:
    """A CONV tile: golden on the explicitly padded input (pads = top, bottom, left, right)."""
    lanes = config.rows
    x = rng.integers(-128, 128, (c_in, h, w), dtype=np.int8)
    entries = 2**index_bits
    codebook = rng.integers(-128, 128, entries, dtype=np.int8)
    codebook[0] = 0
    indices = rng.integers(0, entries, (c_out, c_in, kernel, kernel)).astype(np.uint8)
    weight = codebook[indices]
    bias = rng.integers(-(2**18), 2**18, c_out).astype(np.int32)
    mult = rng.integers(2**15, 2**16, c_out)
    shift = rng.integers(17, 25, c_out)
    pt, pb, pl, pr = pads
    padded = np.pad(x, ((0, 0), (pt, pb), (pl, pr)))
    y = golden.conv2d(padded, weight, bias, mult, shift, stride, 0, relu)
    _, out_h, out_w = y.shape
    blocks = groups(c_out, config.cols)
    out_groups = out_group_offset + blocks + extra_out_groups
    desc = LayerDescriptor(
        op=Op.CONV,
        kernel=kernel,
        stride=stride,
        relu=relu,
        pad_top=pt,
        pad_left=pl,
        in_groups=groups(c_in, lanes),
        in_h=h,
        in_w=w,
        out_h=out_h,
        out_w=out_w,
        blocks=blocks,
        out_group_offset=out_group_offset,
        out_groups=out_groups,
        in_base=in_base,
    )
    # expected ACT_OUT: the conv's groups at the offset; other groups unchecked
    full = np.zeros((out_groups * lanes, out_h, out_w), dtype=np.int8)
    check = np.zeros_like(full)
    lo = out_group_offset * lanes
    full[lo : lo + c_out] = y
    check[lo : lo + blocks * lanes] = 1  # padding lanes of a block are written too
    expected = pack_activations(full, lanes)
    mask = pack_activations(check, lanes)
    writes = [
        (BufferSpace.ACT_IN, in_base * lanes, pack_activations(x, lanes)),
        (BufferSpace.CODEBOOK, 0, pack_codebook(codebook)),
        (BufferSpace.WEIGHT, 0, pack_weight_indices(indices, config)),
        (BufferSpace.PARAMS, 0, pack_params(bias, mult, shift, config.cols)),
    ]
    return _case(label, desc, writes, 0, expected, mask, config)


def maxpool_case(rng, config, c, h, w, label="maxpool", in_base=0) -> dict:
    lanes = config.rows
    x = rng.integers(-128, 128, (c, h, w), dtype=np.int8)
    y = golden.maxpool(x)
    g = groups(c, lanes)
    desc = LayerDescriptor(
        op=Op.MAXPOOL,
        kernel=3,
        stride=2,
        in_groups=g,
        in_h=h,
        in_w=w,
        out_h=y.shape[1],
        out_w=y.shape[2],
        out_groups=g,
        in_base=in_base,
    )
    full = np.zeros((g * lanes, *y.shape[1:]), dtype=np.int8)
    full[:c] = y
    # padding lanes of the input are 0, so their max is 0: checked as well
    expected = pack_activations(full, lanes)
    writes = [(BufferSpace.ACT_IN, in_base * lanes, pack_activations(x, lanes))]
    return _case(label, desc, writes, 0, expected, b"\x01" * len(expected), config)


def add_case(rng, config, c, h, w, relu=False, label="add") -> dict:
    lanes = config.rows
    a = rng.integers(-128, 128, (c, h, w), dtype=np.int8)
    b = rng.integers(-128, 128, (c, h, w), dtype=np.int8)
    ma, mb = (int(v) for v in rng.integers(0, 2**16, 2))
    shift = int(rng.integers(14, 19))
    y = golden.add(a, b, ma, mb, shift, relu)
    g = groups(c, lanes)
    words = h * w * g
    b_base = words + int(rng.integers(0, 4))
    desc = LayerDescriptor(
        op=Op.ADD,
        relu=relu,
        in_groups=g,
        in_h=h,
        in_w=w,
        out_h=h,
        out_w=w,
        out_groups=g,
        b_base=b_base,
        mult_a=ma,
        mult_b=mb,
        add_shift=shift,
    )
    full = np.zeros((g * lanes, h, w), dtype=np.int8)
    full[:c] = y
    check = np.zeros_like(full)
    check[:c] = 1
    writes = [
        (BufferSpace.ACT_IN, 0, pack_activations(a, lanes)),
        (BufferSpace.ACT_IN, b_base * lanes, pack_activations(b, lanes)),
    ]
    expected = pack_activations(full, lanes)
    return _case(label, desc, writes, 0, expected, pack_activations(check, lanes), config)


def avgpool_case(rng, config, c, h, w, label="avgpool") -> dict:
    lanes = config.rows
    x = rng.integers(-128, 128, (c, h, w), dtype=np.int8)
    sums = golden.global_avgpool(x)
    g = groups(c, lanes)
    desc = LayerDescriptor(op=Op.AVGPOOL, in_groups=g, in_h=h, in_w=w, out_h=1, out_w=1)
    expected = np.zeros(g * lanes, dtype="<i4")
    expected[:c] = sums
    mask = np.zeros(g * lanes * 4, dtype=np.uint8)
    mask[: 4 * c] = 1
    writes = [(BufferSpace.ACT_IN, 0, pack_activations(x, lanes))]
    return _case(label, desc, writes, 0, expected.tobytes(), mask.tobytes(), config)


def random_case(rng: np.random.Generator, config: AcceleratorConfig, index: int) -> dict:
    """One random layer of a random type (conv weighted 3:1:1:1)."""
    kind = rng.choice(["conv", "conv", "conv", "maxpool", "add", "avgpool"])
    lanes = config.rows
    if kind == "conv":
        kernel = int(rng.choice([1, 3]))
        stride = int(rng.choice([1, 2]))
        c_in = int(rng.integers(1, 3 * lanes + 1))
        c_out = int(rng.integers(1, 3 * config.cols + 1))
        h, w = (int(v) for v in rng.integers(kernel, 10, 2))
        pads = tuple(int(v) for v in rng.integers(0, 2, 4)) if kernel == 3 else (0, 0, 0, 0)
        bits = int(rng.choice([4, 6, 8]))
        offset = int(rng.integers(0, 3))
        extra = int(rng.integers(0, 2))
        relu = bool(rng.integers(0, 2))
        base = int(rng.integers(0, 5))
        label = (
            f"{index}:conv k{kernel} s{stride} {c_in}->{c_out} {h}x{w} pad{pads} {bits}b base{base}"
        )
        return conv_case(
            rng,
            config,
            c_in,
            c_out,
            h,
            w,
            kernel,
            stride,
            pads,
            relu,
            bits,
            offset,
            extra,
            label,
            base,
        )
    c = int(rng.integers(1, 3 * lanes + 1))
    h, w = (int(v) for v in rng.integers(3, 12, 2))
    label = f"{index}:{kind} {c}x{h}x{w}"
    if kind == "maxpool":
        return maxpool_case(rng, config, c, h, w, label, int(rng.integers(0, 5)))
    if kind == "add":
        return add_case(rng, config, c, h, w, bool(rng.integers(0, 2)), label)
    return avgpool_case(rng, config, c, h, w, label)


def squeezenet_shapes(variant: str, size: int) -> list[dict]:
    """Every distinct engine-level layer shape of ``variant`` at input ``size`` (torch trace).

    CONV (c_in, c_out, kernel, stride, pad, h, w) with v1.0's 7x7 conv1 as the 1x1 conv over 147
    channels it is lowered to; MAXPOOL 3x3/2 and the global AVGPOOL (c, h, w).
    """
    import torch
    from torch import nn

    from fpga.spec import golden
    from fpga.toolflow.model import build_model

    model = build_model(variant).eval()
    seen: dict[tuple, dict] = {}

    def add(kind, **shape):
        seen.setdefault((kind, *shape.values()), {"kind": kind, **shape})

    def conv_hook(module, inputs, output):
        c, h, w = inputs[0].shape[1:]
        k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
        if k == 7:  # v1.0 conv1: host im2col, then a 1x1 conv over 3*7*7 channels
            side = golden.conv_output_size(h, 7, s, p)
            add("conv", c_in=c * 49, c_out=module.out_channels, k=1, s=1, p=0, h=side, w=side)
        else:
            add("conv", c_in=c, c_out=module.out_channels, k=k, s=s, p=p, h=h, w=w)

    def pool_hook(module, inputs, output):
        c, h, w = output.shape[1:]
        add("maxpool", c=c, h=h, w=w)

    hooks = [
        m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)
    ]
    hooks.append(model.conv1.register_forward_hook(pool_hook))
    for n in model.arch.pool_after:
        hooks.append(getattr(model, n).register_forward_hook(pool_hook))
    hooks.append(
        model.conv10.register_forward_hook(
            lambda module, inputs, output: add(
                "avgpool", c=output.shape[1], h=output.shape[2], w=output.shape[3]
            )
        )
    )
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return list(seen.values())


def shape_case(
    rng: np.random.Generator, config: AcceleratorConfig, shape: dict, full: bool
) -> dict:
    """One engine run of a SqueezeNet layer shape: all its input channels, as many output channels
    as one weight-buffer chunk holds, and a band of rows (``full``: the layer's real width and as
    many rows as fit the buffers; otherwise a reduced 5..7-pixel square)."""
    lanes, cols = config.rows, config.cols
    kind = shape["kind"]
    if kind == "conv":
        k, s, p = shape["k"], shape["s"], shape["p"]
        g_in = groups(shape["c_in"], lanes)
        per_block = k * k * g_in * lanes * cols
        c_out = min(shape["c_out"], (config.weight_bytes // per_block) * cols)
        h, w = (shape["h"], shape["w"]) if full else (min(shape["h"], 7), min(shape["w"], 7))
        g_out = groups(c_out, cols)

        def too_big(h, w):
            out_h = golden.conv_output_size(h, k, s, p)
            out_w = golden.conv_output_size(w, k, s, p)
            return (
                h * w * g_in * lanes > config.act_in_bytes
                or out_h * out_w * g_out * lanes > config.act_out_bytes
            )

        while too_big(h, w):  # fewer rows first (a band), narrower only if one band is too big
            h, w = (h - 1, w) if h > k else (h, w - 1)
        label = f"conv k{k} s{s} p{p} {shape['c_in']}->{c_out} (of {shape['c_out']}) {h}x{w}"
        return conv_case(rng, config, shape["c_in"], c_out, h, w, k, s, (p, p, p, p), label=label)
    c = shape["c"]
    g = groups(c, lanes)
    h, w = (shape["h"], shape["w"]) if full else (min(shape["h"], 7), min(shape["w"], 7))
    if kind == "avgpool":  # the whole plane, as many channel groups as the buffers hold
        g_fit = min(g, config.act_out_bytes // (4 * lanes), config.act_in_bytes // (h * w * lanes))
        return avgpool_case(rng, config, min(c, g_fit * lanes), h, w, f"avgpool {c}x{h}x{w}")
    while h * w * g * lanes > config.act_in_bytes:
        h, w = (h - 1, w) if h > 3 else (h, w - 1)
    return maxpool_case(rng, config, c, h, w, f"maxpool {c}x{h}x{w}")


def run_engine(build, cases: list[dict], workdir: Path, name: str = "cases", waves=False):
    """Run ``cases`` through the cocotb engine bench (``sim.engine_bench``) on ``build``, the
    ``(runner, build_dir)`` of :func:`sim.runner.build` for a ``conv_engine``.

    Returns ``(results, xml)``: the per-case results as far as the bench got (a failing bench
    still writes them; a crash leaves fewer than ``cases``) and cocotb's results file (None when
    the bench failed).
    """
    from sim import runner

    built, build_dir = build
    cases_path = Path(workdir) / f"{name}.json"
    results_path = Path(workdir) / f"{name}_results.json"
    cases_path.write_text(json.dumps(cases))
    env = {"ENGINE_CASES": str(cases_path), "ENGINE_RESULTS": str(results_path)}
    try:
        xml = runner.run(built, build_dir, "conv_engine", "sim.engine_bench", env=env, waves=waves)
    except SystemExit:  # cocotb's way of reporting a failed test
        xml = None
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    return results, xml
