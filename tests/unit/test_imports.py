"""The packages' import graph has no cycle, counting every import: module level, inside functions,
and those kept for type checkers only (a cycle hidden behind TYPE_CHECKING is still two modules that
cannot be understood apart). Services never import the orchestrator, the evaluation or the local
stack tooling; the orchestrator never imports the latter two."""

from __future__ import annotations

import ast
from pathlib import Path

from testkit.procs import ROOT

PACKAGES = ("genir", "services", "orchestrator", "evaluation", "stack", "benchmarks", "testkit")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path.relative_to(ROOT).parts[:2] != ("genir", "v1"):  # generated code
                found[module_name(path)] = path
    return found


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules that `path` imports anywhere in its text."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != me:
                out.add(name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, known) for name, path in known.items()}


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_services_never_import_the_orchestrator():
    bad = {m: sorted(d for d in deps if d.startswith("orchestrator")) for m, deps in graph().items()
           if m.startswith("services") and any(d.startswith("orchestrator") for d in deps)}
    assert not bad, bad


def importers_of(importer: str, imported: tuple[str, ...]) -> dict[str, list[str]]:
    """Modules of package `importer` that import any module of the `imported` packages."""
    hit = lambda d: d.split(".")[0] in imported  # noqa: E731
    return {m: sorted(filter(hit, deps)) for m, deps in graph().items()
            if m.split(".")[0] == importer and any(map(hit, deps))}


def test_services_import_neither_evaluation_nor_the_local_stack():
    assert importers_of("services", ("evaluation", "stack")) == {}


def test_the_orchestrator_imports_neither_evaluation_nor_the_local_stack():
    assert importers_of("orchestrator", ("evaluation", "stack")) == {}


def top_level_imports(path: Path) -> set[str]:
    """First name of every module `path` imports (absolute imports; the packages use no others)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_benchmarks_and_testkit_import_no_tests():
    # the benchmarks ship in the services image, which has no tests/ folder
    files = [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "testkit").rglob("*.py")]
    assert len(files) > 5
    assert [str(f.relative_to(ROOT)) for f in files if "tests" in top_level_imports(f)] == []


def test_the_import_reader_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "bench.py"
    f.write_text("import os\n\ndef run():\n    from tests.support.x import y\n    import numpy.linalg\n")
    assert top_level_imports(f) == {"os", "tests", "numpy"}


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
