"""Plotly figure builders: engine result objects in, go.Figure out. No Streamlit, no maths beyond layout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import plotly.graph_objects as go
import torch

from engine.eval.results import MergeComparison, Sweep
from engine.jobs.compare import MethodsComparison
from engine.jobs.finetune import FinetuneCurves
from engine.jobs.landscape import Landscape
from engine.jobs.learn import LearnCurves
from engine.merge import METHODS as METHOD_REGISTRY
from engine.merge.analysis import SparsityReport
from engine.merge.forgetting import CONTROL_FLOOR, METHODS, ForgettingCurve
from engine.merge.spectra import MeasureAgreement, SubspaceStats, rank_correlation
from engine.params import network_order
from engine.pool.info import CheckpointInfo
from engine.runs.log import Run
from engine.search.logged import Coordinates, ObjectivePlane
from engine.sta.stats import ImportanceSummary
from engine.taujp.matrix import TauJpMatrix
from ui.formats import fixed, fixed_grid, percent, short_number

COLOURS = {"zero-shot": "#9aa5b1", "tangent preview": "#9ecae1", "merged": "#2f6fdb", "fine-tuned": "#1b9e77"}


def accuracy_bars(comparison: MergeComparison, *, preview: Mapping[str, float] | None = None) -> go.Figure:
    """Grouped bars per task: zero-shot, (tangent preview,) merged and fine-tuned accuracy on the same split."""
    tasks = list(comparison.tasks)
    series = {
        "zero-shot": comparison.zero_shot,
        **({"tangent preview": preview} if preview else {}),
        "merged": comparison.merged.accuracy,
        "fine-tuned": comparison.finetuned,
    }
    fig = go.Figure(
        [
            go.Bar(
                name=name,
                x=tasks,
                y=[values[t] for t in tasks],
                marker_color=COLOURS[name],
                hovertemplate="%{x}: %{y:.1%}<extra>" + name + "</extra>",
            )
            for name, values in series.items()
        ]
    )
    fig.update_layout(
        barmode="group",
        title=f"Merged: mean accuracy {comparison.mean_merged:.1%} ({comparison.split} split)",
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        legend=dict(orientation="h", y=-0.15),
        margin=dict(t=50, b=40),
    )
    return fig


def preview_bars(preview: Mapping[str, float]) -> go.Figure:
    """The tangent-space preview alone: shown at once while the exact evaluation runs."""
    mean = sum(preview.values()) / len(preview)
    fig = go.Figure(
        go.Bar(
            name="tangent preview",
            x=list(preview),
            y=list(preview.values()),
            marker_color=COLOURS["tangent preview"],
            hovertemplate="%{x}: %{y:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Tangent-space preview: mean accuracy {mean:.1%} (exact evaluation follows)",
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50, b=40),
    )
    return fig


def sweep_chart(sweep: Sweep) -> go.Figure:
    """Mean and per-task accuracy against the swept parameter, best value marked."""
    x = list(sweep.values)
    fig = go.Figure(
        [
            go.Scatter(x=x, y=list(acc), name=task, mode="lines", line=dict(width=1), opacity=0.6)
            for task, acc in sweep.per_task.items()
        ]
    )
    fig.add_trace(
        go.Scatter(
            x=x, y=list(sweep.mean_accuracy), name="mean", mode="lines+markers", line=dict(width=3, color="black")
        )
    )
    fig.add_vline(x=sweep.best_value, line_dash="dash", annotation_text=f"best {sweep.param} = {sweep.best_value:g}")
    fig.update_layout(
        title=f"Accuracy over {sweep.param} ({sweep.split} split)",
        xaxis_title=sweep.param,
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return fig


def similarity_heatmap(similarity: torch.Tensor, names: Sequence[str]) -> go.Figure:
    """Cosine similarity of task vectors [K, K] as a diverging heatmap centred on 0."""
    values = similarity.tolist()
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=list(names),
            y=list(names),
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            text=fixed_grid(values),
            texttemplate="%{text}",
            customdata=fixed_grid(values, 3),
            hovertemplate="%{y} · %{x}: %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(title="Cosine similarity of task vectors", yaxis=dict(autorange="reversed"), margin=dict(t=50))
    return fig


def runs_comparison(runs: Sequence[Run]) -> go.Figure:
    """Per-task accuracy of 2-4 logged runs side by side (tasks a run did not cover are left out)."""
    tasks = list(dict.fromkeys(t for run in runs for t in run.outputs.get("accuracy") or {}))
    fig = go.Figure(
        [
            go.Bar(
                name=f"#{run.id} {run.kind} ({run.method or '-'})",
                x=tasks,
                y=[(run.outputs.get("accuracy") or {}).get(t) for t in tasks],
            )
            for run in runs
        ]
    )
    fig.update_layout(
        barmode="group",
        title="Per-task accuracy of the selected runs",
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        legend=dict(orientation="h", y=-0.15),
        margin=dict(t=50, b=40),
    )
    return fig


def sign_conflict_bars(report: SparsityReport) -> go.Figure:
    """Per layer, in network order: the share of entries where the (masked) task vectors disagree in sign."""
    order = network_order(report.layers)
    fig = go.Figure(
        go.Bar(
            x=[report.layers[i] for i in order],
            y=[report.sign_conflict[i] for i in order],
            marker_color="#d95f02",
            hovertemplate="%{x}: %{y:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Sign conflicts between tasks, per layer",
        yaxis=dict(tickformat=".0%", hoverformat=".1%", title="share"),
        xaxis=dict(tickangle=-45),
        margin=dict(t=50, b=120),
    )
    return fig


def forgetting_chart(curve: ForgettingCurve, *, alpha: float | None = None) -> go.Figure:
    """Target and control accuracy over α, the control floor, the chosen α (and the slider's α)."""
    x = list(curve.alphas)
    fig = go.Figure(
        [
            go.Scatter(
                x=x,
                y=list(curve.target_accuracy),
                name=f"target: {curve.target}",
                mode="lines+markers",
                line=dict(color="#d62728"),
            ),
            go.Scatter(
                x=x,
                y=list(curve.control_accuracy),
                name="control (mean of the others)",
                mode="lines+markers",
                line=dict(color="#1f77b4"),
            ),
        ]
    )
    fig.add_hline(
        y=CONTROL_FLOOR * curve.pretrained_control,
        line_dash="dot",
        line_color="#1f77b4",
        annotation_text="95% of pretrained control",
    )
    fig.add_vline(x=curve.chosen_alpha, line_dash="dash", annotation_text=f"chosen α = {fixed(curve.chosen_alpha)}")
    if alpha is not None:
        fig.add_vline(x=alpha, line_color="grey", opacity=0.5)
    vector = "τ" if curve.method == "task_arithmetic" else "(m ⊙ τ)"
    fig.update_layout(
        title=f"Forgetting {curve.target}: θ₀ − α·{vector} ({curve.split} split)",
        xaxis_title="α",
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return fig


def importance_histograms(summary: ImportanceSummary) -> go.Figure:
    """Share of entries per importance code, one line per task, on a log10 axis; κ marked."""
    values = summary.code_values[1:].tolist()  # code 0 (below 10⁻⁶) is reported in the legend
    shares = (summary.histogram / summary.histogram.sum(dim=1, keepdim=True).clamp(min=1)).tolist()
    fig = go.Figure(
        [
            go.Scatter(
                x=values,
                y=share[1:],
                mode="lines",
                name=f"{task} ({share[0]:.1%} < 1e-6)",
                hovertemplate="importance %{x:.2g}: %{y:.2%}<extra>" + task + "</extra>",
            )
            for task, share in zip(summary.tasks, shares)
        ]
    )
    if summary.threshold > 0:
        fig.add_vline(x=summary.threshold, line_dash="dash", annotation_text=f"κ = {summary.threshold:g}")
    fig.update_layout(
        title="Importance per entry, normalised per tensor",
        xaxis=dict(type="log", title="importance"),
        yaxis=dict(title="share of entries", tickformat=".1%"),
        margin=dict(t=50),
    )
    return fig


def mask_overlap_heatmap(summary: ImportanceSummary) -> go.Figure:
    """Jaccard overlap [K, K] of the entries each task keeps at κ."""
    values = summary.overlap.tolist()
    names = list(summary.tasks)
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=names,
            y=names,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            text=fixed_grid(values),
            texttemplate="%{text}",
            hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Mask overlap between tasks at κ = {summary.threshold:g} (Jaccard)",
        yaxis=dict(autorange="reversed"),
        margin=dict(t=50),
    )
    return fig


def layer_importance_heatmap(summary: ImportanceSummary) -> go.Figure:
    """Tasks × layers (network order): the share of each layer's entries with importance ≥ κ."""
    order = network_order(summary.layers)
    fig = go.Figure(
        go.Heatmap(
            z=summary.kept_per_layer[:, order].tolist(),
            x=[summary.layers[i] for i in order],
            y=list(summary.tasks),
            zmin=0,
            zmax=1,
            colorscale="Blues",
            hovertemplate="%{y} · %{x}: %{z:.1%} kept<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Share of each layer kept at κ = {summary.threshold:g}",
        xaxis=dict(tickangle=-45),
        yaxis=dict(autorange="reversed"),
        margin=dict(t=50, b=120),
    )
    return fig


TOWERS = {"clip": "both towers", "visual": "image tower"}


def checkpoint_table(
    pretrained: CheckpointInfo,
    checkpoints: Sequence[CheckpointInfo],
    *,
    in_use: Mapping[str, str],
    zero_shot: Mapping[str, float],
    finetuned: Mapping[str, float],
    sizes: Mapping[Path, int],
) -> list[dict]:
    """The Zoo page's checkpoint rows: the pretrained model (its mean zero-shot accuracy), then every task's
    checkpoints; accuracies as percentages, "—" where a checkpoint is not in use (not evaluated)."""
    rows = [
        {
            "task": f"(pretrained, {TOWERS.get(pretrained.tower, pretrained.tower)})",
            "checkpoint": "pretrained",
            "in use": True,
            "format": pretrained.format,
            "architecture": _architecture(pretrained),
            "size": sizes[pretrained.path] // 1000,
            "zero-shot": percent(sum(zero_shot.values()) / len(zero_shot)) + " (mean)",
            "fine-tuned": "—",
        }
    ]
    for info in checkpoints:
        used = in_use.get(info.task) == info.name
        rows.append(
            {
                "task": info.task,
                "checkpoint": info.name if info.variant == info.name else f"{info.name} ({info.variant})",
                "in use": used,
                "format": info.format,
                "architecture": _architecture(info),
                "size": sizes[info.path] // 1000,
                "zero-shot": percent(zero_shot[info.task]),
                "fine-tuned": percent(finetuned[info.task]) if used else "—",
            }
        )
    return rows


def _architecture(info: CheckpointInfo) -> str:
    return info.architecture + ("-quickgelu" if info.quick_gelu else "")


def forgetting_table(stored: Mapping[str, Mapping]) -> list[dict]:
    """Rows of a stored forgetting report for one target: one per method, at its chosen α."""
    rows = []
    for method, entry in stored.items():
        o = entry["outcome"]
        rows.append(
            {
                "method": METHODS[method] if method in METHODS else method,
                "chosen α": fixed(o["alpha"]),
                "target": o["target_accuracy"],
                "pretrained target": o["pretrained_target"],
                "chance": o["chance"],
                "control": o["control_accuracy"],
                "control / pretrained": o["control_accuracy"] / o["pretrained_control"],
                "forgotten": bool(entry["succeeded"]),
            }
        )
    return rows


def taujp_heatmap(matrix: TauJpMatrix, *, title: str | None = None, zmax: float | None = None) -> go.Figure:
    """Off-diagonal τJp[a, b] (interference); the diagonal (each task's own signal) is left blank here.

    A transparent marker sits on every off-diagonal cell, so a click selects it (Streamlit's plotly
    selections report scatter points, not heatmap cells): `clicked_cell` reads the pair back."""
    values = matrix.values.tolist()
    z = [[None if a == b else v for b, v in zip(matrix.tasks, row)] for a, row in zip(matrix.vectors, values)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(matrix.tasks),
            y=list(matrix.vectors),
            colorscale="Reds",
            zmin=0,
            zmax=zmax,
            text=[["" if v is None else fixed(v) for v in row] for row in z],
            texttemplate="%{text}",
            hoverinfo="skip",
        )
    )
    cells = [(a, b, v) for a, row in zip(matrix.vectors, z) for b, v in zip(matrix.tasks, row) if v is not None]
    fig.add_scatter(
        x=[b for _, b, _ in cells],
        y=[a for a, _, _ in cells],
        mode="markers",
        name="cells",
        marker=dict(size=28, symbol="square", opacity=0),
        customdata=[v for *_, v in cells],
        hovertemplate="τ_%{y} on %{x} inputs: %{customdata:.3f}<extra>click for layers</extra>",
        showlegend=False,
    )
    fig.update_layout(
        title=title
        or f"τJp: ‖J f(x; θ₀)·τ_a‖ on task b's inputs ({matrix.split}, "
        f"{min(matrix.images)}–{max(matrix.images)} images per task)",
        xaxis_title="inputs of task b",
        yaxis=dict(title="task vector a", autorange="reversed"),
        margin=dict(t=50),
    )
    return fig


def clicked_cell(selection: Mapping | None) -> tuple[str, str] | None:
    """(task vector a, inputs of task b) of the first selected heatmap cell, from st.plotly_chart's selection."""
    points = ((selection or {}).get("selection") or {}).get("points") or []
    cell = next((p for p in points if "x" in p and "y" in p), None)
    return None if cell is None else (str(cell["y"]), str(cell["x"]))


def taujp_variant_heatmaps(matrices: Mapping[str, TauJpMatrix]) -> list[go.Figure]:
    """One compact heatmap per variant on a shared colour scale (shown on the last), titled with its mean
    off-diagonal τJp: small multiples, so the numbers are in the hover, not in the cells."""
    zmax = max(float(_off_diagonal(m).max()) for m in matrices.values())
    figures = []
    for i, (name, m) in enumerate(matrices.items()):
        fig = taujp_heatmap(m, title=f"{name}: mean off-diagonal {float(_off_diagonal(m).mean()):.3g}", zmax=zmax)
        fig.update_traces(texttemplate=None, showscale=i == len(matrices) - 1, selector=dict(type="heatmap"))
        fig.update_layout(xaxis_title=None, yaxis_title=None, height=360, margin=dict(t=40, l=10, r=10, b=10))
        figures.append(fig)
    return figures


def _off_diagonal(matrix: TauJpMatrix) -> torch.Tensor:
    keep = ~torch.eye(*matrix.values.shape, dtype=torch.bool)
    return matrix.values[keep]  # [A·B − min(A, B)]


def taujp_diagonal_bars(matrix: TauJpMatrix) -> go.Figure:
    """τJp[t, t]: how far each task's own vector moves its own inputs (the signal, not interference)."""
    shared = [t for t in matrix.vectors if t in matrix.tasks]
    values = [matrix.values[matrix.vectors.index(t), matrix.tasks.index(t)].item() for t in shared]
    fig = go.Figure(go.Bar(x=shared, y=values, marker_color="#2f6fdb", hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title="Diagonal: each task's vector on its own inputs", yaxis_title="τJp", margin=dict(t=50))
    return fig


def interference_scatter(
    matrix: TauJpMatrix, drops: Mapping[tuple[str, str], float], *, lam: float, source: str = ""
) -> go.Figure:
    """Off-diagonal τJp[a, b] against the accuracy task b loses when τ_a is added (drop_b(a)), with their
    Spearman rank correlation in the title: near 1, the pairs τJp ranks higher lose more accuracy. `source`
    says how the drops were obtained (e.g. "first order, interactive split")."""
    pairs = [(a, b) for a in matrix.vectors for b in matrix.tasks if a != b and (a, b) in drops]
    x = [matrix.values[matrix.vectors.index(a), matrix.tasks.index(b)].item() for a, b in pairs]
    rho = rank_correlation(torch.tensor(x), torch.tensor([drops[p] for p in pairs])) if len(pairs) > 1 else None
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=[drops[p] for p in pairs],
            mode="markers",
            text=[f"τ_{a} → {b}" for a, b in pairs],
            hovertemplate="%{text}<br>τJp %{x:.3f}<br>drop %{y:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Interference: τJp against the accuracy drop at λ = {short_number(lam)}"
        + (f", {source}" if source else "")
        + ("" if rho is None else f" (Spearman ρ = {fixed(rho)})"),
        xaxis_title="τJp[a, b]",
        yaxis=dict(title="drop_b(a) = acc_b(λτ_b) − acc_b(λ(τ_a + τ_b))", tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return fig


def layer_bars(parts: Mapping[str, float], *, vector: str, task: str) -> go.Figure:
    """τJp of one vector on one task's inputs, restricted to each layer block in turn (network order)."""
    names = list(parts)
    names = [names[i] for i in network_order(names)]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[parts[n] for n in names],
            marker_color="#d95f02",
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"τ_{vector} on {task} inputs, per layer",
        xaxis=dict(tickangle=-45),
        yaxis_title="τJp of the block's part",
        margin=dict(t=50, b=120),
    )
    return fig


def finetune_curves(curves: FinetuneCurves, *, beta: float | None = None) -> go.Figure:
    """Loss (and β·penalty) per step on the left axis, val accuracy at its evaluation steps on the right."""
    fig = go.Figure(
        go.Scatter(
            name="cross-entropy",
            x=list(curves.step),
            y=list(curves.loss),
            mode="lines",
            line=dict(color=COLOURS["merged"]),
        )
    )
    penalty = [p for p in curves.penalty if p is not None]
    if penalty and beta is not None:
        fig.add_scatter(
            name=f"τJp penalty R (× β = {beta:g} in the loss)",
            x=list(curves.step),
            y=penalty,
            mode="lines",
            line=dict(color="#d95f02"),
        )
    fig.add_scatter(
        name="val accuracy",
        x=list(curves.val_step),
        y=list(curves.val_accuracy),
        mode="lines+markers",
        yaxis="y2",
        line=dict(color=COLOURS["fine-tuned"]),
    )
    fig.update_layout(
        title="Fine-tuning",
        xaxis=dict(title="step"),
        yaxis=dict(title="loss / penalty", rangemode="tozero"),
        yaxis2=dict(
            title="val accuracy", overlaying="y", side="right", range=[0, 1], tickformat=".0%", hoverformat=".1%"
        ),
        legend=dict(orientation="h", y=-0.2),
        margin=dict(t=50, b=40),
    )
    return fig


def parts_loss_curve(losses: Sequence[float], *, method: str) -> go.Figure:
    """An iterative merge's loss after each step, as a share of the loss at its start (WUDI: the summed
    per-layer interference Σₜ ‖(τ_m − τₜ) τₜᵀ‖² / ‖τₜ‖²)."""
    start = losses[0] if losses and losses[0] else 1.0
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(losses) + 1)),
            y=[v / start for v in losses],
            mode="lines",
            line=dict(color=COLOURS["merged"]),
        )
    )
    fig.update_layout(
        title=f"{method}: interference loss per step",
        xaxis=dict(title="step"),
        yaxis=dict(title="loss / loss after step 1", rangemode="tozero"),
        margin=dict(t=50, b=40),
    )
    return fig


