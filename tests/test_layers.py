"""The layering rules of ARCHITECTURE.md, checked by walking every import in the source.

Spec (no torch, no gateware, no host) <- toolflow (torch) ; spec <- hw ; spec <- host ;
build is handed its design ; sim may import anything below it. Function-level (lazy) imports
count like module-level ones: a lazy import of torch in the spec would still need torch.
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

#: the spec layer: what gateware, host, emulator and toolflow all build on
SPEC = {
    "fpga.errors",
    "fpga.cli",
    "fpga.files",
    "fpga.graph",
    "fpga.config",
    "fpga.arch",
    "fpga.boards",
    "fpga.layout",
    "fpga.protocol",
    "fpga.golden",
    "fpga.floatgraph",
    "fpga.huffman",
    "fpga.image",
    "fpga.network",
    "fpga.sqz",
    "fpga.resident",
}
#: third-party packages the spec layer may use
SPEC_THIRD_PARTY = {"numpy", "PIL"}
#: third-party packages the host runtime install brings (pyproject dependencies)
HOST_THIRD_PARTY = {"numpy", "PIL", "serial", "tqdm"}
#: the host's optional extras (pyproject's ``batch``: host.batch imports ray lazily, --devices only)
HOST_OPTIONAL_THIRD_PARTY = {"ray"}


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


def test_spec_modules_exist():
    assert SPEC <= set(MODULES)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_spec_imports_only_spec_numpy_and_pillow(name):
    bad = sorted(
        m
        for m in reach(name)
        if not stdlib(m) and m not in SPEC and top(m) not in SPEC_THIRD_PARTY and m != "fpga"
    )
    assert not bad, f"{name} (spec layer) reaches {bad}"


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


@pytest.mark.parametrize("name", sorted(m for m in MODULES if top(m) == "hw"))
def test_gateware_imports_spec_only(name):
    bad = sorted(
        m
        for m in GRAPH[name]
        if (top(m) == "fpga" and m not in SPEC and m != "fpga")
        or top(m) in ("host", "sim", "torch", "bench")
    )
    assert not bad, f"{name} imports {bad}"


def test_build_flow_is_handed_its_design():
    assert not [m for m in reach("fpga.build") if top(m) == "hw"]


def test_toolflow_never_imports_upward():
    for name in MODULES:
        if top(name) == "fpga":
            bad = [m for m in GRAPH[name] if top(m) in ("hw", "host", "sim", "bench")]
            assert not bad, f"{name} imports {bad}"


def test_no_import_cycles():
    """Tarjan-free: a cycle exists iff some module reaches itself."""
    cycles = sorted(name for name in MODULES if name in reach(name))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_checker_sees_a_violation():
    """The walker is not blind: a lazy torch import in a spec module is found."""
    GRAPH["fpga.config"] = GRAPH["fpga.config"] | {"torch"}
    try:
        assert "torch" in reach("fpga.layout")
    finally:
        GRAPH["fpga.config"] = imports_of("fpga.config")


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
