"""The house rule on function size, checked mechanically: no function or method of the code (engine/, ui/,
views/, bench/, tests/, app.py, serve.py) runs past 50 lines, decorators and docstring included. A longer one
hides a step that wants its own name; split it rather than raise the bound."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 50


def code_files() -> list[Path]:
    files = [f for folder in ("engine", "ui", "views", "bench", "tests") for f in sorted((ROOT / folder).rglob("*.py"))]
    return [f for f in files if "__pycache__" not in f.parts] + [ROOT / "app.py", ROOT / "serve.py"]


def long_functions(path: Path, *, limit: int = MAX_LINES, root: Path = ROOT) -> list[str]:
    """`path:line name (n lines)` for each function or method longer than `limit` lines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = node.end_lineno - first + 1
            if lines > limit:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_fifty_lines():
    assert len(code_files()) > 100  # the scan sees the code base, not an empty folder
    too_long = [entry for path in code_files() for entry in long_functions(path)]
    assert too_long == [], "\n".join(too_long)


def test_the_scan_counts_decorators_docstrings_and_nested_functions(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(46))
    source = f'@staticmethod\ndef outer():\n    """Doc."""\n    def inner():\n        pass\n{body}\n'
    path = tmp_path / "module.py"
    path.write_text(source, encoding="utf-8")
    assert long_functions(path, root=tmp_path) == ["module.py:2 outer (51 lines)"]
    assert long_functions(path, root=tmp_path, limit=51) == []
