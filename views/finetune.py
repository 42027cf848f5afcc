"""Fine-tune: train one task's image tower (standard, linearized, or linearized with the τJp penalty) as a job."""

import streamlit as st

from engine.errors import MergelabError
from engine.home import DataHome
from engine.jobs.finetune import FinetuneCurves, FinetuneOutcome
from engine.jobs.runner import JobState
from engine.jobs.spec import to_fields
from engine.train.finetune import MODES, PENALTY_SCHEDULES, FinetuneConfig
from ui import figures, messages, pages, resources, widgets
from ui.state import current_collection

st.header(pages.heading("finetune"))
st.caption(
    "Linearized fine-tuning trains the first-order model f(x; θ₀) + J f(x; θ₀)·(θ − θ₀), so task vectors add "
    "exactly in function space. The τJp penalty (Yoshida et al., ICLR 2025) adds β · mean ‖J f(x; θ₀)·(θ − θ₀)‖ "
    "over other tasks' images: the vector learns its task while leaving the others' embeddings where they were, "
    "so merges interfere less and work at λ ≈ 1. Compare the variants on the Merge and Interference pages."
)
collection = current_collection()
ws = resources.workspace_or_stop(collection)
defaults = {
    "ft_task": ws.task_names[0],
    "ft_mode": "tau_jp",
    "ft_beta": 0.1,
    "ft_steps": 200,
    "ft_lr": 1e-3,
    "ft_batch": 128,
    "ft_penalty": "strict",
    "ft_penalty_batch": 8,
}
for key, value in defaults.items():
    st.session_state.setdefault(key, value)
a, b = st.columns(2)
task = a.selectbox("Task", ws.task_names, key="ft_task")
mode = b.selectbox("Mode", list(MODES), key="ft_mode", format_func=MODES.get)
c, d = st.columns(2)
steps = c.number_input("Steps", step=50, key="ft_steps")
beta = d.number_input(
    "β (penalty weight)",
    step=0.1,
    key="ft_beta",
    format="%.3f",
    disabled=mode != "tau_jp",
    help="weight of the τJp penalty in the loss; not the merge coefficient λ",
)
with st.expander("More settings"):
    e, f, g, h = st.columns(4)
    lr = e.number_input("learning rate", key="ft_lr", format="%.1e", step=1e-4)
    batch = f.number_input("batch size", key="ft_batch", step=16)
    penalty = g.radio(
        "penalty schedule",
        PENALTY_SCHEDULES,
        key="ft_penalty",
        disabled=mode != "tau_jp",
        help="strict: a batch of every other task each step; cyclic: one other task per step, in turn",
    )
    penalty_batch = h.number_input("images per other task", key="ft_penalty_batch", step=4, disabled=mode != "tau_jp")

others = len(ws.task_names) - 1
if st.button("Fine-tune as a background job", type="primary"):
    try:
        config = FinetuneConfig(
            mode=mode,
            steps=int(steps),
            batch_size=int(batch),
            lr=float(lr),
            beta=float(beta) if mode == "tau_jp" else 0.0,
            penalty=penalty,
            penalty_batch=int(penalty_batch),
            eval_every=max(1, int(steps) // 10),
        )
        config.check(other_tasks=others)
    except MergelabError as exc:
        st.error(messages.shown(exc))
    else:
        args = {"task": task, "config": to_fields(config), "out_root": str(DataHome.from_env().ensure().finetunes)}
        name = f"fine-tune {task} · {MODES[mode]}"
        st.session_state["ft_job"] = resources.submit_job(
            resources.job_spec("finetune", ws, collection, (), args, name=name)
        )
        st.session_state["ft_beta_shown"] = config.beta if mode == "tau_jp" else None


restored = widgets.restore_job("ft_job", "finetune", collection)  # after a reload: the job this page started
if restored is not None:
    shown = restored.spec.get("args", {}).get("config", {})
    st.session_state["ft_beta_shown"] = shown.get("beta") if shown.get("mode") == "tau_jp" else None


@st.fragment(run_every=1.0)
def live_run() -> None:
    """The job's progress and live curves; the tick that first sees it done reruns the whole app once, so the
    sidebar's checkpoint picker and the list below show the new fine-tune without a reload."""
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
        if st.session_state.get("ft_rerun_for") != job.id:  # once per job: the rerun renders this again
            st.session_state["ft_rerun_for"] = job.id
            st.rerun(scope="app")
    elif job.state is JobState.FAILED:
        st.error(messages.shown(job.error))


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
                    "mode": meta.variant,
                    "β": meta.training.get("beta"),
                    "steps": meta.training.get("steps"),
                    "val accuracy": meta.training.get("val_accuracy"),
                }
            )
if rows:
    st.dataframe(rows, column_config={"val accuracy": st.column_config.NumberColumn(format="percent")})
else:
    st.caption("None yet. They are written under the data home's checkpoints/finetuned/, never into the collection.")
