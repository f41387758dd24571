"""The layering rules of docs/architecture.md, checked by walking every import in the source.

A module's layer is the package it lives in (:data:`LAYERS`), never a list kept here: a new
module is checked the moment it is put in its folder. Which layer may import which is
:data:`MAY_IMPORT`. Function-level (lazy) imports count like module-level ones: a lazy import of
torch in the spec would still need torch.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fpga", "hw", "host", "sim", "bench")

#: package -> layer (a module's layer is that of the longest package that holds it)
LAYERS = {
    "fpga.spec": "spec",  # the facts every other layer builds on: numpy and Pillow only
    "fpga.compiler": "compiler",  # network -> engine commands, DRAM map, cycle model; no torch
    "fpga.toolflow": "toolflow",  # torch: float model, quantization, compression
    "fpga.build": "build",  # bitstreams and fit reports; handed its design, never imports hw
    "hw.engine": "engine",  # the conv engine's gateware
    "hw.soc": "soc",  # the SoC around it: link, sequencer, DMA, DRAM port, UART
    "hw.board": "board",  # board tops: pins, PLLs, a timing top
    "host": "host",  # the host runtime: no torch, no gateware
    "sim": "sim",  # simulation: benches, the simulated board's build
    "bench": "bench",  # `make bench`: may use anything
}
#: layer -> the layers its modules may import (its own included)
MAY_IMPORT = {
    "spec": {"spec"},
    "compiler": {"spec", "compiler"},
    "toolflow": {"spec", "compiler", "toolflow"},
    "build": {"spec", "compiler", "build"},
    "engine": {"spec", "engine"},
    "soc": {"spec", "engine", "soc"},
    "board": {"spec", "engine", "soc", "board"},
    "host": {"spec", "compiler", "host"},
    "sim": {"spec", "compiler", "toolflow", "build", "engine", "soc", "board", "sim"},
    "bench": set(LAYERS.values()) | {"entry"},
}
#: the CLIs kept under their old names (``python -m fpga.quant``): each runs one toolflow CLI
ENTRY_POINTS = {
    "fpga.quant": "fpga.toolflow.quant",
    "fpga.model": "fpga.toolflow.model",
    "fpga.compress": "fpga.toolflow.compress.cli",
}
#: third-party packages the spec and the compiler may use
SPEC_THIRD_PARTY = {"numpy", "PIL"}
#: third-party packages the host runtime install brings (pyproject dependencies)
HOST_THIRD_PARTY = {"numpy", "PIL", "serial", "tqdm"}
#: the host's optional extras (pyproject's ``batch``: host.batch imports ray lazily, --devices only)
HOST_OPTIONAL_THIRD_PARTY = {"ray"}


def layer_of(module: str) -> str | None:
    """The layer of a project module (None for the top-level packages' empty ``__init__``)."""
    if module in ENTRY_POINTS:
        return "entry"
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:i]))
        if layer:
            return layer
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            modules[module_name(path)] = path
    return modules


