"""Warming a pool (engine/jobs/warm.py, `python -m engine warm`): the pages' first-open computations land in the
data home once and are read after; a collection's shipped warm folder serves a fresh data home wherever the
collection is unpacked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from engine.cache.memory import ComputeCache
from engine.cli import main
from engine.jobs.warm import OPENING_METHOD, opening_setting, slow_settings, warm_workspace
from engine.merge import METHODS
from engine.pool.collection import load_collection
from engine.workspace import Workspace
from engine.zoo.warm import SHIPPED


def _files(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its modification time (ns): what a run wrote or rewrote."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def warmed(tiny_collection_dir, tmp_path_factory):
    """The tiny collection warmed once into a data-home cache: (workspace, report, cache folder)."""
    cache = tmp_path_factory.mktemp("warm-cache")
    ws = Workspace.open(tiny_collection_dir, cache_dir=cache)
    return ws, warm_workspace(ws), cache


def test_warm_computes_each_first_open_and_a_second_run_only_reads(warmed, tiny_collection_dir):
    ws, report, cache = warmed
    names = [step.name for step in report.steps]
    assert names[:3] == ["Merge's opening numbers (interactive)", "tangent features (interactive)", "τJp matrix (val)"]
    kinds = [f"importance maps ({k})" for k in ("tau", "theta", "grad0")]
    assert [n for n in names if n.startswith("importance")] == kinds
    assert [n for n in names if n.startswith("parts")] == ["parts: wudi"]  # the tiny pool has no stored comparison
    fresh = Workspace.from_collection(ws.collection, cache_dir=cache, cache=ComputeCache())
    assert fresh.taujp.ready() and all(fresh.importance.ready(k) for k in ("tau", "theta", "grad0"))
    assert fresh.merges.parts_ready(fresh.task_names, "wudi", {}) and not fresh.merges.needs_job(
        fresh.task_names, "wudi", {}
    )
    before = _files(cache)
    again = warm_workspace(fresh)
    assert [s.name for s in again.steps] == names
    assert _files(cache) == before  # nothing computed, so nothing written


def test_a_shipped_warm_folder_serves_a_fresh_data_home_wherever_the_collection_lies(warmed, tmp_path):
    ws, _, cache = warmed
    moved = tmp_path / "elsewhere" / "pool"
    shutil.copytree(ws.collection.root, moved)
    for kind in SHIPPED:
        shutil.copytree(cache / kind, moved / "shipped-warm" / kind)
    manifest = json.loads((moved / "collection.json").read_text())
    (moved / "collection.json").write_text(json.dumps({**manifest, "warm": "shipped-warm"}))

    empty = tmp_path / "empty-home-cache"
    opened = Workspace.open(moved, cache_dir=empty)
    stored = opened._read_stored(
        opened._stored_key(ws.task_names, METHODS[OPENING_METHOD], {}, "interactive"), "interactive", ws.task_names
    )
    assert stored == ws.compare(ws.task_names, OPENING_METHOD, {})  # the Merge page's opening numbers, found here
    assert opened.merges.parts_ready(opened.task_names, "wudi", {}) and not opened.merges.needs_job(
        opened.task_names, "wudi", {}
    )
    torch.testing.assert_close(
        opened.merge(opened.task_names, "wudi", {}), ws.merge(ws.task_names, "wudi", {}), rtol=0, atol=0
    )
    preview = opened.taujp.tangent_preview("interactive")
    assert not (empty / "jvp").exists() and not (empty / "merge_parts").exists()  # read from the shipped folder
    original = ws.taujp.tangent_preview("interactive")
    for task in ws.task_names:
        torch.testing.assert_close(preview.products[task], original.products[task], rtol=0, atol=0)


def test_a_stored_comparison_is_read_exactly_instead_of_evaluated(warmed, monkeypatch, tmp_path):
    """The numbers warming stored come back exactly, and a fresh workspace's compare evaluates nothing for them;
    another setting, or the same setting once the evaluation data changed, is not found."""
    import engine.workspace

    ws, _, cache = warmed
    computed = Workspace.from_collection(ws.collection, cache_dir=tmp_path / "other-cache", cache=ComputeCache())
    expected = computed.compare(ws.task_names, OPENING_METHOD, {})  # evaluated: no stored numbers there
    pool = tmp_path / "pool"
    shutil.copytree(ws.collection.root, pool)  # files keep their mtimes: the same evaluation data
    fresh = Workspace.from_collection(load_collection(pool), cache_dir=cache, cache=ComputeCache())
    monkeypatch.setattr(engine.workspace, "evaluate", None)  # any evaluation now fails
    assert fresh.compare(ws.task_names, OPENING_METHOD, {}) == expected
    with pytest.raises(TypeError):
        fresh.compare(ws.task_names, OPENING_METHOD, {"lam": 0.5})
    key = fresh._stored_key(ws.task_names, METHODS[OPENING_METHOD], {}, "interactive")
    data = fresh.collection.path(fresh.collection.manifest.tasks[ws.task_names[0]].data)
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 1_000_000_000))  # rewritten, maybe
    assert fresh._stored_key(ws.task_names, METHODS[OPENING_METHOD], {}, "interactive") != key


def test_a_slow_method_opens_at_the_setting_the_stored_comparison_chose(tiny_collection_dir, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(tiny_collection_dir, pool)
    rows = [{"method": "wudi", "params": {"steps": 40.0, "alpha": 0.7}}, {"method": "ties", "params": {"lam": 0.9}}]
    (pool / "report.json").write_text(json.dumps({"methods": {"results": rows}}))
    report = load_collection(pool).build_report()
    assert opening_setting(report, METHODS["wudi"]) == {"steps": 40.0}  # its scale α is a cheap slider
    assert opening_setting(report, METHODS["ties"]) == {}  # not slow: its declared defaults, as links expect
    assert opening_setting(load_collection(tiny_collection_dir).build_report(), METHODS["wudi"]) == {}
    ws = Workspace.open(pool, cache_dir=tmp_path / "cache")
    assert slow_settings(ws) == {"wudi": {"steps": 40.0}}


def test_the_warm_command_prints_its_report_and_fills_the_data_home(tiny_collection_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MERGELAB_HOME", str(tmp_path / "home"))
    assert main(["warm", "--collection", str(tiny_collection_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tasks"] and [s["name"] for s in printed["steps"]][-1] == "parts: wudi"
    assert any((tmp_path / "home" / "cache" / "merge_parts").iterdir())


def test_a_method_with_other_defaults_keeps_its_bounds_and_refuses_unknown_names():
    from engine.errors import ParameterError

    wudi = METHODS["wudi"].with_defaults({"steps": 1000.0})
    assert [p.default for p in wudi.params if p.name == "steps"] == [1000.0] and wudi.name == "wudi"
    assert [(p.low, p.high) for p in wudi.params] == [(p.low, p.high) for p in METHODS["wudi"].params]
    with pytest.raises(ParameterError, match="stpes"):
        METHODS["wudi"].with_defaults({"stpes": 10.0})
