"""The package's dependency rule: imports point down a declared layer order, with no cycles and no old paths.

Every import is read with ``ast`` (function-level ones included: an import hidden inside a function is
still a dependency), resolved to a ``nas_core`` module, and checked against :data:`LAYERS`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nas_core"

# Lowest first. A module may import from its own layer's other parts or any lower layer, never from a higher one.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "events", "registry"),
    ("blocks",),
    ("schema",),
    ("workspace",),
    ("tracking",),
    ("model",),
    ("space", "data"),
    ("training",),
    ("library",),
    ("deploy",),
    ("results", "ranking"),
    ("fidelities",),
    ("search",),
    ("jobs",),
    ("views", "serve"),
    ("cli",),
    ("__main__",),
]
# Old module paths kept for users (nas_core.evaluate, nas_core.export; the rest are aliases in nas_core/__init__.py).
COMPAT = {"evaluate", "export"}
LAYER_OF = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every nas_core import in the file, at any depth; ``from nas_core.x import y`` is nas_core.x.y when that is a module."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "nas_core"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "nas_core":
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((node.lineno, full if full in MODULES or full in _ALIASES else base))
    return out


def _aliases() -> dict[str, str]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "_MOVED" for t in targets):
                return ast.literal_eval(node.value)
    raise AssertionError("nas_core/__init__.py has no _MOVED table")


_ALIASES = _aliases()


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {m for _, m in _imports(path) if m in MODULES and m != name}
    return graph


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {_component(m) for m in MODULES} - {""} - COMPAT
    assert parts - set(LAYER_OF) == set(), "add these to LAYERS in tests/test_layers.py"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _component(m) in LAYER_OF), ids=str)
def test_imports_point_down(module: str) -> None:
    """No import (at any depth in the file) reaches a higher layer, an old module path, or the top-level package."""
    layer = LAYER_OF[_component(module)]
    bad = []
    for line, target in _imports(MODULES[module]):
        part = _component(target)
        if target in _ALIASES or part in COMPAT:
            bad.append(f"line {line}: {target} is an old path; import its new home")
        elif part and LAYER_OF.get(part, -1) > layer:
            bad.append(f"line {line}: {target} (layer {LAYER_OF[part]} {part}) is above {module} (layer {layer})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    """Strongly connected components of the module graph (Tarjan): every one must be a single module."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    """The rule covers imports hidden inside functions (the way the old cycle hid)."""
    found = [m for _, m in _imports(PACKAGE / "fidelities" / "zero_cost.py")]
    tree = ast.parse((PACKAGE / "fidelities" / "zero_cost.py").read_text())
    nested = [n for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f) if isinstance(n, ast.ImportFrom)]
    assert not nested or any(m.startswith("nas_core.") for m in found)


# Where nas_core reaches past Optuna's public API, and why; the optuna pin in requirements.txt is narrow because of these.
PRIVATE_OPTUNA = {
    "nas_core/search/__init__.py": "heartbeats recorded from our own thread for the running trial (storage, trial id)",
    "nas_core/workspace/owners.py": "failing a dead process's RUNNING trial from another process (trial id)",
    "nas_core/views/studies.py": "the dashboard's cached storage and per-study state key (storage, study id)",
    "nas_core/views/results_page.py": "Optuna's plots over attribute-free copies of the trials, on the same cached storage (storage)",
    "nas_core/views/fleet.py": "the workers table reads each RUNNING trial's last heartbeat (storage, trial id)",
    "nas_core/workspace/batched.py": "one transaction for a running trial's parameters and attributes, Core statements for trial creation and the final state (cached storage, RDB models)",
    "nas_core/search/tpe.py": "TPE's split of the study once per trial, each finished trial's internal representation once (its module function, a method)",
}


def test_private_optuna_api_stays_in_its_known_places() -> None:
    pattern = re.compile(r"\._storage\b|\._study_id\b|\._trial_id\b|optuna\.[\w.]*\._\w+|from optuna\.[\w.]*\._\w+ import")
    users = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text())}
    assert users <= set(PRIVATE_OPTUNA), f"new private Optuna API use in {sorted(users - set(PRIVATE_OPTUNA))}: use the public API, or add it here with the reason"


def test_study_storage_is_opened_in_one_place() -> None:
    """Optuna RDB storage and SQLAlchemy engines on the study database are made by nas_core.workspace.storage only."""
    makers = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if re.search(r"RDBStorage\(|create_engine\(", p.read_text())}
    assert makers == {"nas_core/workspace/storage.py"}, makers
