"""The engine's layering, checked mechanically: every import (function-level and TYPE_CHECKING ones
included) goes from a package to its own layer or a lower one, there are no circles, and the engine never
imports the dashboard. The layers, lowest first, are the README's "Layout" section."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
LAYERS = (
    ("engine", "engine.errors", "engine.params", "engine.home", "engine.models"),  # shared vocabulary
    ("engine.io",),
    ("engine.store",),
    ("engine.data",),
    ("engine.eval",),
    ("engine.pool",),
    ("engine.merge", "engine.sta", "engine.taujp", "engine.train", "engine.learn"),
    ("engine.workspace",),
    ("engine.runs",),
    ("engine.search",),  # the one trial engine: jobs submit trials to it, it never imports a job
    ("engine.jobs",),
    ("engine.cli", "engine.cli_jobs", "engine.cli_benchmark", "engine.cli_warm", "engine.__main__", "engine.zoo"),
)
UI = ("streamlit", "ui", "views", "app")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_modules() -> dict[str, Path]:
    return {module_name(f): f for f in sorted(ENGINE.rglob("*.py")) if "__pycache__" not in f.parts}


def imported_names(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (module level, functions, TYPE_CHECKING)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; write the absolute module path"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def engine_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The engine modules `path` imports (a `from package import submodule` names the submodule)."""
    return {name for name in imported_names(path) if name in modules} - {module_name(path)}


def layer_of(module: str) -> int:
    best = None
    for level, packages in enumerate(LAYERS):
        for package in packages:
            if (module == package or module.startswith(package + ".")) and (
                best is None or len(package) > len(best[1])
            ):
                best = (level, package)
    assert best is not None, f"{module} is in no layer: add its package to LAYERS and to the README's Layout"
    return best[0]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_engine_never_imports_the_dashboard():
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in engine_modules().values()
        for name in imported_names(path)
        if name.split(".")[0] in UI
    ]
    assert offenders == []


def test_every_import_goes_to_the_same_or_a_lower_layer():
    modules = engine_modules()
    upward = [
        f"{module} (layer {layer_of(module)}) imports {dep} (layer {layer_of(dep)})"
        for module, path in modules.items()
        for dep in sorted(engine_imports(path, modules))
        if layer_of(dep) > layer_of(module)
    ]
    assert upward == []


def test_no_import_circles():
    modules = engine_modules()
    edges = {module: engine_imports(path, modules) for module, path in modules.items()}
    assert circles(edges) == []


def test_no_method_module_imports_the_registry_that_finds_it():
    """The registry imports every module of engine/merge/methods/ by name (pkgutil), which no import statement
    shows: those edges are added here, so a method module importing the registry (or engine.merge, which
    imports it) is a circle."""
    modules = engine_modules()
    edges = {module: engine_imports(path, modules) for module, path in modules.items()}
    found = sorted(m for m in modules if m.startswith("engine.merge.methods."))
    assert "engine.merge.methods.ties" in found
    edges["engine.merge.registry"] |= set(found)
    assert circles(edges) == []
    assert all(layer_of(m) == layer_of("engine.merge") for m in found)


def test_core_never_imports_the_zoo_build():
    modules = engine_modules()
    offenders = [
        f"{module} imports {dep}"
        for module, path in modules.items()
        if not module.startswith("engine.zoo") and module not in ("engine.cli", "engine.__main__")
        for dep in engine_imports(path, modules)
        if dep.startswith("engine.zoo")
    ]
    assert offenders == []


def test_every_engine_module_has_a_layer():
    for module in engine_modules():
        layer_of(module)


@pytest.mark.parametrize(
    "edges, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
        ({"a": {"a"}}, []),
    ],
)
def test_circle_finder(edges, expected):
    assert circles(edges) == expected


def test_the_scan_sees_function_level_and_type_checking_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine.workspace import W\n"
        "def f():\n    import engine.zoo.build\n"
    )
    assert {"engine.workspace", "engine.zoo.build"} <= imported_names(source)
