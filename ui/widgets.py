"""Sliders built from a merge method's declared parameters, so new methods need no page changes; the widgets
of a job's declared parameters (engine/jobs/forms.py), so a page and its command take the same ones."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import streamlit as st

from engine.home import DataHome
from engine.jobs import progress
from engine.jobs.forms import IMPORTANCE, TAUJP, JobForm
from engine.merge import MergeMethod, Param
from engine.merge.declaration import ParamValue
from engine.merge.pipeline import CALIBRATORS, qualified_params
from engine.sta.importance import KINDS
from engine.workspace import Workspace
from ui import formats, job_states, links, resources
from ui.state import CHOICE, current_collection


def param_key(method: MergeMethod, param: Param, task: str | None = None) -> str:
    return f"{method.name}.{param.name}" + (f".{task}" if task else "")


def param_links(method: MergeMethod, tasks: Sequence[str], *, per_task: bool) -> list[links.Link]:
    """The method's parameters in the URL by their own names (`lam=0.3`, `lam.digits=0.4` per task), reading
    the method-qualified names links carried before (`task_arithmetic.lam=0.3`)."""
    found = []
    for param in method.params:
        keys = [(f".{t}", t) for t in tasks] if param.per_task and per_task else [("", None)]
        found += [
            links.number(
                f"{param.name}{suffix}",
                param_key(method, param, task),
                low=param.low,
                high=param.high,
                default=param.default,
                aliases=(f"{method.name}.{param.name}{suffix}",),
            )
            for suffix, task in keys
        ]
    return found


def calibrator_key(qualified: str) -> str:
    """The state key of a calibrator's parameter (`svc.alpha` → `calibrate.svc.alpha`)."""
    return f"calibrate.{qualified}"


def calibrator_links(calibrate: Sequence[str]) -> list[links.Link]:
    """The calibrators' parameters in the URL by their namespaced names (`svc.alpha=0.8`)."""
    return [
        links.number(name, calibrator_key(name), low=p.low, high=p.high, default=p.default)
        for name, p in qualified_params(calibrate)
    ]


def calibrator_params(calibrate: Sequence[str]) -> dict[str, float]:
    """One slider per parameter of each chosen calibrator, labelled with its calibrator; values by namespaced name."""
    return {
        name: _slider(f"{CALIBRATORS[name.split('.')[0]].short_name} {p.label}", p, calibrator_key(name))
        for name, p in qualified_params(calibrate)
    }


def _slider(label: str, param: Param, key: str) -> float:
    """A float slider; a count (whole default, bounds and step, e.g. WUDI's steps) reads as an integer, not as
    Streamlit's float default format '%0.2f' ("300.00")."""
    st.session_state.setdefault(key, param.default)
    counts = all(float(v).is_integer() for v in (param.default, param.low, param.high, param.step))
    return st.slider(
        label,
        min_value=param.low,
        max_value=param.high,
        step=param.step,
        key=key,
        help=param.help,
        format="%d" if counts else None,
    )


def method_params(
    method: MergeMethod, tasks: Sequence[str], *, per_task: bool, columns: int = 4
) -> dict[str, ParamValue]:
    """One slider per parameter; per-task parameters get one slider per task when `per_task`, in up to
    `columns` columns."""
    values: dict[str, ParamValue] = {}
    for param in method.params:
        if param.per_task and per_task:
            cells = st.columns(min(columns, max(1, len(tasks))))
            values[param.name] = [
                _column_slider(cells[i % len(cells)], f"{param.label} · {task}", param, param_key(method, param, task))
                for i, task in enumerate(tasks)
            ]
        else:
            values[param.name] = _slider(param.label, param, param_key(method, param))
    return values


def _column_slider(column, label: str, param: Param, key: str) -> float:
    with column:
        return _slider(label, param, key)


def set_params_in_state(method: MergeMethod, tasks: Sequence[str], params: dict[str, ParamValue]) -> bool:
    """Put a recipe's parameter values into the sliders' state; returns whether any is per task."""
    per_task = False
    for param in method.params:
        value = params.get(param.name, param.default)
        if isinstance(value, list) and param.per_task and len(value) == len(tasks):
            per_task = True
            for task, v in zip(tasks, value):
                st.session_state[param_key(method, param, task)] = float(v)
        else:
            st.session_state[param_key(method, param)] = float(value[0] if isinstance(value, list) else value)
    return per_task


def job_defaults(form: JobForm, tasks: Sequence[str]) -> None:
    """Put the form's defaults into the widgets' state (once per session)."""
    for name, value in form.defaults(tasks).items():
        st.session_state.setdefault(form.key(name), value)


