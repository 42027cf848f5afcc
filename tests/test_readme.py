"""Every README command example of the engine runs as written, from a folder laid out as the repository root.

The folder links the checkout's `engine/`, `assets/` and `.venv/` (so nothing is written into the checkout),
HOME and MERGELAB_HOME point into the test's own folder, the recipe example is saved as the README says, and
HOME's Hugging Face cache holds a FusionBench-style TA8 pool (a tiny model, the eight tasks' datasets).
The `zoo` build commands are left out: they take long and rewrite assets/zoo.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.builders import TINY_ARCH
from tests.foreign import tiny_source
from tests.hf_fixtures import write_fusion_bench_cache

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_blocks(language: str = "") -> list[str]:
    """The fenced blocks opened with ```language, in order (fences alternate: open, close)."""
    blocks, current, opened_as = [], None, None
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current, opened_as = [], line[3:].strip()
            else:
                if opened_as == language:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def engine_commands() -> list[str]:
    """Commands in plain code blocks, and inline `.venv/bin/python -m engine ...` commands in the text."""
    lines = [line.split("  #")[0].strip() for block in _code_blocks() for line in block.splitlines()]
    lines += re.findall(r"`(\.venv/bin/python -m engine [^`]+)`", README)
    return [line for line in lines if line.startswith(".venv/bin/python -m engine") and " zoo " not in line]


def test_the_readme_shows_every_kind_of_engine_command():
    kinds = {command.split()[3] for command in engine_commands()}
    assert {"methods", "eval", "merge", "run", "pool", "suites"} <= kinds
    assert {"finetune", "learn", "taujp", "importance", "compare", "landscape", "parts", "job"} <= {
        word for command in engine_commands() for word in command.split()
    }


@pytest.fixture(scope="module")
def repository_root(tmp_path_factory) -> Path:
    here = tmp_path_factory.mktemp("readme")
    root = here / "repo"
    root.mkdir()
    for name in ("engine", "assets", ".venv"):
        assert (ROOT / name).exists(), f"{ROOT / name} is missing: run `make test`, which creates .venv"
        (root / name).symlink_to(ROOT / name)
    (root / "recipe.yaml").write_text(next(b for b in _code_blocks("yaml") if "method: ties" in b))
    (here / "home").mkdir()
    _fusion_bench_ta8(here / "home" / ".cache" / "huggingface" / "hub", here / "scratch")
    return root


def _fusion_bench_ta8(hub: Path, scratch: Path) -> None:
    source = tiny_source(TINY_ARCH, {"any": ("a", "b")}, seed=2)
    tasks = {
        "sun397": "tanganke/sun397",
        "stanford-cars": "tanganke/stanford_cars",
        "resisc45": "tanganke/resisc45",
        "eurosat": "tanganke/eurosat",
        "svhn": "ufldl-stanford/svhn",
        "gtsrb": "tanganke/gtsrb",
        "mnist": "ylecun/mnist",
        "dtd": "tanganke/dtd",
    }
    write_fusion_bench_cache(
        hub,
        scratch,
        base="clip-vit-tiny",
        architecture=TINY_ARCH,
        pretrained=source["pretrained"],
        finetuned={task: source["finetuned"]["any"] for task in tasks},
        datasets_of={task: (dataset_id, {"train": [0, 1] * 10, "test": [1, 0]}) for task, dataset_id in tasks.items()},
    )


@pytest.mark.slow  # ~35 engine processes: minutes
@pytest.mark.parametrize("command", engine_commands())
def test_a_readme_command_runs_as_written(command, repository_root):
    env = {
        **os.environ,
        "HOME": str(repository_root.parent / "home"),
        "MERGELAB_HOME": str(repository_root.parent / "mergelab-home"),
    }
    done = subprocess.run(
        command, shell=True, cwd=repository_root, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{command} printed nothing"
