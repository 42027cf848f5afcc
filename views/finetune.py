"""Fine-tune: train one task's image tower (standard, linearized, linearized with the τJp penalty, or LoRA) as a
job."""

import streamlit as st

from engine.errors import MergelabError
from engine.home import DataHome
from engine.jobs.finetune import FinetuneCurves, FinetuneOutcome
from engine.jobs.forms import FINETUNE
from engine.jobs.runner import JobState
from engine.train.finetune import MODES
from ui import figures, messages, pages, resources, widgets
from ui.state import current_collection

st.header(pages.heading("finetune"))
st.caption(
    "Linearized fine-tuning trains the first-order model f(x; θ₀) + J f(x; θ₀)·(θ − θ₀), so task vectors add "
    "exactly in function space. The τJp penalty (Yoshida et al., ICLR 2025) adds β · mean ‖J f(x; θ₀)·(θ − θ₀)‖ "
    "over other tasks' images: the vector learns its task while leaving the others' embeddings where they were, "
    "so merges interfere less and work at λ ≈ 1. LoRA (Hu et al., ICLR 2022) trains only a rank-r update s·B·A of "
    "the chosen Linears and saves it as a PEFT adapter. Compare the variants on the Merge and Interference pages."
)
collection = current_collection()
ws = resources.workspace_or_stop(collection)
widgets.job_defaults(FINETUNE, ws.task_names)
a, b = st.columns(2)
values = {"task": widgets.job_input(a, FINETUNE, "task", tasks=ws.task_names)}
values["mode"] = widgets.job_input(b, FINETUNE, "mode")
c, d = st.columns(2)
values["steps"] = widgets.job_input(c, FINETUNE, "steps")
values["beta"] = widgets.job_input(d, FINETUNE, "beta", values=values)
e, f = st.columns([1, 3])
values["rank"] = widgets.job_input(e, FINETUNE, "rank", values=values)
values["targets"] = widgets.job_input(f, FINETUNE, "targets", values=values)
with st.expander("More settings"):
    for column, name in zip(st.columns(5), ("lr", "batch", "penalty", "penalty_batch", "alpha")):
        values[name] = widgets.job_input(column, FINETUNE, name, values=values)

if st.button("Fine-tune as a background job", type="primary"):
    try:
        args = FINETUNE.arguments(values, tasks=ws.task_names, home=DataHome.from_env())
    except MergelabError as exc:
        st.error(messages.shown(exc))
    else:
        spec = resources.job_spec("finetune", ws, collection, (), args, name=FINETUNE.title(values))
        st.session_state["ft_job"] = resources.submit_job(spec)
        st.session_state["ft_beta_shown"] = args["config"]["beta"] if values["mode"] == "tau_jp" else None


restored = widgets.restore_job("ft_job", "finetune", collection)  # after a reload: the job this page started
if restored is not None:
    shown = restored.spec.get("args", {}).get("config", {})
    st.session_state["ft_beta_shown"] = shown.get("beta") if shown.get("mode") == "tau_jp" else None
    if restored.state == "done":  # done before this run: the sidebar above has read its checkpoint, no rerun due
        st.session_state["ft_done_job"] = restored.id


@st.fragment(run_every=1.0)
def live_run() -> None:
    """The job's progress and live curves; once it is done, each tick reruns the whole app until a whole run
    has seen it (`ft_full_run`), so the sidebar's checkpoint picker and the list below show the new fine-tune
    without a reload, even when Streamlit drops a rerun asked for while another one runs."""
    job = widgets.job_progress("ft_job")
    if job is None:
        return
    curves = job.result.curves if job.state is JobState.DONE else FinetuneCurves.from_json(job.metrics)
    if curves.step or curves.val_step:
        st.plotly_chart(figures.finetune_curves(curves, beta=st.session_state.get("ft_beta_shown")), key="ft_curves")
    if job.state is JobState.DONE:
        result: FinetuneOutcome = job.result
        st.success(
            f"Saved `{result.checkpoint}` in the data home (val accuracy "
            f"{result.zero_shot_val_accuracy:.1%} → {result.val_accuracy:.1%}). Choose it under "
            "'Fine-tuned checkpoints' in the sidebar of any page."
        )
        st.session_state["ft_done_job"] = job.id
        if st.session_state.get("ft_full_run") != job.id:  # no whole run has read the data home since
            st.rerun(scope="app")
    elif job.state is JobState.FAILED:
        st.error(messages.shown(job.error))


st.session_state["ft_full_run"] = st.session_state.get("ft_done_job")  # this whole run reads the new fine-tune
live_run()

st.subheader("Your fine-tunes of this collection")
collection_now = resources.user_collection(collection)
rows = []
for name in collection_now.task_names:
    for variant in collection_now.variants(name):
        meta = collection_now.checkpoint_meta(name, variant)
        if meta.source == "mergelab fine-tune":
            rows.append(
                {
                    "task": name,
                    "checkpoint": variant,
                    "mode": MODES.get(meta.training.get("mode"), meta.variant),
                    "β": meta.training.get("beta") if meta.training.get("mode") == "tau_jp" else None,
                    "rank": meta.training.get("lora", {}).get("rank"),
                    "steps": meta.training.get("steps"),
                    "val accuracy": meta.training.get("val_accuracy"),
                }
            )
if rows:
    st.dataframe(rows, column_config={"val accuracy": st.column_config.NumberColumn(format="percent")})
else:
    st.caption("None yet. They are written under the data home's checkpoints/finetuned/, never into the collection.")
