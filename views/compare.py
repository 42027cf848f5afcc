"""Compare methods: every registered merge at its best val setting, reported on test, side by side."""

import streamlit as st

from engine.home import DataHome
from engine.jobs.compare import MethodsComparison
from engine.jobs.forms import COMPARE
from engine.jobs.plane import storage_plane
from engine.jobs.runner import JobState
from engine.merge.pipeline import pipeline_display
from ui import figures, links, messages, pages, resources, tables, widgets
from ui.state import every_task_variant, sidebar_query, sidebar_workspace

st.header(pages.heading("compare"))
st.caption(
    "Each method's parameters are chosen on val by mean normalized accuracy (merged / fine-tuned per task, "
    "averaged), then the chosen setting is evaluated once on test. Normalized accuracy is what makes methods "
    "comparable across checkpoint sets; papers' absolute numbers are not."
)
collection, choice, ws = sidebar_workspace()
report = resources.build_report(collection) if not choice else None
variant = every_task_variant()
table = resources.variant_table(collection, variant) if choice and len(choice) == len(ws.task_names) else None
comparison = MethodsComparison.from_json(report["methods"]) if report and report.get("methods") else None
stored = resources.stored_plane(collection) if comparison is not None else None  # with pipelines, TALL, EMR
plane = stored[1] if stored else None
if table is not None:
    comparison = MethodsComparison.from_json(table["methods"])
    means, rank = table["averages"], table.get("training", {}).get("lora_rank")
    st.caption(
        f"The {variant} checkpoints{f' (rank {rank})' if rank else ''}, stored when the demo zoo was built "
        f"(`python -m engine zoo add-lora`): zero-shot {means['zero_shot_test']:.1%} and each adapter alone "
        f"{means['adapters_test']:.1%} mean test accuracy. Normalized accuracy divides by the adapter alone."
    )
elif comparison is not None:
    comparison = stored[0] if stored else comparison
    st.caption(
        "Stored when the demo zoo was built (`python -m engine zoo add-methods`)"
        + ("; task-specific methods and calibrated pipelines by `python -m engine.zoo.plane`." if stored else ".")
    )
else:
    values = {"methods": widgets.job_input(st, COMPARE, "methods")}
    if st.button("Compare every method as a background job", type="primary"):
        args = COMPARE.arguments(values, tasks=ws.task_names, home=DataHome.from_env())
        spec = resources.job_spec("compare", ws, collection, choice, args, name=COMPARE.title(values))
        st.session_state["compare_job"] = resources.submit_job(spec)
    job = widgets.job_progress("compare_job")
    if job is not None and job.state is JobState.DONE:
        comparison = job.result
        plane = storage_plane(comparison, numel=ws.matrix.spec.numel, finetuned=ws.finetuned("test"))
    elif job is not None and job.state is JobState.FAILED:
        st.error(messages.shown(job.error))

if comparison is not None:
    st.plotly_chart(figures.methods_chart(comparison), key="methods_chart")
    rows = sorted(comparison.results, key=lambda r: r.test_mean_normalized, reverse=True)
    table = {  # what decides first, then the link; the long settings last (they scroll, the method stays pinned)
        "method": [pipeline_display(r.method).split(" (")[0] for r in rows],
        "test normalized": [r.test_mean_normalized for r in rows],
        "test accuracy": [r.test_mean_accuracy for r in rows],
        "val normalized": [r.val_mean_normalized for r in rows],
        "open": [links.merge_link(r.method, r.params, base=sidebar_query()) for r in rows],
        "chosen on val": [", ".join(f"{k} = {v:g}" for k, v in r.params.items()) for r in rows],
    }
    st.dataframe(
        table,
        column_config=tables.fitted_columns(
            table,
            {
                "method": st.column_config.TextColumn(pinned=True),
                **{
                    k: st.column_config.NumberColumn(format="percent")
                    for k in ("val normalized", "test accuracy", "test normalized")
                },
                "open": st.column_config.LinkColumn("open in Merge", display_text="open"),
            },
        ),
        hide_index=True,
    )
    subspaces = report["methods"].get("subspaces") if comparison is not None and report else None
    if subspaces:
        low, high = min(subspaces["top_share_mean"]), max(subspaces["top_share_mean"])
        st.caption(
            f"On this zoo each task matrix's top 1/K directions carry {low:.0%}–{high:.0%} of its energy and tasks' "
            f"top subspaces overlap by {subspaces['mean_off_diagonal_alignment']:.2f} on average (Subspaces page): "
            "the task vectors are close to low-rank even in this 96-wide tower, which is what the subspace "
            "methods use."
        )
    reach = report["methods"].get("wudi") if comparison is not None and report else None
    if reach:
        st.caption(
            "WUDI's Adam moves each entry by about its learning rate per step (1e-5, as the paper), whatever the "
            f"task vectors' scale: on this zoo, whose task matrices' entries have rms {reach['matrix_rms']:.1e}, "
            f"the paper's 300 steps leave {reach['loss_left']['300']:.0%} of its interference loss and 1000 steps "
            f"{reach['loss_left']['1000']:.0%}; its step count is chosen on val like the other methods' ranks."
        )
if plane is not None:
    st.plotly_chart(figures.storage_plane_chart(plane), key="storage_plane")
    st.caption(figures.PLANE_HELP)
