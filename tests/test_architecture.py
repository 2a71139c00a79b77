"""The layers point one way (docs/ARCHITECTURE.md): every import in src/caap, including those inside functions, goes
to the same layer or a lower one; no two files import each other (directly or around a loop); no source
file is over ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "caap"

# rank of each top-level part, lowest first; packages of equal rank may not import each other
LAYERS = {
    "errors": 0, "io": 0, "specs": 0, "registry": 0, "version": 0, "viz": 0,  # viz: arrays -> figures only
    "core": 1,
    "adapters": 2,
    "methods": 3, "metrics": 3,
    "data": 4,
    "bench": 5,
    "cli": 6, "quantus": 6,  # interop faces, beside the command line
    "": 7,  # caap/__init__.py: the public facade over everything
}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """caap modules imported anywhere in the file (``from caap import x`` counts as ``caap.x`` when x is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "caap"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "caap":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
    return out


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def test_every_part_has_a_layer():
    assert {part(m) for m in modules()} <= set(LAYERS)


def test_imports_point_one_way():
    known = modules()
    bad = []
    for name, path in known.items():
        for target in imports(path, name, known):
            src, dst = part(name), part(target)
            if src == dst:
                continue
            sideways = LAYERS[dst] == LAYERS[src] and LAYERS[src] > 0  # the ground modules may use each other
            if LAYERS[dst] > LAYERS[src] or sideways:
                bad.append(f"{name} -> {target}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    known = modules()
    graph = {name: {t for t in imports(path, name, known) if t in known and t != name} for name, path in known.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_source_file_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from caap.bench import runner\n    from ..methods import base\n")
    known = {**modules(), "caap.core.probe": probe}
    found = imports(probe, "caap.core.probe", known)
    assert {"caap.bench.runner", "caap.methods.base"} <= found


BENCHMARKS = SRC.parents[1] / "benchmarks"
TESTS = SRC.parents[1] / "tests"


def top_imports(path: Path) -> set[str]:
    """The top-level names of every module a file imports (anywhere in it)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_benchmark_scripts_import_the_package_never_each_other():
    """benchmarks/ is argument parsing, run names and calls into caap: no script imports another script (so no
    circle can form), and none imports the tests' modules (the tiny models are caap.adapters.tiny)."""
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    test_modules = {p.stem for p in TESTS.glob("*.py")}
    bad = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        found = top_imports(path)
        bad += [f"{path.name} -> {m} (a script)" for m in sorted(found & scripts)]
        bad += [f"{path.name} -> {m} (a test module)" for m in sorted(found & test_modules)]
    assert not bad, "\n".join(bad)


def test_no_benchmark_or_test_changes_sys_path():
    """Scripts and tests import the installed package; only the scripts that run the authors' own code (RISE, TIS,
    LeGrad, AtMan, ViT-CX) put the authors' fetched repository on the path, to import it as its README says."""
    authors = {f"{name}_reference.py" for name in ("rise", "tis", "legrad", "atman", "vitcx")}
    bad = [str(p.relative_to(SRC.parents[1])) for folder in (BENCHMARKS, TESTS) for p in sorted(folder.glob("*.py"))
           if "sys.path.insert" in p.read_text() and p.name not in authors | {"test_architecture.py"}]
    assert not bad, bad


def test_tests_import_the_package_not_the_scripts():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    bad = [f"{p.name} -> {m}" for p in sorted(TESTS.glob("*.py")) for m in sorted(top_imports(p) & scripts)]
    bad += [f"{p.name} changes sys.path" for p in sorted(TESTS.glob("*.py")) if "sys.path.insert" in p.read_text()
            and p.name != "test_architecture.py"]
    assert not bad, "\n".join(bad)
