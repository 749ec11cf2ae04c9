"""The module map stays one a newcomer can follow: small modules and classes, no cycles, layers one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "associate"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250
# The sandbox stands in for Capillary: it shares only plain modules (no Airflow, no client code).
SANDBOX_MAY_IMPORT = {"associate.identifiers", "associate.masking"}
# What the DAG file -> tasks -> stage modules -> models layering forbids below the task layer.
TASK_LAYER = {"associate.tasks", "associate.operators"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT / "plugins").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every associate module ``name`` imports, at the top or inside a function."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # ``from pkg import module`` depends on that module, not on the package's other modules.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def test_modules_outside_the_sandbox_stay_small():
    big = {name: n for name, p in MODULES.items()
           if not name.startswith("associate.sandbox") and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert big == {}


def test_classes_stay_small():
    big = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                big[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert big == {}


def test_no_import_cycle():
    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in GRAPH[todo.pop()] - seen:
                if nxt == target:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted(f"{a} <-> {b}" for a in GRAPH for b in GRAPH[a] if reaches(b, a))
    assert cycles == []


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("associate.sandbox")])
def test_sandbox_shares_only_plain_models_with_the_client(name):
    foreign = {m for m in GRAPH[name] if not m.startswith("associate.sandbox")}
    assert foreign <= SANDBOX_MAY_IMPORT


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("associate.capillary")])
def test_client_package_does_not_reach_up_to_tasks(name):
    assert not GRAPH[name] & TASK_LAYER


def test_no_text_points_outside_the_repository():
    code = [p for folder in ("plugins", "dags", "tests", "bench", "scripts") for p in (ROOT / folder).rglob("*.py")]
    outside = [str(p.relative_to(ROOT)) for p in code
               if p != Path(__file__).resolve() and "../shared" in p.read_text()]
    assert outside == []
