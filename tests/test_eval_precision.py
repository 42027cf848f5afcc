"""bfloat16 against float32 evaluation on the zoo: bench/results/eval_precision_zoo.json (bench/eval_precision_zoo.py
writes it over every zoo number) is recomputed here for a subset, and its summary from its own rows."""

import json

import pytest

from bench.eval_precision_zoo import OUT, ZOO, _cpu_bf16_flags, compare, summary
from engine.workspace import Workspace


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads(OUT.read_text(encoding="utf-8"))


@pytest.mark.stored_data
def test_stored_summary_follows_from_its_rows(stored):
    assert stored["summary"] == summary(stored["models"])
    names = set(stored["models"])
    assert {"zero_shot", "task_arithmetic", "ties", "tsv_m", "iso_c", "iso_cts"} <= names
    assert sum(n.startswith("finetuned/") for n in names) == 8


def test_zoo_precision_effect_recomputes_for_a_subset(stored, tmp_path):
    """Exact where this CPU has the bf16 units the stored run had (the same kernels); else within a few images."""
    ws = Workspace.open(ZOO, cache_dir=tmp_path)
    m = ws.matrix
    k = m.task_names.index("digits")
    cases = {"finetuned/digits": (m.theta0 + m.T[k], ("digits",)), "zero_shot": (m.theta0, ("size", "position"))}
    same_units = _cpu_bf16_flags() == stored["cpu_bf16_units"]
    for name, (params, tasks) in cases.items():
        got = compare(ws, params, tasks)
        for task, cell in got.items():
            want = stored["models"][name][task]
            assert cell["float32"] == want["float32"], (name, task)
            if same_units:
                assert (cell["bfloat16"], cell["changed"]) == (want["bfloat16"], want["changed"]), (name, task)
            else:
                slack = max(2, cell["images"] // 100)
                assert abs(cell["changed"] - want["changed"]) <= slack, (name, task)
