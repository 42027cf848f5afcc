import pytest
import torch

from engine.eval.evaluate import EvalResult
from engine.eval.results import MergeComparison, Sweep
from ui.figures import accuracy_bars, similarity_heatmap, sweep_chart


def _comparison():
    merged = EvalResult("interactive", {"a": 60, "b": 30}, {"a": 100, "b": 50}, {"a": 0.75, "b": 0.6})
    return MergeComparison("interactive", ("a", "b"), merged, {"a": 0.4, "b": 0.2}, {"a": 0.8, "b": 1.0})


def test_accuracy_bars_carry_the_three_series():
    fig = accuracy_bars(_comparison())
    series = {trace.name: list(trace.y) for trace in fig.data}
    assert series == {"zero-shot": [0.4, 0.2], "merged": [0.6, 0.6], "fine-tuned": [0.8, 1.0]}
    assert list(fig.data[0].x) == ["a", "b"]
    assert "60.0%" in fig.layout.title.text


def test_sweep_chart_marks_the_best_value():
    sweep = Sweep(
        "val", "lam", (0.0, 0.5, 1.0), (0.3, 0.6, 0.4), (0.4, 0.8, 0.5), {"a": (0.2, 0.7, 0.5), "b": (0.4, 0.5, 0.3)}
    )
    fig = sweep_chart(sweep)
    mean = [t for t in fig.data if t.name == "mean"][0]
    assert list(mean.y) == [0.3, 0.6, 0.4] and len(fig.data) == 3
    assert fig.layout.shapes[0].x0 == 0.5


def test_similarity_heatmap_values_and_labels():
    fig = similarity_heatmap(torch.tensor([[1.0, 0.25], [0.25, 1.0]]), ["a", "b"])
    assert fig.data[0].z == ((1.0, 0.25), (0.25, 1.0)) or [list(r) for r in fig.data[0].z] == [[1.0, 0.25], [0.25, 1.0]]
    assert list(fig.data[0].x) == ["a", "b"]


def test_runs_comparison_overlays_runs_per_task():
    from engine.runs.log import Run
    from ui.figures import runs_comparison

    a = Run(
        1, "t", "merge", "done", "task_arithmetic", ("x", "y"), {}, {"accuracy": {"x": 0.5, "y": 0.7}}, 1.0, "cpu", {}
    )
    b = Run(2, "t", "sweep", "done", "task_arithmetic", ("y",), {}, {"accuracy": {"y": 0.9}}, 1.0, "cpu", {})
    fig = runs_comparison([a, b])
    assert [list(t.y) for t in fig.data] == [[0.5, 0.7], [None, 0.9]]
    assert list(fig.data[0].x) == ["x", "y"] and fig.data[1].name.startswith("#2 sweep")


def test_forgetting_chart_marks_the_chosen_alpha():
    from engine.merge.forgetting import ForgettingCurve
    from ui.figures import forgetting_chart

    curve = ForgettingCurve("t", ("a",), "val", (0.0, 1.0, 2.0), (0.9, 0.3, 0.1), (0.8, 0.78, 0.5))
    fig = forgetting_chart(curve, alpha=2.0)
    assert [list(t.y) for t in fig.data] == [[0.9, 0.3, 0.1], [0.8, 0.78, 0.5]]
    xs = [s.x0 for s in fig.layout.shapes if s.x0 is not None and s.x0 == s.x1]
    assert 1.0 in xs and 2.0 in xs


def test_importance_figures_show_the_summary():
    from engine.params import ParamSpec
    from engine.sta.codes import encode
    from engine.sta.stats import importance_summary
    from ui.figures import importance_histograms, layer_importance_heatmap, mask_overlap_heatmap

    spec = ParamSpec(("blocks.resblocks.0.w", "proj"), ((6,), (2,)))
    codes = encode(torch.tensor([[0.0, 0.5, 1.0, 0.01, 0.2, 0.9, 0.3, 0.05], [1.0] * 8]))
    summary = importance_summary(codes, spec, tasks=["a", "b"], threshold=0.25)
    hist = importance_histograms(summary)
    assert [t.name for t in hist.data] == ["a (12.5% < 1e-6)", "b (0.0% < 1e-6)"]
    assert sum(hist.data[0].y) == pytest.approx(7 / 8) and hist.data[1].y[-1] == 1.0
    assert [list(row) for row in mask_overlap_heatmap(summary).data[0].z] == [[1.0, 0.5], [0.5, 1.0]]
    assert [row[0] for row in layer_importance_heatmap(summary).data[0].z] == pytest.approx((3 / 6, 1 / 2))