def job_curve(kind: str, metrics: Mapping, *, name: str = "") -> go.Figure | None:
    """A background job's live curve from the progress metrics the jobs table keeps, drawn by the figure its
    own page uses (None for a kind without a curve, or before its first point): fine-tune loss and val
    accuracy, aTLAS / DV-BASI epochs, an iterative merge's loss, a sweep's accuracy over λ."""
    from engine.jobs.sweep import sweep_from_metrics

    if kind == "finetune":
        curves = FinetuneCurves.from_json(metrics)
        return finetune_curves(curves) if curves.step else None
    if kind == "learn":
        learned = LearnCurves.from_json(metrics)
        return learning_curves(learned) if learned.epochs else None
    if kind == "merge_parts":
        return parts_loss_curve(metrics["loss"], method=name) if metrics.get("loss") else None
    if kind == "sweep":
        sweep = sweep_from_metrics(metrics)
        return sweep_chart(sweep) if sweep is not None else None
    return None


def variants_table(variants: Mapping[str, Mapping]) -> list[dict]:
    """One row per fine-tuning variant of report.json's "variants": what the τJp paper compares."""
    return [
        {
            "variant": name,
            "fine-tuned": v["averages"]["finetuned_test"],
            "merge at best λ": v["averages"]["ta_best_test"],
            "best λ (val)": v["task_arithmetic"]["best_lambda"],
            "merge at λ = 1": v["averages"]["ta_one_test"],
            "mean off-diagonal τJp": v["taujp"]["mean_off_diagonal"],
        }
        for name, v in variants.items()
    ]


