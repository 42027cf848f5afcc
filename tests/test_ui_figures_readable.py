"""Every figure builder's output is readable in front of a class: a title, titled axes whose tick labels get the
room they need (automargin: plotly grows the margin to fit them, so "Task arithmetic" is never cut to "3)"), a
titled colour bar on every heatmap, a colour range and an axis range that contain the data, and no bar label
drawn where markers sit. Every public builder is listed in SAMPLES, so a new one cannot skip the check.

Tables: every table a view shows gets column widths that fit its longest cell (ui/tables.py)."""

from __future__ import annotations

import inspect
import math

import plotly.graph_objects as go
import pytest
import torch

from engine.eval.benchmark import Benchmark, MethodRow
from engine.eval.evaluate import EvalResult
from engine.eval.published import Published, PublishedRow, Source
from engine.eval.results import MergeComparison, Sweep
from engine.jobs.compare import MethodResult, MethodsComparison
from engine.jobs.finetune import FinetuneCurves
from engine.jobs.landscape import Landscape
from engine.jobs.learn import LearnCurves
from engine.jobs.plane import storage_plane
from engine.merge.analysis import SparsityReport
from engine.merge.forgetting import ForgettingCurve
from engine.merge.spectra import alignment_vs_taujp, subspace_stats
from engine.params import ParamSpec
from engine.runs.log import Run
from engine.search.logged import Coordinates, ObjectivePlane
from engine.sta.codes import encode
from engine.sta.stats import importance_summary
from engine.taujp.matrix import TauJpMatrix
from ui import figures
from ui.figures.style import category_axes

TASKS = ("digits", "faces", "textures")
LAYERS = ("transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.1.mlp.c_fc.weight", "ln_post")


def _comparison():
    merged = EvalResult("interactive", dict.fromkeys(TASKS, 60), dict.fromkeys(TASKS, 100), dict.fromkeys(TASKS, 0.6))
    return MergeComparison("interactive", TASKS, merged, dict.fromkeys(TASKS, 0.4), dict.fromkeys(TASKS, 0.9))


def _sweep():
    per_task = {t: (0.2, 0.7, 0.5) for t in TASKS}
    return Sweep("val", "lam", (0.0, 0.5, 1.0), (0.3, 0.6, 0.4), (0.4, 0.8, 0.5), per_task)


def _matrix(scale: float = 1.0):
    values = scale * torch.tensor([[5.0, 1.0, 2.0], [0.5, 4.0, 3.0], [1.5, 2.5, 6.0]], dtype=torch.float64)
    return TauJpMatrix(TASKS, TASKS, values, "val", (10, 10, 10))


def _importance():
    spec = ParamSpec(("blocks.resblocks.0.w", "proj"), ((6,), (2,)))
    codes = encode(torch.tensor([[0.0, 0.5, 1.0, 0.01, 0.2, 0.9, 0.3, 0.05], [1.0] * 8]))
    return importance_summary(codes, spec, tasks=["a", "b"], threshold=0.25)


def _stats():
    spec = ParamSpec(("a.weight", "b.weight"), ((6, 4), (4, 4)))
    torch.manual_seed(0)
    return subspace_stats(torch.randn(3, spec.numel), spec, TASKS)


LEARN_JSON = {
    "epochs": [
        {"stage": "atlas", "iteration": 0, "epoch": 1, "loss": 2.0, "selection": 0.5},
        {"stage": "dv-basi", "iteration": 1, "epoch": 1, "loss": 1.4, "selection": 0.62},
    ],
    "iterations": [{"iteration": 1, "delta_norm": 3.0, "selection": {"a": 0.6, "b": 0.64}, "scales": [0.1, -0.2]}],
}


def _learn():
    return LearnCurves.from_json(LEARN_JSON)


def _run(i: int, accuracy: dict) -> Run:
    return Run(i, "t", "merge", "done", "task_arithmetic", tuple(accuracy), {}, {"accuracy": accuracy}, 1.0, "cpu", {})


def _methods():
    rows = (
        MethodResult("task_arithmetic", {"lam": 0.3}, 21, 0.7, {t: 0.6 for t in TASKS}, 0.7, 0.75),
        MethodResult("tsv_m", {"alpha": 1.2}, 30, 0.8, {t: 0.9 for t in TASKS}, 0.8, 1.02),  # above 100%
    )
    return MethodsComparison(TASKS, rows)