def test_forgetting_table_rows_from_a_stored_report():
    from ui.figures import forgetting_table

    stored = {
        "sta": {
            "succeeded": True,
            "outcome": {
                "alpha": 1.5,
                "target_accuracy": 0.2,
                "pretrained_target": 0.6,
                "chance": 0.1,
                "control_accuracy": 0.57,
                "pretrained_control": 0.6,
            },
        }
    }
    (row,) = forgetting_table(stored)
    assert row["chosen α"] == "1.50" and row["forgotten"] is True
    assert row["control / pretrained"] == pytest.approx(0.95) and row["method"].startswith("STA masked negation")


def _matrix(scale: float = 1.0):
    from engine.taujp.matrix import TauJpMatrix

    values = scale * torch.tensor([[5.0, 1.0, 2.0], [0.5, 4.0, 3.0], [1.5, 2.5, 6.0]], dtype=torch.float64)
    return TauJpMatrix(("a", "b", "c"), ("a", "b", "c"), values, "val", (10, 10, 10))


def test_taujp_heatmap_blanks_the_diagonal_and_has_clickable_cells():
    from ui.figures import clicked_cell, taujp_heatmap

    fig = taujp_heatmap(_matrix())
    heat, cells = fig.data
    assert heat.z[0][0] is None and heat.z[0][1] == 1.0 and heat.z[2][1] == 2.5
    assert len(cells.x) == 6 and all(x != y for x, y in zip(cells.x, cells.y))
    picked = {"selection": {"points": [{"x": cells.x[3], "y": cells.y[3], "curve_number": 1}]}}
    assert clicked_cell(picked) == (cells.y[3], cells.x[3])
    assert clicked_cell({"selection": {"points": []}}) is None and clicked_cell(None) is None


def test_variant_heatmaps_share_one_colour_scale_and_report_off_diagonal_means():
    from ui.figures import taujp_variant_heatmaps

    figs = taujp_variant_heatmaps({"linearized": _matrix(), "tau_jp": _matrix(0.1)})
    assert [f.data[0].zmax for f in figs] == [3.0, 3.0]
    assert "1.75" in figs[0].layout.title.text and "0.175" in figs[1].layout.title.text


def test_finetune_curves_draw_loss_penalty_and_val_accuracy():
    from dataclasses import replace

    from engine.jobs.finetune import FinetuneCurves
    from ui.figures import finetune_curves

    curves = FinetuneCurves((1, 2, 3), (2.0, 1.5, 1.0), (0.0, 0.4, 0.3), (0, 3), (0.3, 0.7))
    fig = finetune_curves(curves, beta=1.0)
    assert [t.name for t in fig.data] == ["cross-entropy", "τJp penalty R (× β = 1 in the loss)", "val accuracy"]
    assert list(fig.data[2].y) == [0.3, 0.7] and fig.data[2].yaxis == "y2"
    plain = finetune_curves(replace(curves, penalty=(None, None, None)))
    assert [t.name for t in plain.data] == ["cross-entropy", "val accuracy"]


def test_variant_table_and_curves_read_the_build_report():
    from ui.figures import variant_curves, variants_table

    def variant(best, one, off):
        return {
            "averages": {"finetuned_test": 0.9, "ta_best_test": best, "ta_one_test": one},
            "task_arithmetic": {
                "best_lambda": 0.3,
                "val_curve": [{"lam": 0.0, "mean_accuracy": 0.5}, {"lam": 1.0, "mean_accuracy": one}],
            },
            "taujp": {"mean_off_diagonal": off},
        }

    variants = {"standard": variant(0.72, 0.55, 11.0), "tau_jp": variant(0.86, 0.86, 1.0)}
    rows = variants_table(variants)
    assert [r["variant"] for r in rows] == ["standard", "tau_jp"] and rows[1]["mean off-diagonal τJp"] == 1.0
    fig = variant_curves(variants)
    assert [t.name for t in fig.data] == ["standard", "tau_jp"] and list(fig.data[0].y) == [0.5, 0.55]


