"""The papers' numbers as data (engine/eval/published.py): lookup by suite × architecture × checkpoint family, the
unknown family, and ours − theirs on a tiny table."""

import json

import pytest

from engine.data.suites import suites
from engine.eval.published import (
    FAMILY_RELEASES,
    PUBLISHED_FILE,
    UNKNOWN_FAMILY,
    Score,
    differences,
    published,
    published_rows,
)
from engine.merge.registry import METHODS

ISO_METHODS = ("zero_shot", "finetuned", "weight_average", "task_arithmetic", "ties", "consensus_ta")
ISO_METHODS += ("tsv_m", "iso_c", "iso_cts")
OPEN_CLIP = "task_vectors / TALL masks"


def tall_masks(suite, arch):
    return {r.method: r for r in published(suite, arch, OPEN_CLIP).rows if r.checkpoints == "TALL masks"}


def test_iso_table_1_is_complete_for_every_suite_and_architecture():
    for suite in suites():
        for arch in ("ViT-B-32", "ViT-B-16", "ViT-L-14"):
            rows = [
                r for r in published(suite, arch, "task_vectors / TALL masks").rows if r.checkpoints == "TALL masks"
            ]
            assert tuple(r.method for r in rows) == ISO_METHODS, (suite, arch)
            assert all(r.source.table == "Table 1" and "2502.04959" in r.source.paper for r in rows)
            merged = [r for r in rows if r.method not in ("zero_shot", "finetuned")]
            assert all(r.normalized is not None and r.normalized > r.accuracy for r in merged)


def test_lookup_gives_the_papers_figures():
    rows = {
        r.method: r
        for r in published("TA8", "ViT-B-32", "task_vectors / TALL masks").rows
        if r.checkpoints == "TALL masks"
    }
    assert (rows["iso_c"].accuracy, rows["iso_c"].normalized) == (86.3, 92.9)
    assert (rows["tsv_m"].accuracy, rows["tsv_m"].normalized) == (85.9, 92.3)
    l14_20 = {r.method: r for r in published("TALL20", "ViT-L-14", "task_vectors / TALL masks").rows}
    assert (l14_20["iso_cts"].accuracy, l14_20["iso_cts"].normalized) == (90.1, 94.9)
    assert l14_20["finetuned"].accuracy == 94.7


def test_fusionbench_family_gets_fusionbench_numbers_only():
    rows = published("TA8", "ViT-B-32", "FusionBench").rows
    assert {r.checkpoints for r in rows} == {"FusionBench"}
    by_method = {r.method: r.accuracy for r in rows}
    assert by_method["iso_c"] == 82.8 and by_method["iso_cts"] == 82.7  # ~3.5 below the paper's 86.3 / 86.2
    assert "clip_vit.md" in next(r for r in rows if r.method == "iso_c").source.paper


def test_unknown_family_is_not_comparable():
    result = published("TA8", "ViT-B-32", "own")
    assert not result.comparable and result.rows == () and result.reason == UNKNOWN_FAMILY
    assert differences({"iso_c": Score(0.9, 0.95)}, result) == ()


def test_known_family_without_numbers_says_which_cell_is_missing():
    result = published("TALL20", "ViT-B-32", "FusionBench")
    assert not result.comparable and "TALL20" in result.reason and "FusionBench" in result.reason


def test_differences_on_a_tiny_table():
    theirs = published("TA8", "ViT-B-32", "task_vectors / TALL masks")
    ours = {"iso_c": Score(0.8712, 0.9401), "task_arithmetic": Score(0.70, None), "magnitude": Score(0.5, 0.5)}
    diffs = differences(ours, theirs)
    iso = next(d for d in diffs if d.row.method == "iso_c")
    assert (iso.accuracy, iso.normalized) == (0.82, 1.11)  # 87.12 − 86.3, 94.01 − 92.9
    ta = [d for d in diffs if d.row.method == "task_arithmetic"]
    assert {d.row.checkpoints: d.accuracy for d in ta} == {
        "TALL masks": -0.8,
        "task_vectors": 0.9,
    }  # 70 − 70.8, 70 − 69.1
    assert all(d.normalized is None for d in ta)
    assert all(d.row.method != "magnitude" for d in diffs)  # no published row: no difference


def test_every_entry_is_well_formed():
    doc = json.loads(PUBLISHED_FILE.read_text(encoding="utf-8"))
    rows = published_rows()
    assert len(rows) == len(doc["entries"])
    families = {c for releases in FAMILY_RELEASES.values() for c in releases}
    for r in rows:
        assert r.suite in suites() and r.checkpoints in families
        assert 0 < r.accuracy <= 100 and (r.normalized is None or 0 < r.normalized <= 100)
        merged_method = r.method not in ("zero_shot", "finetuned", "weight_average", "consensus_ta")
        merged_method = merged_method and r.method not in ("fisher", "regmean", "pcb")
        assert not merged_method or r.method in METHODS, r.method  # mergelab's own name where it has the method
    keys = [(r.suite, r.architecture, r.checkpoints, r.method) for r in rows]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("family", ["own", "", "fusionbench"])
def test_family_names_are_exact(family):
    assert published("TA8", "ViT-B-32", family).reason == UNKNOWN_FAMILY