def _benchmark(*, comparable: bool = True) -> Benchmark:
    rows = tuple(
        MethodRow(m, {}, 3, None, dict(zip(TASKS, acc)), dict(zip(TASKS, acc)))
        for m, acc in (("zero_shot", (0.3, 0.5, 0.4)), ("finetuned", (0.9, 1.0, 0.95)), ("iso_c", (0.8, 0.7, 0.9)))
    )
    theirs = PublishedRow(
        "TA8", "ViT-B-32", "FusionBench", "iso_c", "Iso-C", 82.8, None, Source("FusionBench docs", "t")
    )
    published = Published(
        "TA8", "ViT-B-32", "FusionBench", (theirs,) if comparable else (), None if comparable else "x"
    )
    names = {"zero_shot": "Zero-shot", "finetuned": "Fine-tuned", "iso_c": "Iso-C"}
    return Benchmark({}, TASKS, ("iso_c",), rows, published, names=names)


def _landscape():
    grid = ((0.5, 0.9), (0.95, 1.012))  # the best cell above 100%, as on the demo zoo
    return Landscape(("digits", "faces"), (0.0, 1.0), "interactive", grid, grid)


LEARNED = [
    {"method": "task arithmetic (λ = 0.3)", "supervised": 0.7, "unsupervised": 0.7},
    {"method": "aTLAS + random-direction control", "supervised": 0.8, "unsupervised": 0.75},
]
VARIANTS = {
    "standard": {
        "averages": {"finetuned_test": 0.9, "ta_best_test": 0.7, "ta_one_test": 0.5},
        "task_arithmetic": {"best_lambda": 0.3, "val_curve": [{"lam": 0.0, "mean_accuracy": 0.5}]},
        "taujp": {"mean_off_diagonal": 2.0},
    }
}
SAMPLES = {
    "accuracy_bars": lambda: figures.accuracy_bars(_comparison(), preview=dict.fromkeys(TASKS, 0.5)),
    "preview_bars": lambda: figures.preview_bars(dict.fromkeys(TASKS, 0.5)),
    "sweep_chart": lambda: figures.sweep_chart(_sweep(), current=0.3),
    "sign_conflict_bars": lambda: figures.sign_conflict_bars(SparsityReport(("a",), {"a": 1.0}, LAYERS, (0.1,) * 3)),
    "parts_loss_curve": lambda: figures.parts_loss_curve([4.0, 3.0, 2.0], method="WUDI"),
    "similarity_heatmap": lambda: figures.similarity_heatmap(torch.eye(3), TASKS),
    "forgetting_chart": lambda: figures.forgetting_chart(
        ForgettingCurve("digits", TASKS[1:], "val", (0.0, 1.0), (0.9, 0.1), (0.8, 0.78)), alpha=1.0
    ),
    "importance_histograms": lambda: figures.importance_histograms(_importance()),
    "mask_overlap_heatmap": lambda: figures.mask_overlap_heatmap(_importance()),
    "layer_importance_heatmap": lambda: figures.layer_importance_heatmap(_importance()),
    "taujp_heatmap": lambda: figures.taujp_heatmap(_matrix()),
    "taujp_variant_heatmaps": lambda: figures.taujp_variant_heatmaps({"standard": _matrix(), "tau_jp": _matrix(0.1)}),
    "taujp_diagonal_bars": lambda: figures.taujp_diagonal_bars(_matrix()),
    "interference_scatter": lambda: figures.interference_scatter(
        _matrix(), {("digits", "faces"): 0.02, ("faces", "digits"): 0.05}, lam=0.3
    ),
    "layer_bars": lambda: figures.layer_bars(dict(zip(LAYERS, (1.0, 2.0, 3.0))), vector="digits", task="faces"),
    "variant_curves": lambda: figures.variant_curves(VARIANTS),
    "finetune_curves": lambda: figures.finetune_curves(
        FinetuneCurves((1, 2), (2.0, 1.0), (0.1, 0.2), (2,), (0.7,)), beta=1.0
    ),
    "learning_curves": lambda: figures.learning_curves(_learn()),
    "iteration_accuracy": lambda: figures.iteration_accuracy(_learn()),
    "scales_heatmap": lambda: figures.scales_heatmap(_learn(), ["w1", "w2"]),
    "learned_runs_overlay": lambda: figures.learned_runs_overlay(
        [Run(3, "t", "learn", "done", "atlas", TASKS, {}, {"curves": LEARN_JSON}, 1.0, "cpu", {})]
    ),
    "learned_bars": lambda: figures.learned_bars(LEARNED, objective="supervised"),
    "spectrum_chart": lambda: figures.spectrum_chart(_stats(), "a.weight"),
    "pipeline_spectrum_chart": lambda: figures.pipeline_spectrum_chart(
        {"TSV-M (task singular vectors)": torch.tensor([3.0, 1.0, 0.1]), "TSV-M → SVC": torch.tensor([2.0, 1.5, 0.2])},
        "a.weight",
    ),
    "top_share_heatmap": lambda: figures.top_share_heatmap(_stats()),
    "alignment_heatmap": lambda: figures.alignment_heatmap(_stats().overall_alignment, TASKS, title="alignment"),
    "agreement_scatter": lambda: figures.agreement_scatter(
        alignment_vs_taujp(_stats(), _matrix().values, TASKS, TASKS)
    ),
    "methods_chart": lambda: figures.methods_chart(_methods()),
    "benchmark_task_bars": lambda: figures.benchmark_task_bars(_benchmark()),
    "benchmark_published_chart": lambda: [
        figures.benchmark_published_chart(_benchmark()),
        figures.benchmark_published_chart(_benchmark(comparable=False)),
    ],
    "storage_plane_chart": lambda: figures.storage_plane_chart(
        storage_plane(_methods(), numel=1000, finetuned=dict.fromkeys(TASKS, 0.9))
    ),
    "landscape_heatmap": lambda: figures.landscape_heatmap(_landscape()),
    "runs_comparison": lambda: figures.runs_comparison([_run(1, {"digits": 0.5}), _run(2, {"faces": 0.9})]),
    "job_curve": lambda: figures.job_curve("merge_parts", {"loss": [3.0, 2.0]}, name="WUDI"),
    "objective_plane_chart": lambda: figures.objective_plane_chart(
        ObjectivePlane("digits", "worst", (0.5, 0.7, 0.6), (0.4, 0.3, 0.5), (0, 1, 2), (0, 2), 2)
    ),
    "coordinates_chart": lambda: figures.coordinates_chart(
        Coordinates(("λ digits", "λ faces"), ((0.1, 0.3), (0.2, 0.4)), (0.7, 0.8))
    ),
}