def test_learning_figures_mark_iterations_and_show_scales():
    from engine.jobs.learn import LearnCurves
    from ui.figures import iteration_accuracy, learning_curves, scales_heatmap

    data = {
        "epochs": [
            {"stage": "atlas", "iteration": 0, "epoch": 1, "loss": 2.0, "selection": 0.5},
            {"stage": "atlas", "iteration": 0, "epoch": 2, "loss": 1.5, "selection": 0.6},
            {"stage": "dv-basi", "iteration": 1, "epoch": 1, "loss": 1.4, "selection": 0.62},
        ],
        "iterations": [{"iteration": 1, "delta_norm": 3.0, "selection": {"a": 0.6, "b": 0.64}, "scales": [0.1, -0.2]}],
    }
    curves = LearnCurves.from_json(data)  # the JSON a job reports and the run log keeps
    fig = learning_curves(curves)
    assert list(fig.data[0].y) == [2.0, 1.5, 1.4] and fig.layout.shapes[0].x0 == 2.5
    acc = iteration_accuracy(curves)
    assert [t.name for t in acc.data] == ["a", "b", "mean", "‖δ‖"] and acc.data[2].y[0] == pytest.approx(0.62)
    heat = scales_heatmap(curves, ["w1", "w2"])
    assert list(heat.data[0].x) == ["w1", "w2"] and list(heat.data[0].z[0]) == [0.1, -0.2]
    assert list(
        scales_heatmap(
            LearnCurves.from_json({"iterations": [{**data["iterations"][0], "scales": [0.3]}]}), ["w1", "w2"]
        )
        .data[0]
        .x
    ) == ["all (isotropic)"]


def test_learned_table_lists_every_method_per_objective():
    from ui.figures import learned_table

    entry = {"test_mean": 0.8}
    learned = {
        "task_arithmetic": {"lambda": 0.3, "test_mean": 0.72},
        **{
            o: {k: entry for k in ("atlas", "dv_basi", "isotropic", "random_direction", "dv_basi_from_task_arithmetic")}
            for o in ("supervised", "unsupervised")
        },
    }
    rows = learned_table(learned)
    assert rows[0] == {"method": "task arithmetic (λ = 0.3)", "supervised": 0.72, "unsupervised": 0.72}
    assert [r["method"] for r in rows][1:3] == ["aTLAS", "aTLAS + DV-BASI"] and len(rows) == 6
    for objective, mean in (("supervised", 0.9), ("unsupervised", 0.85)):
        learned[objective] = {
            **learned[objective],
            "dv_basi_from_tau_jp": {"test_mean": mean, "start": {"lambda": 1.0, "test_mean": 0.88}},
        }
    rows = learned_table(learned)
    assert rows[-2] == {"method": "τJp task arithmetic (λ = 1, linearized)", "supervised": 0.88, "unsupervised": 0.88}
    assert rows[-1] == {"method": "τJp TA + DV-BASI", "supervised": 0.9, "unsupervised": 0.85} and len(rows) == 8


def test_subspace_figures_draw_the_engine_statistics():
    from engine.merge.spectra import alignment_vs_taujp, subspace_stats
    from engine.params import ParamSpec
    from ui.figures import agreement_scatter, alignment_heatmap, spectrum_chart, top_share_heatmap

    spec = ParamSpec(("a.weight", "b.weight"), ((6, 4), (4, 4)))
    torch.manual_seed(0)
    stats = subspace_stats(torch.randn(3, spec.numel), spec, ("x", "y", "z"))
    spectrum = spectrum_chart(stats, "a.weight")
    assert [t.name for t in spectrum.data] == ["x", "y", "z"] and spectrum.layout.yaxis.type == "log"
    assert list(spectrum.data[1].y) == pytest.approx(stats.spectra[0][1].tolist())
    assert spectrum.layout.shapes[0].x0 == 1.5  # the ⌊4/3⌋ = 1 directions TSV-M keeps
    share = top_share_heatmap(stats)
    assert list(share.data[0].y) == ["a.weight", "b.weight"] and share.data[0].zmax == 1
    heat = alignment_heatmap(stats.overall_alignment, stats.tasks, title="t")
    assert list(heat.data[0].x) == ["x", "y", "z"] and heat.data[0].z[0][0] == pytest.approx(1.0)
    taujp = torch.tensor([[5.0, 1.0, 2.0], [1.0, 5.0, 3.0], [2.0, 3.0, 5.0]])
    agreement = alignment_vs_taujp(stats, taujp, ("x", "y", "z"), ("x", "y", "z"))
    assert len(agreement.pairs) == 6 and agreement.taujp[agreement.pairs.index(("y", "z"))] == 3.0
    scatter = agreement_scatter(agreement)
    assert f"ρ = {agreement.rho:.2f}" in scatter.layout.title.text and len(scatter.data[0].x) == 6


