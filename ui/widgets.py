"""Sliders built from a merge method's declared parameters, so new methods need no page changes."""
from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from engine.merge import MergeMethod, Param
from engine.merge.registry import ParamValue


def param_key(method: MergeMethod, param: Param, task: str | None = None) -> str:
    return f"{method.name}.{param.name}" + (f".{task}" if task else "")


def _slider(label: str, param: Param, key: str) -> float:
    st.session_state.setdefault(key, param.default)
    return st.slider(label, min_value=param.low, max_value=param.high, step=param.step, key=key,
                     help=param.help, bind="query-params")


def method_params(method: MergeMethod, tasks: Sequence[str], *, per_task: bool) -> dict[str, ParamValue]:
    """One slider per parameter; per-task parameters get one slider per task when `per_task`."""
    values: dict[str, ParamValue] = {}
    for param in method.params:
        if param.per_task and per_task:
            columns = st.columns(min(4, max(1, len(tasks))))
            values[param.name] = [
                _column_slider(columns[i % len(columns)], f"{param.label} · {task}", param,
                               param_key(method, param, task))
                for i, task in enumerate(tasks)]
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
