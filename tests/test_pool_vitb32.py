"""Done-when check of the real-formats issue: a random ViT-B-32 pool of 1 + 8 checkpoints opens in the dashboard
and serves the merge page (on the CPU here; on a GPU when there is one).

One representative format at this scale: the Hugging Face layout, whose key and shape mapping is the one that
depends on the architecture's depth and width. Every format (tests/foreign.py's FORMATS) serves the pages on
tiny pools in tests/test_views_pool.py; five ViT-B-32 pools cost ~5 minutes of the suite's 20.

The pool is served in a fresh interpreter (`serve_merge_page`): a ViT-B-32 workspace and the test's own
copy of the weights take ~13 GB at peak, which then goes with the process. The pool takes ~5.5 GB of disk (nine
full-CLIP files); it is removed as soon as it is checked."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TASKS = tuple(f"task{i}" for i in range(8))
CLASSES = ("cat", "dog")
ROOT = Path(__file__).resolve().parent.parent
DISK_NEEDED_GB = 6


def serve_merge_page(fmt: str, home: str) -> dict:
    """Write the pool under the data home `home`, open the merge page on it with AppTest, move λ."""
    from streamlit.testing.v1 import AppTest

    from tests.foreign import random_pool, write_image_folders, write_pool
    from tests.test_views import APP, _metric, _open

    pretrained, finetuned, heads = random_pool("ViT-B-32", TASKS)
    root = write_pool(
        Path(home) / "pool", fmt, architecture="ViT-B-32", pretrained=pretrained, finetuned=finetuned, heads=heads
    )
    del pretrained, finetuned
    write_image_folders(root, {task: CLASSES for task in TASKS}, per_class=1, size=32)
    at = AppTest.from_file(APP, default_timeout=600)
    at.session_state["collection"] = str(root)
    if fmt == "tangent":  # linearized fine-tunes, chosen in the sidebar
        for task in TASKS:
            at.session_state[f"ckpt.{task}"] = "linearized"
    _open(at, "views/merge.py")
    first = {
        "exception": bool(at.exception),
        "errors": [e.value for e in at.error],
        "merged": _metric(at, "mean accuracy (merged)") if not at.exception else None,
    }
    at.slider(key="task_arithmetic.lam").set_value(0.5).run()
    return {
        **first,
        "after_slider_exception": bool(at.exception),
        "after_slider_errors": [e.value for e in at.error],
        "merged_at_0.5": _metric(at, "mean accuracy (merged)") if not at.exception else None,
    }


@pytest.mark.slow
def test_a_vit_b_32_pool_serves_the_merge_page(data_home):
    fmt = "hf"
    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from tests.test_pool_vitb32 import serve_merge_page; "
        f"print('RESULT ' + json.dumps(serve_merge_page({fmt!r}, {str(data_home)!r})))"
    )
    env = {**os.environ, "MERGELAB_HOME": str(data_home)}
    free_gb = shutil.disk_usage(data_home.parent).free / 2**30
    assert free_gb > DISK_NEEDED_GB, (
        f"a ViT-B-32 pool needs ~{DISK_NEEDED_GB} GB in {data_home.parent}, "
        f"{free_gb:.1f} GB are free: set TMPDIR or --basetemp to a larger disk"
    )
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    finally:
        shutil.rmtree(data_home, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert not result["exception"] and not result["errors"], result
    assert not result["after_slider_exception"] and not result["after_slider_errors"], result
    assert result["merged"].endswith("%") and result["merged_at_0.5"].endswith("%")
