"""User messages never name source files and never repeat "Fix:": the pages' own text is scanned, and every
engine error message with a source path is shown through ui/messages.py, which the pages use for every error."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from engine.errors import MergelabError, SchemaError
from ui.messages import SOURCE_FILE, shown

ROOT = Path(__file__).resolve().parents[1]
SCREEN = sorted([*ROOT.glob("views/*.py"), *ROOT.glob("ui/**/*.py"), ROOT / "app.py"])


def _strings(path: Path) -> list[tuple[int, str]]:
    """The string literals of `path` that are not docstrings (what a page may show)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_page_text_names_a_source_file():
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in SCREEN
        if path.name != "messages.py"  # the table that replaces them
        for line, text in _strings(path)
        if SOURCE_FILE.search(text) and not text.startswith("views/")  # st.Page / st.page_link take view files
    ]
    assert found == []


def test_pages_show_errors_only_through_ui_messages():
    raw = re.compile(r"\.error\((?!messages\.shown)(?!st\.session_state)")
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in SCREEN
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if raw.search(line) and "def " not in line
    ]
    assert found == []


def _engine_fixes() -> list[str]:
    """Every `fix=` string literal of the engine that names a source file."""
    fixes = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "fix":
                parts = [
                    c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                ]
                fixes += [p for p in parts if SOURCE_FILE.search(p)]
    return fixes


def test_engine_messages_naming_a_source_file_are_shown_without_it():
    fixes = _engine_fixes()
    assert fixes, "the scan finds the engine's source-file fixes (update it if the engine dropped them all)"
    for fix in fixes:
        text = shown(SchemaError("recipe.json", "not valid", fix=fix))
        assert not SOURCE_FILE.search(text) and ("README" in text or "Merge page" in text), text


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            SchemaError("outer.json", str(SchemaError("inner.json", "missing key", fix="add it")), fix="correct it"),
            "outer.json: inner.json: missing key. Fix: add it; then correct it.",
        ),
        (MergelabError("a", "b", fix="same"), "a: b. Fix: same"),
        (
            'Traceback (most recent call last):\n  File "x.py"\nengine.errors.SchemaError: r.json: bad. Fix: see '
            "engine/runs/recipes.py for an example\n",
            'r.json: bad. Fix: see the README\'s "Engine and command line" section for an example',
        ),
    ],
)
def test_shown_keeps_one_fix_and_no_source_path(error, expected):
    assert shown(error) == expected
    assert shown(error).count("Fix:") <= 1
