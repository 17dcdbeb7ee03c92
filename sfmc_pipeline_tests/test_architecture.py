"""The layout rules a contributor relies on (docs/architecture.md): modules import each other in one
direction (no cycles, function-level imports included), none grows past 500 lines, and ``crm/`` takes
Salesforce's rules from ``salesforce/``, never from ``datasets/``."""

from __future__ import annotations

import ast
from pathlib import Path

import sfmc_pipeline

PACKAGE = Path(sfmc_pipeline.__file__).parent
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every product module each module imports, wherever the import statement is."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found |= {c for c in [base, *(f"{base}.{a.name}" for a in node.names)] if c in modules}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        # importing ``a.b.c`` first runs the packages ``a`` and ``a.b``: their imports count too
        found |= {parent for target in found for parent in _parents(target) if parent in modules}
        edges[name] = found - {name} - set(_parents(name))
    return edges


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_even_through_function_level_imports():
    assert _cycles(_imports(_modules())) == []


def test_a_cycle_is_found_through_a_package_init(tmp_path, monkeypatch):
    """``c`` imports ``pkg.a``, which runs ``pkg/__init__``, which imports ``c`` back."""
    package = tmp_path / "sfmc_pipeline"
    (package / "pkg").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pkg" / "__init__.py").write_text("from sfmc_pipeline.c import x\n")
    (package / "pkg" / "a.py").write_text("")
    (package / "c.py").write_text("from sfmc_pipeline.pkg.a import y\n")
    monkeypatch.setattr(sfmc_pipeline, "__file__", str(package / "__init__.py"))
    monkeypatch.setitem(globals(), "PACKAGE", package)
    assert _cycles(_imports(_modules())) == [["sfmc_pipeline.c", "sfmc_pipeline.pkg"]]


def test_a_cycle_is_found_through_a_function_level_import(tmp_path, monkeypatch):
    """The cycle check itself: two modules importing each other, one of them inside a function."""
    package = tmp_path / "sfmc_pipeline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from sfmc_pipeline.b import g\n")
    (package / "b.py").write_text("def g():\n    from sfmc_pipeline import a\n")
    monkeypatch.setattr(sfmc_pipeline, "__file__", str(package / "__init__.py"))
    monkeypatch.setitem(globals(), "PACKAGE", package)
    assert _cycles(_imports(_modules())) == [["sfmc_pipeline.a", "sfmc_pipeline.b"]]


def test_no_product_module_is_over_500_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_the_crm_sink_takes_salesforce_rules_from_salesforce_not_from_datasets():
    edges = _imports(_modules())
    crm_to_datasets = {(name, target) for name, targets in edges.items() if name.startswith("sfmc_pipeline.crm")
                       for target in targets if target.startswith("sfmc_pipeline.datasets")}
    # the storage layout the ledger and bulk job store live in (and its package, which imports nothing)
    allowed = {"sfmc_pipeline.datasets.storage", "sfmc_pipeline.datasets"}
    assert {pair for pair in crm_to_datasets if pair[1] not in allowed} == set()