MODULES = project_modules()


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports (module level and inside functions), resolved."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base == "__future__":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    # importing a.b.c runs a/__init__ and a/b/__init__ too (unless ``name`` lives inside them:
    # a package's own modules are imported after its __init__ has started)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    for module in list(found):
        parts = module.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in MODULES and parent not in own:
                found.add(parent)
    return found - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def reach(name: str) -> set[str]:
    """Every module reachable from ``name`` (project modules followed, others kept as leaves)."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        for dep in GRAPH.get(current, ()):
            if dep not in seen:
                seen.add(dep)
                if dep in MODULES:
                    todo.append(dep)
    return seen


def top(module: str) -> str:
    return module.split(".")[0]


def stdlib(module: str) -> bool:
    return top(module) in sys.stdlib_module_names


def test_every_module_has_a_layer():
    """Each module lives in a layer's package (or is an entry point); the top-level packages
    hold nothing but those."""
    homeless = sorted(
        m for m in MODULES if layer_of(m) is None and m not in ("fpga", "hw", "host", "sim")
    )
    assert not homeless, f"modules outside every layer's package: {homeless}"
    for name in ("fpga", "hw"):
        assert not MODULES[name].read_text().strip(), f"{name}/__init__.py defines something"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if layer_of(m) not in (None, "entry")))
def test_imports_follow_the_layers(name):
    layer = layer_of(name)
    bad = sorted(
        m
        for m in GRAPH[name]
        if m in MODULES and layer_of(m) is not None and layer_of(m) not in MAY_IMPORT[layer]
    )
    assert not bad, f"{name} ({layer}) imports {[(m, layer_of(m)) for m in bad]}"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_points_only_run_their_cli(name):
    """``python -m fpga.quant`` and the like: one import of the toolflow CLI, nothing defined."""
    tree = ast.parse(MODULES[name].read_text())
    assert not [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    imported = {m for m in GRAPH[name] if m in MODULES}
    packages = {m for m in imported if MODULES[m].name == "__init__.py"}
    assert imported - packages == {ENTRY_POINTS[name]}


@pytest.mark.parametrize("name", sorted(m for m in MODULES if layer_of(m) in ("spec", "compiler")))
def test_spec_and_compiler_reach_only_numpy_and_pillow(name):
    bad = sorted(
        m
        for m in reach(name)
        if not stdlib(m)
        and top(m) not in SPEC_THIRD_PARTY | {"fpga"}
        and layer_of(m) not in ("spec", "compiler")
    )
    assert not bad, f"{name} ({layer_of(name)}) reaches {bad}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if top(m) == "host"))
def test_host_reaches_no_torch_no_gateware(name):
    reached = reach(name)
    bad = sorted(
        m
        for m in reached
        if top(m) in ("torch", "amaranth", "hw", "sim", "cocotb", "cocotb_tools")
        or (
            not stdlib(m)
            and top(m) not in HOST_THIRD_PARTY | HOST_OPTIONAL_THIRD_PARTY | {"fpga", "host"}
        )
    )
    assert not bad, f"{name} reaches {bad}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if layer_of(m) == "build"))
def test_build_flow_reaches_no_torch_and_no_gateware(name):
    """The build is handed its design (``--design``) and predicts images/s from the compiler."""
    bad = sorted(m for m in reach(name) if top(m) in ("torch", "hw", "host", "sim"))
    assert not bad, f"{name} reaches {bad}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if top(m) == "sim"))
def test_sim_reaches_no_host(name):
    bad = sorted(m for m in reach(name) if top(m) in ("host", "bench"))
    assert not bad, f"{name} reaches {bad}"


def test_no_import_cycles():
    """Tarjan-free: a cycle exists iff some module reaches itself."""
    cycles = sorted(name for name in MODULES if name in reach(name))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_checker_sees_a_violation():
    """The walker is not blind: a lazy torch import in a spec module is found, and a spec module
    importing the compiler breaks the layer rule."""
    GRAPH["fpga.spec.config"] = GRAPH["fpga.spec.config"] | {"torch", "fpga.compiler.program"}
    try:
        assert "torch" in reach("fpga.spec.layout")
        with pytest.raises(AssertionError, match="compiler"):
            test_imports_follow_the_layers("fpga.spec.config")
    finally:
        GRAPH["fpga.spec.config"] = imports_of("fpga.spec.config")


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def run_without(blocked: set[str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -c`` with ``blocked`` top-level packages unimportable (as if not installed).

    The blocker is a ``sitecustomize`` module, so the processes the command starts (the toolflow
    subprocess of host.infer, say) run without those packages too.
    """
    with tempfile.TemporaryDirectory() as site:
        Path(site, "sitecustomize.py").write_text(BLOCKER.format(blocked=blocked))
        return subprocess.run(
            [sys.executable, "-c", "\n".join(args)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([site, str(ROOT)])},
            **kwargs,
        )


HOST_ONLY_BLOCKED = {"torch", "amaranth", "hw", "cocotb", "cocotb_tools"}


def test_host_cli_help_without_torch_or_amaranth():
    start = time.perf_counter()
    done = run_without(
        HOST_ONLY_BLOCKED,
        "import sys; sys.argv = ['host.infer', '--help']",
        "import runpy; runpy.run_module('host.infer', run_name='__main__')",
    )
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert "--model" in done.stdout
    print(f"host.infer --help without torch: {elapsed:.2f} s")


def test_host_without_torch_says_what_to_do_for_a_variant():
    """No --model: quantizing needs torch; a host-only install gets one clear sentence."""
    photo = ROOT / "fpga" / "data" / "photos" / "chelsea.jpg"
    done = run_without(
        HOST_ONLY_BLOCKED,
        f"import sys; sys.argv = ['host.infer', {str(photo)!r}, '--device', 'loop://']",
        "import runpy; runpy.run_module('host.infer', run_name='__main__')",
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "--model" in done.stderr and "torch" in done.stderr
