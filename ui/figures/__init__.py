"""Plotly figure builders, one module per view family: engine result objects in, go.Figure (or table rows)
out. No Streamlit, no maths beyond layout. Re-exported here, so views call `figures.accuracy_bars(...)`."""

from ui.figures.benchmark import benchmark_published_chart, benchmark_task_bars
from ui.figures.forgetting import forgetting_chart, forgetting_table, stored_forgetting_curve
from ui.figures.interference import (
    clicked_cell,
    interference_scatter,
    layer_bars,
    taujp_diagonal_bars,
    taujp_heatmap,
    taujp_variant_heatmaps,
    variant_curves,
    variants_table,
)
from ui.figures.merge import accuracy_bars, parts_loss_curve, preview_bars, sign_conflict_bars, sweep_chart
from ui.figures.methods import PLANE_HELP, clicked_lambdas, landscape_heatmap, methods_chart, storage_plane_chart
from ui.figures.sta import importance_histograms, layer_importance_heatmap, mask_overlap_heatmap
from ui.figures.style import COLOURS, PROJECTOR_FONT, PROJECTOR_HEIGHT, for_projector
from ui.figures.subspaces import (
    agreement_scatter,
    alignment_heatmap,
    pipeline_spectrum_chart,
    spectrum_chart,
    top_share_heatmap,
)
from ui.figures.tracking import coordinates_chart, job_curve, objective_plane_chart, runs_comparison
from ui.figures.training import (
    finetune_curves,
    iteration_accuracy,
    learned_bars,
    learned_runs_overlay,
    learned_table,
    learning_curves,
    scales_heatmap,
)
from ui.figures.zoo import TOWERS, checkpoint_table, similarity_heatmap

__all__ = [
    "COLOURS",
    "PROJECTOR_FONT",
    "PROJECTOR_HEIGHT",
    "for_projector",
    "accuracy_bars",
    "preview_bars",
    "sweep_chart",
    "sign_conflict_bars",
    "parts_loss_curve",
    "similarity_heatmap",
    "TOWERS",
    "checkpoint_table",
    "forgetting_chart",
    "forgetting_table",
    "stored_forgetting_curve",
    "importance_histograms",
    "mask_overlap_heatmap",
    "layer_importance_heatmap",
    "taujp_heatmap",
    "clicked_cell",
    "taujp_variant_heatmaps",
    "taujp_diagonal_bars",
    "interference_scatter",
    "layer_bars",
    "variants_table",
    "variant_curves",
    "finetune_curves",
    "learning_curves",
    "iteration_accuracy",
    "scales_heatmap",
    "learned_runs_overlay",
    "learned_table",
    "learned_bars",
    "spectrum_chart",
    "pipeline_spectrum_chart",
    "top_share_heatmap",
    "alignment_heatmap",
    "agreement_scatter",
    "methods_chart",
    "benchmark_task_bars",
    "benchmark_published_chart",
    "storage_plane_chart",
    "PLANE_HELP",
    "landscape_heatmap",
    "clicked_lambdas",
    "runs_comparison",
    "job_curve",
    "objective_plane_chart",
    "coordinates_chart",
]
