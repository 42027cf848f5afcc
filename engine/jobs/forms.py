"""The parameters of each job a page starts, declared once: the page's widgets (`ui.widgets.job_input`) and the
command's flags (engine/cli_jobs.py) are both made from a `JobForm`, and both turn the values they read into
the job's arguments with the same `JobForm.arguments`, so a page and its command cannot drift apart.

A form is named as its page names the job (`finetune`, `learn`, `taujp`, `importance`, `compare`,
`landscape`, and `parts` for the Merge page's expensive parts, e.g. WUDI's); a field's name is its flag
(`--penalty-batch`) and, after the form's prefix, its widget's session key (`ft_penalty_batch`). Chosen
where the pages were silent: a field that applies only under another's value (β only in τJp mode) is still
a flag, and is ignored, as on the page, where it does not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from engine.errors import ParameterError
from engine.home import DataHome
from engine.jobs.spec import to_fields
from engine.learn.coefficients import LearnConfig
from engine.learn.dvbasi import DvBasiConfig
from engine.merge import METHODS, get_method
from engine.merge.pipeline import calibrated_pipelines, pipeline_display
from engine.sta.importance import KINDS as IMPORTANCE_KINDS
from engine.train.finetune import MODES, PENALTY_SCHEDULES, FinetuneConfig
from engine.train.lora import DEFAULT_TARGETS, LORA_TARGETS

WIDGETS = ("number", "slider", "select", "radio", "toggle", "select_slider", "multiselect", "method_params")
# method_params: a merge method's own declared parameters (engine/merge/registry.py), the Merge page's sliders


@dataclass(frozen=True)
class Field:
    """One parameter of a job: its value's type is its default's (bool, int, float, str, list of str, or a
    dict of a method's parameters by name)."""

    name: str
    label: str
    default: Any  # a task field: the index of the collection's task it defaults to
    widget: str = "number"
    help: str = ""
    choices: Mapping[Any, str] | None = None  # value → what the page shows for it
    tasks: bool = False  # its choices are the collection's tasks
    low: float | None = None  # a slider's range
    high: float | None = None
    step: float | None = None
    format: str | None = None
    applies_when: tuple[str, tuple[Any, ...]] | None = None  # (field, values): where it is not ignored
    more: bool = False  # under the page's "More settings"

    def __post_init__(self) -> None:
        if self.widget not in WIDGETS:
            raise ValueError(f"{self.name}: widget {self.widget!r} is not one of {WIDGETS}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether the value counts for these values of the other fields (the page disables it where not)."""
        return self.applies_when is None or values.get(self.applies_when[0]) in self.applies_when[1]

    def options(self, tasks: Sequence[str]) -> list[Any]:
        return list(tasks) if self.tasks else list(self.choices or ())

    def default_value(self, tasks: Sequence[str]) -> Any:
        return tasks[min(self.default, len(tasks) - 1)] if self.tasks else self.default

    def checked(self, value: Any, *, form: str, tasks: Sequence[str]) -> Any:
        """The value, or a ParameterError naming the flag and what it may be."""
        options = self.options(tasks)
        picked = value if isinstance(value, list) else [value]
        if options and any(v not in options for v in picked):
            raise ParameterError(f"{form} {self.flag}", f"{value!r} is not one of {options}", fix="choose one of them")
        return value


@dataclass(frozen=True)
class JobForm:
    """A job kind's parameters and how their values become the job's JSON arguments."""

    command: str  # the subcommand, and the page's name for the job
    kind: str  # a key of engine.jobs.spec.JOB_KINDS
    help: str
    prefix: str  # the page's widget keys: f"{prefix}_{field.name}"
    fields: tuple[Field, ...]
    build: Callable[..., dict[str, Any]]  # (values, tasks=, home=) → the job's arguments
    title: Callable[[Mapping[str, Any]], str]  # the job's name in the jobs table

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def key(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def defaults(self, tasks: Sequence[str]) -> dict[str, Any]:
        return {f.name: f.default_value(tasks) for f in self.fields}

    def arguments(self, values: Mapping[str, Any], *, tasks: Sequence[str], home: DataHome) -> dict[str, Any]:
        """The job's JSON arguments for these values (missing ones at their defaults), each checked: a
        ParameterError names the first bad one."""
        merged = {**self.defaults(tasks), **values}
        checked = {f.name: f.checked(merged[f.name], form=self.command, tasks=tasks) for f in self.fields}
        return self.build(checked, tasks=tuple(tasks), home=home)


def _finetune(values: Mapping[str, Any], *, tasks: tuple[str, ...], home: DataHome) -> dict[str, Any]:
    steps, tau_jp, lora = int(values["steps"]), values["mode"] == "tau_jp", values["mode"] == "lora"
    low_rank = {"lora_rank": int(values["rank"]), "lora_alpha": float(values["alpha"])} if lora else {}
    config = FinetuneConfig(
        mode=values["mode"],
        steps=steps,
        batch_size=int(values["batch"]),
        lr=float(values["lr"]),
        beta=float(values["beta"]) if tau_jp else 0.0,
        penalty=values["penalty"],
        penalty_batch=int(values["penalty_batch"]),
        eval_every=max(1, steps // 10),
        **low_rank,
        **({"lora_targets": tuple(values["targets"])} if lora else {}),
    )
    config.check(other_tasks=len(tasks) - 1)
    return {"task": values["task"], "config": to_fields(config), "out_root": str(home.ensure().finetunes)}


def _learn(values: Mapping[str, Any], *, tasks: tuple[str, ...], home: DataHome) -> dict[str, Any]:
    objective, epochs, patience = values["objective"], int(values["epochs"]), int(values["patience"])
    atlas = LearnConfig(objective=objective, epochs=epochs, patience=patience)
    config = (
        DvBasiConfig(
            iterations=int(values["iterations"]),
            scaling=values["scaling"],
            direction=values["direction"],
            learn=LearnConfig(objective=objective, epochs=epochs, patience=patience, select_by="fit_loss"),
        )
        if values["dv_basi"]
        else None
    )
    return {
        "start": values["start"],
        "lam": float(values["lam"]),
        "atlas_config": to_fields(atlas),
        "config": None if config is None else to_fields(config),
        "out_dir": str(home.ensure().exports),
    }


def _landscape(values: Mapping[str, Any], *, tasks: tuple[str, ...], home: DataHome) -> dict[str, Any]:
    """The grid 0, step, …, 1 of both λ (the page's grid)."""
    if values["a"] == values["b"]:
        raise ParameterError("landscape --a/--b", f"are both {values['a']!r}", fix="pick two different tasks")
    step = float(values["step"])
    return {"tasks": [values["a"], values["b"]], "values": [round(i * step, 6) for i in range(round(1.0 / step) + 1)]}


def _compare(values: Mapping[str, Any], *, tasks: tuple[str, ...], home: DataHome) -> dict[str, Any]:
    """No methods chosen: every method with a grid (the page's button), as an empty argument list."""
    return {"methods": list(values["methods"])} if values["methods"] else {}


def _parts(values: Mapping[str, Any], *, tasks: tuple[str, ...], home: DataHome) -> dict[str, Any]:
    """The method's expensive parameters (its declared defaults where not given), checked against its ranges."""
    method = get_method(values["method"])
    unknown = sorted(set(values["param"]) - {p.name for p in method.params})
    if unknown:
        raise ParameterError(f"parts --param {unknown[0]}", f"is no parameter of {method.name}", fix="see `methods`")
    resolved = method.resolve(dict(values["param"]), num_tasks=len(tasks))
    return {"method": method.name, "params": {n: float(resolved[n]) for n in method.expensive}, "tasks": list(tasks)}


FINETUNE = JobForm(
    "finetune",
    "finetune",
    "fine-tune one task (standard, linearized, linearized with the τJp penalty, or a LoRA adapter); the checkpoint "
    "goes to the data home, where every page lists it",
    "ft",
    (
        Field("task", "Task", 0, "select", tasks=True),
        Field("mode", "Mode", "tau_jp", "select", choices=MODES),
        Field("steps", "Steps", 200, step=50),
        Field(
            "beta",
            "β (penalty weight)",
            0.1,
            step=0.1,
            format="%.3f",
            applies_when=("mode", ("tau_jp",)),
            help="weight of the τJp penalty in the loss; not the merge coefficient λ",
        ),
        Field(
            "rank",
            "LoRA rank",
            8,
            step=1,
            applies_when=("mode", ("lora",)),
            help="r of every adapted Linear: the adapter stores r · (in + out) numbers per Linear",
        ),
        Field(
            "targets",
            "LoRA targets",
            list(DEFAULT_TARGETS),
            "multiselect",
            choices={t: t for t in LORA_TARGETS},
            applies_when=("mode", ("lora",)),
            help="q, k, v: the rows of the fused attention in_proj; out: attn.out_proj; fc1, fc2: the MLP",
        ),
        Field("lr", "learning rate", 1e-3, format="%.1e", step=1e-4, more=True),
        Field("batch", "batch size", 128, step=16, more=True),
        Field(
            "alpha",
            "LoRA α",
            8.0,
            step=1.0,
            format="%.1f",
            applies_when=("mode", ("lora",)),
            more=True,
            help="the update is (α / rank) · B · A, as PEFT scales it",
        ),
        Field(
            "penalty",
            "penalty schedule",
            "strict",
            "radio",
            choices={s: s for s in PENALTY_SCHEDULES},
            applies_when=("mode", ("tau_jp",)),
            more=True,
            help="strict: a batch of every other task each step; cyclic: one other task per step, in turn",
        ),
        Field("penalty_batch", "images per other task", 8, step=4, applies_when=("mode", ("tau_jp",)), more=True),
    ),
    _finetune,
    lambda v: f"fine-tune {v['task']} · {MODES[v['mode']]}",
)
LEARN = JobForm(
    "learn",
    "learn",
    "learn aTLAS coefficients, then DV-BASI scales; the merged checkpoint goes to the data home's exports",
    "dv",
    (
        Field(
            "start",
            "Start from",
            "atlas",
            "radio",
            choices={"atlas": "aTLAS (learned first)", "task_arithmetic": "task arithmetic"},
        ),
        Field(
            "lam",
            "λ (task arithmetic start)",
            0.3,
            "slider",
            low=0.0,
            high=1.0,
            step=0.05,
            applies_when=("start", ("task_arithmetic",)),
        ),
        Field(
            "objective",
            "Objective",
            "supervised",
            "radio",
            choices={"supervised": "supervised", "unsupervised": "unsupervised"},
            help="supervised: cross-entropy with val labels; unsupervised: prediction entropy (AdaMerging)",
        ),
        Field("dv_basi", "Then DV-BASI", True, "toggle"),
        Field("iterations", "DV-BASI iterations", 4, step=1, applies_when=("dv_basi", (True,))),
        Field("patience", "patience (epochs)", 5, step=1),
        Field("epochs", "max epochs per stage", 30, step=5, more=True),
        Field(
            "scaling",
            "DV-BASI scaling",
            "blockwise",
            "radio",
            choices={"blockwise": "blockwise", "isotropic": "isotropic"},
            more=True,
            help="isotropic: one scalar per iteration (the paper's ablation)",
        ),
        Field(
            "direction",
            "DV-BASI direction",
            "difference",
            "radio",
            choices={"difference": "difference", "random": "random"},
            more=True,
            help="random: a random direction of the same norm as δ (control)",
        ),
    ),
    _learn,
    lambda v: f"{'aTLAS' if v['start'] == 'atlas' else 'TA'}{' + DV-BASI' if v['dv_basi'] else ''} · {v['objective']}",
)
TAUJP = JobForm(
    "taujp",
    "taujp",
    "the τJp matrix of the task vectors (cached in the data home, where the Interference page reads it)",
    "taujp",
    (),
    lambda values, *, tasks, home: {},
    lambda v: "τJp matrix",
)
IMPORTANCE = JobForm(
    "importance",
    "importance",
    "every task's STA importance map of a kind (cached in the data home, where the STA page reads them)",
    "sta",
    (Field("kind", "Importance", "tau", "select", choices=IMPORTANCE_KINDS),),
    lambda values, *, tasks, home: {"kind": values["kind"]},
    lambda v: f"STA importance maps ({v['kind']})",
)
COMPARE = JobForm(
    "compare",
    "compare",
    "every merge method at its best val setting, reported on test",
    "compare",
    (
        Field(
            "methods",
            "Methods",
            [],
            "multiselect",
            choices={
                **{name: m.display_name for name, m in METHODS.items()},
                **{name: pipeline_display(name) for name in calibrated_pipelines()},
            },
            help="none chosen: every method with a grid (an iterative one on a large model on the CPU left out); "
            "a calibrated pipeline (TSV-M → SVC) searches its base's grid and the calibrator's declared axis",
        ),
    ),
    _compare,
    lambda v: "compare methods",
)
LANDSCAPE = JobForm(
    "landscape",
    "landscape",
    "two tasks' task-arithmetic merge over a λ₁ × λ₂ grid, evaluated and as the tangent preview",
    "landscape",
    (
        Field("a", "task 1 (rows)", 0, "select", tasks=True),
        Field("b", "task 2 (columns)", 1, "select", tasks=True),
        Field("step", "grid step of λ", 0.1, "select_slider", choices={0.25: "0.25", 0.2: "0.2", 0.1: "0.1"}),
    ),
    _landscape,
    lambda v: "λ landscape",
)
PARTS = JobForm(
    "parts",
    "merge_parts",
    "compute a merge's expensive parts (WUDI's Adam steps, a large model's SVDs) into the data home, where the "
    "Merge page then merges from them on every slider move",
    "parts",
    (
        Field(
            "method",
            "Method",
            "wudi",
            "select",
            choices={n: m.display_name for n, m in METHODS.items() if m.scale_parts and (m.iterative or m.per_layer)},
        ),
        Field("param", "parameters", {}, "method_params", help="NAME=VALUE, e.g. steps=300 (repeat it)"),
    ),
    _parts,
    lambda v: f"{get_method(v['method']).display_name} parts",
)
FORMS: Mapping[str, JobForm] = MappingProxyType(
    {f.command: f for f in (FINETUNE, LEARN, TAUJP, IMPORTANCE, COMPARE, LANDSCAPE, PARTS)}
)