def _figure_builders() -> set[str]:
    return {
        name
        for name in figures.__all__
        if callable(getattr(figures, name))
        and name != "for_projector"  # a figure in, not a builder
        and "Figure" in str(inspect.signature(getattr(figures, name)).return_annotation)
    }


def test_every_figure_builder_has_a_sample():
    assert _figure_builders() == set(SAMPLES)


def _axes_used(fig: go.Figure) -> set[str]:
    """Layout names of the cartesian axes the traces draw on ("xaxis", "yaxis", "yaxis2")."""
    used = set()
    for trace in fig.data:
        if trace.type in ("parcoords",):
            continue
        used.add("xaxis" + (trace.xaxis or "x")[1:])
        used.add("yaxis" + (trace.yaxis or "y")[1:])
    return used


def _values(trace, axis: str) -> list[float]:
    raw = getattr(trace, axis[0], None)
    return [v for v in (raw or ()) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def readability_problems(fig: go.Figure) -> list[str]:
    """What would make `fig` hard to read on a screen, in words (empty: nothing)."""
    problems = []
    if not (fig.layout.title.text or "").strip():
        problems.append("no title")
    for axis in sorted(_axes_used(fig)):
        layout_axis = fig.layout[axis]
        if not (layout_axis.title.text or "").strip():
            problems.append(f"{axis} has no title")
        if layout_axis.showticklabels is not False and layout_axis.automargin is not True:
            problems.append(f"{axis}: tick labels may be cut (automargin off)")
        named = axis in category_axes(fig) and layout_axis.type in (None, "category")
        if named and layout_axis.tickmode != "array" and layout_axis.dtick != 1:
            problems.append(f"{axis}: plotly may draw every second name (no dtick=1)")
        if layout_axis.range is not None and layout_axis.type != "log":
            low, high = layout_axis.range
            for trace in fig.data:
                on = ("xaxis" + (trace.xaxis or "x")[1:], "yaxis" + (trace.yaxis or "y")[1:])
                outside = [v for v in _values(trace, axis) if axis in on and not low <= v <= high]
                if outside and trace.type != "heatmap":
                    problems.append(f"{axis} range {low}–{high} cuts {trace.name}'s {outside[0]}")
    for trace in fig.data:
        if trace.type == "heatmap":
            problems += _heatmap_problems(trace)
        if trace.type == "parcoords" and not (trace.line.colorbar.title.text or "").strip():
            problems.append("parallel coordinates: colour bar without a title")
    labelled_bars = any(t.type == "bar" and t.text is not None for t in fig.data)
    markers = any(t.type == "scatter" and "markers" in (t.mode or "") and t.marker.opacity != 0 for t in fig.data)
    if labelled_bars and markers:
        problems.append("bar labels drawn where markers sit")
    return problems


def _heatmap_problems(trace) -> list[str]:
    problems = []
    if trace.showscale is False:
        problems.append("heatmap without a colour bar")
    if not (trace.colorbar.title.text or "").strip():
        problems.append("heatmap colour bar without a title")
    cells = [v for row in trace.z for v in row if v is not None]
    if trace.zmin is not None and min(cells) < trace.zmin:
        problems.append(f"colour range starts at {trace.zmin} above the data's {min(cells)}")
    if trace.zmax is not None and max(cells) > trace.zmax:
        problems.append(f"colour range stops at {trace.zmax} below the data's {max(cells)}")
    return problems


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_figure_is_readable(name):
    built = SAMPLES[name]()
    for fig in built if isinstance(built, list) else [built]:
        assert readability_problems(fig) == [], name
        assert readability_problems(figures.for_projector(go.Figure(fig))) == [], f"{name} in presenter mode"


def test_the_check_catches_what_the_issue_saw():
    cut = go.Figure(go.Bar(x=[0.5], y=["Task arithmetic"], orientation="h")).update_layout(
        title="t", xaxis_title="x", yaxis_title="y", margin=dict(l=10)
    )
    assert "yaxis: tick labels may be cut (automargin off)" in readability_problems(cut)
    heat = go.Figure(go.Heatmap(z=[[0.5, 1.012]], zmin=0, zmax=1, showscale=False)).update_layout(title="t")
    found = readability_problems(heat)
    assert "heatmap without a colour bar" in found and "colour range stops at 1 below the data's 1.012" in found
    assert "xaxis has no title" in found
    skipped = go.Figure(go.Heatmap(z=[[1, 2]], x=["a", "b"], y=["c"], colorbar_title="z")).update_layout(title="t")
    assert "xaxis: plotly may draw every second name (no dtick=1)" in readability_problems(skipped)


def test_column_widths_fit_the_longest_cell():
    from ui.tables import CHAR_PX, fitted_columns

    rows = [{"task": "(pretrained, image tower)", "zero-shot": "63.5% (mean)", "in use": True, "size": 88000}]
    config = fitted_columns(rows, {"size": {"label": "size (kB)", "type_config": {}, "width": "small"}})
    assert config["zero-shot"]["width"] >= len("63.5% (mean)") * CHAR_PX
    assert config["task"]["width"] >= len("(pretrained, image tower)") * CHAR_PX
    assert config["size"]["width"] >= len("size (kB)") * CHAR_PX and config["size"]["label"] == "size (kB)"
    columns = fitted_columns({"acc": [0.5, 0.25]}, {"acc": {"type_config": {"format": "percent"}}})
    assert columns["acc"]["width"] < fitted_columns({"acc": ["a" * 20]})["acc"]["width"]


def test_the_zoo_tables_give_every_column_the_width_of_its_content(data_home):
    """On the demo zoo, as the issue saw it: every column of every table on the Zoo page is a pixel width that
    holds its longest cell (the "zero-shot" column held "63.5% (mean)" in 75 px)."""
    import json

    from streamlit.testing.v1 import AppTest

    from engine.home import ASSETS_DIR
    from tests.test_views import APP
    from ui.tables import CHAR_PX

    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["collection"] = str(ASSETS_DIR / "zoo")
    at.run()
    at.switch_page("views/zoo.py").run()
    assert not at.exception
    tables = [d for d in at.dataframe if "zero-shot" in d.value.columns or "variant" in d.value.columns]
    assert len(tables) == 2
    for table in tables:
        config = json.loads(table.proto.columns)
        for name in table.value.columns:
            longest = max((len(str(v)) for v in table.value[name] if not isinstance(v, float)), default=0)
            width = config[name]["width"]
            assert isinstance(width, int) and width >= longest * CHAR_PX, (name, width)