def variant_curves(variants: Mapping[str, Mapping]) -> go.Figure:
    """Mean val accuracy of the all-task merge θ₀ + λΣτ against λ, one line per fine-tuning variant."""
    fig = go.Figure()
    for name, v in variants.items():
        curve = v["task_arithmetic"]["val_curve"]
        fig.add_scatter(
            name=name,
            x=[c["lam"] for c in curve],
            y=[c["mean_accuracy"] for c in curve],
            mode="lines+markers",
            hovertemplate=name + " λ=%{x}: %{y:.1%}<extra></extra>",
        )
    fig.update_layout(
        title="Merging every task: mean accuracy on val against λ (λ is chosen on val)",
        xaxis_title="λ",
        yaxis=dict(title="mean accuracy (val)", tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return fig


def learning_curves(curves: LearnCurves) -> go.Figure:
    """Objective per epoch (aTLAS, then each DV-BASI iteration, end to end) and selection accuracy on a
    second axis; dashed lines mark where a DV-BASI iteration starts."""
    epochs = curves.epochs
    x = list(range(1, len(epochs) + 1))
    fig = go.Figure(
        go.Scatter(
            name="objective (fit part of val)",
            x=x,
            y=[e.loss for e in epochs],
            mode="lines",
            line=dict(color=COLOURS["merged"]),
        )
    )
    fig.add_scatter(
        name="selection accuracy",
        x=x,
        y=[e.selection for e in epochs],
        mode="lines",
        yaxis="y2",
        line=dict(color=COLOURS["fine-tuned"]),
    )
    starts = [i + 1 for i, e in enumerate(epochs) if e.stage == "dv-basi" and e.epoch == 1]
    for i, start in enumerate(starts, start=1):
        fig.add_vline(
            x=start - 0.5,
            line_dash="dash",
            line_color="#9aa5b1",
            annotation_text=f"iteration {i}",
            annotation_position="top left",
        )
    fig.update_layout(
        title="Learning the coefficients",
        xaxis_title="epoch (all stages)",
        yaxis=dict(title="objective", rangemode="tozero"),
        yaxis2=dict(title="selection accuracy", overlaying="y", side="right", tickformat=".0%", hoverformat=".1%"),
        legend=dict(orientation="h", y=-0.2),
        margin=dict(t=50, b=40),
    )
    return fig


def iteration_accuracy(curves: LearnCurves) -> go.Figure:
    """Per DV-BASI iteration: mean and per-task selection accuracy after the move, and ‖δ‖."""
    its = curves.iterations
    x = [it.iteration for it in its]
    fig = go.Figure()
    tasks = list(its[0].selection) if its else []
    for task in tasks:
        fig.add_scatter(
            name=task,
            x=x,
            y=[it.selection[task] for it in its],
            mode="lines+markers",
            line=dict(width=1),
            opacity=0.6,
        )
    fig.add_scatter(
        name="mean",
        x=x,
        y=[sum(it.selection.values()) / len(it.selection) for it in its],
        mode="lines+markers",
        line=dict(color="black", width=3),
    )
    fig.add_scatter(
        name="‖δ‖",
        x=x,
        y=[it.delta_norm for it in its],
        mode="lines+markers",
        yaxis="y2",
        line=dict(color="#d95f02", dash="dot"),
    )
    fig.update_layout(
        title="DV-BASI iterations: selection accuracy and ‖δ‖",
        xaxis=dict(title="iteration", dtick=1),
        yaxis=dict(title="accuracy", tickformat=".0%", hoverformat=".1%"),
        yaxis2=dict(title="‖δ‖", overlaying="y", side="right", rangemode="tozero"),
        margin=dict(t=50),
    )
    return fig


def scales_heatmap(curves: LearnCurves, blocks: Sequence[str]) -> go.Figure:
    """Learned λ per block (columns) per DV-BASI iteration (rows); one column when isotropic."""
    its = curves.iterations
    labels = list(blocks) if its and len(its[0].scales) == len(blocks) else ["all (isotropic)"]
    fig = go.Figure(
        go.Heatmap(
            z=[list(it.scales) for it in its],
            x=labels,
            y=[f"iteration {it.iteration}" for it in its],
            colorscale="RdBu",
            zmid=0,
            customdata=fixed_grid([list(it.scales) for it in its], 3),
            hovertemplate="%{y}, %{x}: λ = %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Learned scale λ of δ per block (θ ← θ + λ·δ)",
        xaxis=dict(showticklabels=len(labels) <= 60),
        margin=dict(t=50),
    )
    return fig


def learned_runs_overlay(runs: Sequence[Run]) -> go.Figure:
    """Selection accuracy per epoch of several logged aTLAS / DV-BASI runs, on one chart."""
    fig = go.Figure()
    for run in runs:
        epochs = LearnCurves.from_json(run.outputs.get("curves", {})).epochs
        fig.add_scatter(
            name=f"#{run.id} {run.outputs.get('point', '')}",
            x=list(range(1, len(epochs) + 1)),
            y=[e.selection for e in epochs],
            mode="lines",
        )
    fig.update_layout(
        title="Logged runs: selection accuracy per epoch",
        xaxis_title="epoch (all stages)",
        yaxis=dict(title="selection accuracy", tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return fig


def learned_table(learned: Mapping[str, Mapping]) -> list[dict]:
    """report.json's "learned": test mean accuracy of every learned-coefficient method, per objective."""
    rows = [
        {
            "method": f"task arithmetic (λ = {learned['task_arithmetic']['lambda']:g})",
            "supervised": learned["task_arithmetic"]["test_mean"],
            "unsupervised": learned["task_arithmetic"]["test_mean"],
        }
    ]
    names = {
        "atlas": "aTLAS",
        "dv_basi": "aTLAS + DV-BASI",
        "isotropic": "aTLAS + DV-BASI, isotropic",
        "random_direction": "aTLAS + random-direction control",
        "dv_basi_from_task_arithmetic": "TA + DV-BASI",
    }
    for key, label in names.items():
        rows.append({"method": label, **{o: learned[o][key]["test_mean"] for o in ("supervised", "unsupervised")}})
    if "dv_basi_from_tau_jp" in learned["supervised"]:  # zoos built with the τJp-regularised variant
        start = learned["supervised"]["dv_basi_from_tau_jp"]["start"]
        rows.append(
            {
                "method": f"τJp task arithmetic (λ = {start['lambda']:g}, linearized)",
                "supervised": start["test_mean"],
                "unsupervised": start["test_mean"],
            }
        )
        rows.append(
            {
                "method": "τJp TA + DV-BASI",
                **{o: learned[o]["dv_basi_from_tau_jp"]["test_mean"] for o in ("supervised", "unsupervised")},
            }
        )
    return rows


def spectrum_chart(stats: SubspaceStats, layer: str) -> go.Figure:
    """Singular values of each task's matrix of one layer, log scale, with the ⌊p/K⌋ cut TSV-M keeps."""
    i = stats.layers.index(layer)
    spectra = stats.spectra[i]  # [K, p]
    fig = go.Figure(
        [
            go.Scatter(x=list(range(1, spectra.shape[1] + 1)), y=spectra[k].tolist(), name=task, mode="lines")
            for k, task in enumerate(stats.tasks)
        ]
    )
    cut = max(1, stats.full_rank[i] // len(stats.tasks))
    fig.add_vline(x=cut + 0.5, line_dash="dash", line_color="#9aa5b1", annotation_text=f"top {cut} (1/K)")
    fig.update_layout(
        title=f"Singular values of each task matrix: {layer}",
        xaxis_title="index",
        yaxis=dict(title="singular value", type="log"),
        margin=dict(t=50),
    )
    return fig


def top_share_heatmap(stats: SubspaceStats) -> go.Figure:
    """Per layer (rows, network order) and task: the energy share of its top ⌊p/K⌋ directions."""
    order = network_order(stats.layers)
    fig = go.Figure(
        go.Heatmap(
            z=stats.top_share[order].tolist(),
            x=list(stats.tasks),
            y=[stats.layers[i] for i in order],
            zmin=0,
            zmax=1,
            colorscale="Blues",
            hovertemplate="%{y} · %{x}: %{z:.0%} of the energy in the top 1/K<extra></extra>",
        )
    )
    fig.update_layout(
        title="Energy share of each task matrix's top 1/K directions",
        yaxis=dict(autorange="reversed"),
        height=max(320, 22 * len(stats.layers)),
        margin=dict(t=50),
    )
    return fig


def alignment_heatmap(values: torch.Tensor, tasks: Sequence[str], *, title: str) -> go.Figure:
    """Top-k subspace alignment [K, K] of the tasks (1: the same directions, 0: orthogonal)."""
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(),
            x=list(tasks),
            y=list(tasks),
            zmin=0,
            zmax=1,
            colorscale="Purples",
            text=fixed_grid(values.tolist()),
            texttemplate="%{text}",
            hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(title=title, yaxis=dict(autorange="reversed"), margin=dict(t=50))
    return fig


def agreement_scatter(agreement: MeasureAgreement) -> go.Figure:
    """τJp[a, b] against the subspace alignment of a and b, one point per ordered pair, ρ in the title."""
    fig = go.Figure(
        go.Scatter(
            x=list(agreement.alignment),
            y=list(agreement.taujp),
            mode="markers",
            text=[f"τ_{a} on {b}" for a, b in agreement.pairs],
            hovertemplate="%{text}: alignment %{x:.3f}, τJp %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"τJp against subspace alignment (Spearman ρ = {fixed(agreement.rho)})",
        xaxis_title="top-k subspace alignment",
        yaxis_title="τJp",
        margin=dict(t=50),
    )
    return fig


def methods_chart(comparison: MethodsComparison) -> go.Figure:
    """Every method at its best val setting: mean normalized accuracy on test (bars) and each task's test
    accuracy (points), methods ordered by the bars."""
    results = sorted(comparison.results, key=lambda r: r.test_mean_normalized, reverse=True)
    names = [METHOD_REGISTRY[r.method].display_name for r in results]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[r.test_mean_normalized for r in results],
            name="mean normalized accuracy",
            marker_color=COLOURS["merged"],
            opacity=0.55,
            text=[f"{r.test_mean_normalized:.1%}" for r in results],
            textposition="outside",
        )
    )
    for task in comparison.tasks:
        fig.add_scatter(
            x=names, y=[r.test_accuracy[task] for r in results], mode="markers", name=task, marker=dict(size=7)
        )
    fig.update_layout(
        title="Every method at its best val setting, on test",
        yaxis=dict(
            title="accuracy (points: per task) · normalized (bars)", tickformat=".0%", hoverformat=".1%", range=[0, 1.1]
        ),
        xaxis=dict(tickangle=-30),
        margin=dict(t=50, b=120),
    )
    return fig


def merge_link(method: str, params: Mapping[str, float], *, base: Sequence[tuple[str, str]] = ()) -> str:
    """A deep link opening the Merge page on `method` with these parameter values, after `base` (the
    sidebar's part of the URL: collection and checkpoints, so the link shows the same numbers)."""
    from urllib.parse import urlencode

    pairs = [*base, ("method", method), *((k, f"{v:.6g}") for k, v in params.items())]
    return "merge?" + urlencode(pairs)


def landscape_heatmap(landscape: Landscape, *, preview: bool = False) -> go.Figure:
    """Mean normalized accuracy of the two-task merge over the λ₁ × λ₂ grid (exact, or the tangent preview),
    on a fixed 0–1 colour scale so the two read alike; a star marks the best point. Transparent markers on
    every cell make a click selectable (`clicked_lambdas` reads it back)."""
    grid = landscape.preview if preview else landscape.exact
    a, b = landscape.tasks
    values = list(landscape.values)
    fig = go.Figure(
        go.Heatmap(
            z=[list(row) for row in grid],
            x=values,
            y=values,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar=dict(title="normalized", tickformat=".0%"),
            hoverinfo="skip",
        )
    )
    cells = [(x, y, v) for y, row in zip(values, grid) for x, v in zip(values, row) if v is not None]
    fig.add_scatter(
        x=[x for x, _, _ in cells],
        y=[y for _, y, _ in cells],
        customdata=[v for *_, v in cells],
        mode="markers",
        marker=dict(size=18, symbol="square", opacity=0),
        hovertemplate=f"λ {a} = %{{y:g}}, λ {b} = %{{x:g}}: %{{customdata:.1%}}<extra>click to open in Merge</extra>",
        showlegend=False,
    )
    best = landscape.best(preview=preview)
    if best is not None:
        fig.add_scatter(
            x=[best[1]],
            y=[best[0]],
            mode="markers",
            marker=dict(symbol="star", size=16, color="white", line=dict(color="black", width=1)),
            name=f"best: {best[2]:.1%}",
            hoverinfo="skip",
        )
    kind = "tangent-space preview" if preview else "exact evaluation"
    fig.update_layout(
        title=f"{kind} ({landscape.split})",
        xaxis_title=f"λ {b}",
        yaxis_title=f"λ {a}",
        legend=dict(orientation="h", y=-0.25),
        margin=dict(t=50),
    )
    return fig


def clicked_lambdas(selection: Mapping | None) -> tuple[float, float] | None:
    """(λ₁, λ₂) of the first clicked landscape cell (y is the first task's λ), from st.plotly_chart's selection."""
    points = ((selection or {}).get("selection") or {}).get("points") or []
    cell = next((p for p in points if "x" in p and "y" in p), None)
    return None if cell is None else (float(cell["y"]), float(cell["x"]))


def two_task_merge_link(tasks: Sequence[str], lambdas: Sequence[float], *, base: Sequence[tuple[str, str]] = ()) -> str:
    """A deep link opening the Merge page on task arithmetic of `tasks` with one λ each (after `base`, as
    in `merge_link`)."""
    from urllib.parse import urlencode

    pairs = [*base, *(("tasks", t) for t in tasks), ("per_task", "true")]
    pairs += [(f"lam.{t}", f"{v:.6g}") for t, v in zip(tasks, lambdas)]
    return "merge?" + urlencode(pairs)


PROJECTOR_FONT = 22
PROJECTOR_HEIGHT = 640


def for_projector(fig: go.Figure, *, font_size: int = PROJECTOR_FONT, height: int = PROJECTOR_HEIGHT) -> go.Figure:
    """The same figure, readable from the back of a lecture room: larger base and title fonts, taller."""
    fig.update_layout(font=dict(size=font_size), title_font=dict(size=font_size + 4), height=height)
    return fig


def stored_forgetting_curve(stored: Mapping) -> ForgettingCurve:
    """A negation curve as forgetting.json stores it (targets → target → method → "curve"), as the engine's object."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
    return ForgettingCurve(**fields)


def learned_bars(rows: Sequence[Mapping], *, objective: str) -> go.Figure:
    """`learned_table` rows as bars: test mean accuracy of every learned-coefficient method for one objective."""
    fig = go.Figure(
        go.Bar(
            x=[r[objective] for r in rows],
            y=[r["method"] for r in rows],
            orientation="h",
            marker_color=COLOURS["merged"],
            text=[f"{r[objective]:.1%}" for r in rows],
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Learned coefficients, {objective} objective: test mean accuracy",
        xaxis=dict(title="mean accuracy (test)", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        yaxis=dict(autorange="reversed"),
        margin=dict(t=50, l=10),
    )
    return fig


def objective_plane_chart(plane: ObjectivePlane) -> go.Figure:
    """Every trial of a sweep on two objectives (accuracy of a task, the mean or the worst task), its Pareto
    front joined and its best trial (by mean normalized accuracy on val) marked."""
    label = lambda name: f"{name} accuracy" if name not in ("mean", "worst") else f"{name} task accuracy"
    text = [f"trial {i}" for i in plane.indices]
    fig = go.Figure(
        go.Scatter(
            x=list(plane.xs), y=list(plane.ys), mode="markers", name="trials", text=text, marker=dict(color="#9aa5b1")
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[plane.xs[i] for i in plane.front],
            y=[plane.ys[i] for i in plane.front],
            text=[text[i] for i in plane.front],
            mode="lines+markers",
            name="Pareto front",
            line=dict(color=COLOURS["merged"]),
        )
    )
    if plane.best is not None:
        fig.add_trace(
            go.Scatter(
                x=[plane.xs[plane.best]],
                y=[plane.ys[plane.best]],
                text=[text[plane.best]],
                mode="markers",
                name="best (mean normalized, val)",
                marker=dict(symbol="star", size=16, color=COLOURS["fine-tuned"]),
            )
        )
    fig.update_layout(
        xaxis=dict(title=label(plane.x), tickformat=".0%"),
        yaxis=dict(title=label(plane.y), tickformat=".0%"),
        margin=dict(t=30),
    )
    return fig


def coordinates_chart(coords: Coordinates) -> go.Figure:
    """Parallel coordinates of every trial's varied parameters (per-task λ), coloured by mean normalized
    accuracy."""
    dimensions = [dict(label=name, values=list(column)) for name, column in zip(coords.names, coords.columns)]
    dimensions.append(dict(label="mean normalized", values=list(coords.score)))
    line = dict(color=list(coords.score), colorscale="Viridis", showscale=True)
    return go.Figure(go.Parcoords(dimensions=dimensions, line=line)).update_layout(margin=dict(t=60, l=60, r=60))
