"""What a user reads of an engine error or a failed job: the engine's `subject: problem. Fix: fix`
(engine/errors.py), written for the command line, made fit for the page.

- A source file named as documentation ("see engine/runs/recipes.py for an example") becomes the README
  section that documents the same thing: a student has the README, not the source tree.
- An error built from another repeats "Fix:" ("... Fix: add it. Fix: correct the file"): the fixes are kept,
  once each, after one "Fix:".
- A failed job's traceback is shown by its last line, without the exception's module path
  ("engine.errors.SchemaError: ").
"""

from __future__ import annotations

import re

# Where the README documents what each source file a message names holds (by the README's headings).
DOCUMENTED_IN = {
    "engine/runs/recipes.py": 'the README\'s "Engine and command line" section',
    "engine/pool/collection.py": 'the README\'s "Opening your own models" section',
    "engine/merge/registry.py": "the method list on the Merge page",
    "engine/io/checkpoints.py": 'the README\'s "Checkpoint format" section',
}
SOURCE_FILE = re.compile(r"\b(?:engine|ui|views|bench|tests)/[\w/]+\.py\b")
QUALIFIED_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*: ")
FIX = ". Fix: "


def shown(error: BaseException | str) -> str:
    """The text a page shows for `error` (an exception, or a job's error text: its traceback)."""
    text = str(error).strip()
    if not isinstance(error, BaseException):
        text = next((line for line in reversed(text.splitlines()) if line.strip()), "").strip()
        text = QUALIFIED_EXCEPTION.sub("", text)
    text = SOURCE_FILE.sub(lambda m: DOCUMENTED_IN.get(m.group(0), "the README"), text)
    return _one_fix(text)


def _one_fix(text: str) -> str:
    head, *fixes = text.split(FIX)
    if len(fixes) < 2:
        return text
    kept = list(dict.fromkeys(f.strip().rstrip(".") for f in fixes if f.strip()))
    return f"{head}{FIX}{'; then '.join(kept)}."
