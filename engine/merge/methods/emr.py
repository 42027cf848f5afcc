"""EMR-Merging (Huang et al., NeurIPS 2024): task-specific. One elected vector τ_uni is stored with a bit mask and
a rescaler per task; task t is served by θ₀ + λ·rₜ·(Mₜ ⊙ τ_uni), built on the fly (engine/merge/emr.py,
engine/merge/task_models.py): it needs the task id at inference. Tuning-free: Compare takes the paper's λ = 1."""

from engine.merge.declaration import CompareGrid, MergeMethod, Param
from engine.merge.emr import emr, emr_parts, emr_task_parts
from engine.merge.task_models import MASK_AND_RESCALER_PER_TASK

LAM = Param("lam", 1.0, 0.0, 2.0, 0.05, "scaling λ of every task's update (the paper: 1)", symbol="λ")

METHOD = MergeMethod(
    "emr",
    "EMR-Merging (task-specific)",
    "https://arxiv.org/abs/2405.17461",
    (LAM,),
    emr,
    formula="θₜ = θ₀ + λ rₜ (Mₜ ⊙ τ_uni): elected τ_uni, per-task mask Mₜ and rescaler rₜ (needs the task id)",
    sign_election="mass",
    cheap=("lam",),
    scale_parts=emr_parts,
    grid=CompareGrid.over(lam=(1.0,)),
    order=210,
    task_parts=emr_task_parts,
    storage=MASK_AND_RESCALER_PER_TASK,
)