def job_input(
    container, form: JobForm, name: str, *, tasks: Sequence[str] = (), values: Mapping[str, Any] | None = None
):
    """The widget of one declared job parameter in `container` (a column, an expander or `st`), keyed
    f"{form.prefix}_{name}"; disabled where `values` (the fields read before it) make it not apply."""
    field, key = form.field(name), form.key(name)
    options, disabled, helped = field.options(tasks), not field.applies(values or {}), field.help or None
    shown = field.choices.get if field.choices else str
    if field.widget == "number":
        return container.number_input(
            field.label, step=field.step, format=field.format, key=key, disabled=disabled, help=helped
        )
    if field.widget == "slider":
        return container.slider(
            field.label, field.low, field.high, step=field.step, key=key, disabled=disabled, help=helped
        )
    if field.widget == "toggle":
        return container.toggle(field.label, key=key, disabled=disabled, help=helped)
    if field.widget == "select_slider":
        return container.select_slider(field.label, options, key=key, disabled=disabled, help=helped)
    draw = {"select": container.selectbox, "radio": container.radio, "multiselect": container.multiselect}
    return draw[field.widget](field.label, options, key=key, format_func=shown, disabled=disabled, help=helped)


def require_importance(ws: Workspace, kind: str) -> None:
    """Stop the page with two ways to get STA importance maps when they are neither shipped nor cached."""
    _require(
        ws.importance.ready(kind),
        what=f"STA importance maps ({KINDS[kind]}) for {len(ws.task_names)} tasks",
        cost="a few gradient passes per task (seconds for small models, minutes for ViT-B/32 on a CPU)",
        compute=lambda: ws.importance.codes(kind),
        key=f"importance_{kind}",
        job=(IMPORTANCE, {"kind": kind}),
    )


def require_taujp(ws: Workspace) -> None:
    """Stop the page with two ways to get the τJp matrix when it is neither shipped nor cached."""
    _require(
        ws.taujp.ready(),
        what=f"the τJp matrix of {len(ws.task_names)} task vectors",
        cost="Jacobian-vector products on 64 val images per task (seconds for small models, many minutes "
        "for ViT-B/32 on a CPU)",
        compute=ws.taujp.matrix,
        key="taujp",
        job=(TAUJP, {}),
    )


def _require(ready: bool, *, what: str, cost: str, compute, key: str, job: tuple[JobForm, dict]) -> None:
    """`job`: (form, values) of the background job that computes it on the sidebar's workspace."""
    if ready:
        return
    st.info(f"This needs {what}, and it is not cached yet: {cost}.")
    now, background = st.columns(2)
    if now.button("Compute now", key=f"{key}_now", help="blocks this page until done"):
        with st.spinner("Computing…"):
            compute()
        st.rerun()
    if background.button("Compute as a background job", key=f"{key}_job"):
        form, values = job
        collection, choice = current_collection(), st.session_state.get(CHOICE, ())  # the page's workspace
        ws = resources.workspace_or_stop(collection, choice)
        args = form.arguments(values, tasks=ws.task_names, home=DataHome.from_env())
        spec = resources.job_spec(form.kind, ws, collection, choice, args, name=form.title(values))
        job_id = resources.submit_job(spec)
        st.success(f"Started job #{job_id}: follow it on Jobs & runs, then come back.")
    st.stop()


def restore_job(
    session_key: str,
    kind: str,
    collection: str,
    *,
    for_key: str | None = None,
    setting_of: Callable[[Mapping[str, Any]], str] | None = None,
):
    """The job a page shows: the one this session started (its id in st.session_state[session_key]), else,
    as after a browser reload, the newest job of `kind` on `collection` that this server runs or ran, put in
    st.session_state[session_key] (with its Cancel where this browser started it: ui/owner.py).
    A page that shows its job only for the setting it was started with gets that setting back too:
    st.session_state[for_key] = setting_of(the job's arguments). Returns the JobRecord it restored, else None."""
    if st.session_state.get(session_key) is not None:
        return None
    record = resources.latest_job(kind, collection)
    if record is not None:
        st.session_state[session_key] = record.id
        if for_key is not None and setting_of is not None:
            st.session_state[for_key] = setting_of(record.spec.get("args", {}))
    return record


def job_progress(session_key: str):
    """The progress bar of the job whose id is in st.session_state[session_key], with a Cancel button
    only when this session owns the job (another session's reads "another session's"); returns its
    JobStatus (None when no job was started from this page)."""
    from engine.jobs.runner import FINISHED

    job_id = st.session_state.get(session_key)
    if job_id is None:
        return None
    runner = resources.job_runner()
    job = runner.status(job_id)
    left, right = st.columns([5, 1])
    job_states.job_bar(
        left,
        job_id=job.id,
        name=job.name,
        state=job.state.value,
        step=job.step,
        total=job.total,
        message=job.message,
        timing=formats.job_time(progress.of_status(job)),
    )
    if job.state not in FINISHED:
        if not resources.owns_job(job.id):
            right.caption("another session's")
        elif right.button("Cancel", key=f"{session_key}_cancel"):
            resources.cancel_job(job.id)
    return job