def test_methods_chart_and_merge_links():
    from engine.jobs.compare import MethodResult, MethodsComparison
    from ui.figures import methods_chart
    from ui.links import merge_link

    rows = (
        MethodResult("task_arithmetic", {"lam": 0.3}, 21, 0.7, {"a": 0.6, "b": 0.8}, 0.7, 0.75),
        MethodResult("tsv_m", {"alpha": 1.2}, 30, 0.8, {"a": 0.7, "b": 0.9}, 0.8, 0.85),
    )
    fig = methods_chart(MethodsComparison(("a", "b"), rows))
    assert list(fig.data[0].y) == ["TSV-M (task singular vectors)", "Task arithmetic"]  # best first
    assert list(fig.data[0].x) == [0.85, 0.75] and [t.name for t in fig.data[1:]] == ["a", "b"]
    assert merge_link("tsv_m", {"alpha": 1.2}) == "merge?method=tsv_m&alpha=1.2"
    assert merge_link("ties", {"lam": 0.1 + 0.2}, base=[("ckpt", "tau_jp")]) == "merge?ckpt=tau_jp&method=ties&lam=0.3"


def test_parts_loss_curve_is_the_loss_relative_to_its_first_step():
    from ui.figures import parts_loss_curve

    fig = parts_loss_curve([8.0, 6.0, 4.0, 4.0], method="WUDI")
    assert list(fig.data[0].x) == [1, 2, 3, 4] and list(fig.data[0].y) == [1.0, 0.75, 0.5, 0.5]
    assert "WUDI" in fig.layout.title.text


def test_per_layer_charts_run_in_network_order():
    from engine.merge.analysis import SparsityReport
    from ui.figures import layer_bars, sign_conflict_bars

    layers = ("ln_post", "proj", "transformer.resblocks.0", "transformer.resblocks.10", "transformer.resblocks.2")
    report = SparsityReport(("a",), {"a": 1.0}, layers, (0.5, 0.6, 0.1, 0.3, 0.2))
    bars = sign_conflict_bars(report)
    assert list(bars.data[0].y) == [*layers[2:3], layers[4], layers[3], *layers[:2]]
    assert list(bars.data[0].x) == [0.1, 0.2, 0.3, 0.5, 0.6]
    parts = layer_bars(dict(zip(layers, range(5))), vector="a", task="b")
    assert list(parts.data[0].x) == [2, 4, 3, 0, 1]


def test_interference_scatter_states_the_rank_correlation_of_its_points():
    from engine.taujp.matrix import TauJpMatrix
    from ui.figures import interference_scatter

    tasks = ("x", "y", "z")
    values = torch.tensor([[5.0, 1.0, 2.0], [3.0, 5.0, 4.0], [6.0, 0.5, 5.0]])
    matrix = TauJpMatrix(tasks, tasks, values, "val", (8, 8, 8))
    drops = {("x", "y"): 0.01, ("x", "z"): 0.02, ("y", "x"): 0.03, ("y", "z"): 0.04, ("z", "x"): 0.05, ("z", "y"): 0.06}
    fig = interference_scatter(matrix, drops, lam=0.3)
    # τJp ranks the pairs 1 2 3 4 5 0, the drops 0 1 2 3 4 5: ρ = 1 − 6·30 / (6·35) = 0.14
    assert "Spearman ρ = 0.14" in fig.layout.title.text
