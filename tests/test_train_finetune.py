"""Fine-tuning in its three modes, linearized checkpoints evaluated as such, and the fine-tune job."""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.errors import CheckpointError, ParameterError
from engine.eval.evaluate import evaluate
from engine.eval.tangent import linearized_features
from engine.home import DataHome
from engine.jobs.finetune import FinetuneCurves
from engine.jobs.runner import JobState, LocalRunner
from engine.params import unflatten
from engine.pool.collection import load_collection, open_suite, pretrained_vector, task_matrix
from engine.taujp.matrix import taujp_matrix
from engine.taujp.preview import TangentPreview
from engine.train.finetune import FinetuneConfig, finetune
from engine.workspace import Workspace

TINY = FinetuneConfig(mode="tau_jp", steps=25, batch_size=16, lr=3e-3, warmup_steps=2, beta=0.0, penalty_batch=16)


@pytest.fixture(scope="module")
def setup(tiny_collection_dir, tmp_path_factory):
    collection = load_collection(tiny_collection_dir)
    suite = open_suite(collection, cache_dir=tmp_path_factory.mktemp("cache"))
    return suite, pretrained_vector(collection, suite.spec)


def _train(setup, config, task="colour"):
    suite, theta0 = setup
    others = {t: suite.tasks[t].split("train").images for t in suite.task_names if t != task}
    return finetune(
        suite.visual,
        suite.spec,
        theta0,
        suite.heads[task],
        suite.tasks[task].split("train"),
        suite.preprocess,
        config,
        others=others,
    )


def _off_diagonal_taujp(setup, theta, task="colour"):
    suite, theta0 = setup
    others = [t for t in suite.task_names if t != task]
    matrix = taujp_matrix(suite, theta0, (theta - theta0)[None], names=[task], tasks=others, split="val")
    return float(matrix.values.mean())


def test_the_taujp_penalty_lowers_taujp_on_the_other_tasks(setup):
    plain = _train(setup, TINY)
    penalised = _train(setup, replace(TINY, beta=1.0))
    assert penalised.history[-1].penalty is not None and plain.history[-1].penalty is not None
    before, after = _off_diagonal_taujp(setup, plain.theta), _off_diagonal_taujp(setup, penalised.theta)
    assert after < 0.5 * before, (before, after)
    cyclic = _train(setup, replace(TINY, beta=1.0, penalty="cyclic"))
    assert _off_diagonal_taujp(setup, cyclic.theta) < before


def test_linearized_and_standard_modes_both_fit_and_differ(setup):
    suite, theta0 = setup
    config = replace(TINY, mode="linearized", steps=15)
    result = _train(setup, config)
    assert result.history[-1].loss < result.history[0].loss
    assert all(step.penalty is None for step in result.history)
    standard = _train(setup, replace(config, mode="standard"))
    assert standard.history[-1].loss < standard.history[0].loss
    assert not torch.equal(standard.theta, result.theta)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"beta": -0.1}, "beta"),
        ({"steps": 0}, "steps"),
        ({"mode": "bogus"}, "mode"),
        ({"penalty": "sometimes"}, "penalty"),
    ],
)
def test_bad_settings_are_refused_before_any_work(change, key):
    with pytest.raises(ParameterError) as info:
        replace(TINY, **change)  # configs check themselves when made
    assert info.value.subject == key and "Fix:" in str(info.value)


def test_the_penalty_needs_other_tasks_inputs(setup):
    suite, theta0 = setup
    with pytest.raises(ParameterError, match="other tasks' inputs"):
        finetune(
            suite.visual,
            suite.spec,
            theta0,
            suite.heads["colour"],
            suite.tasks["colour"].split("train"),
            suite.preprocess,
            TINY,
            others={},
        )


def _with_linearized_variant(tiny_collection_dir, tmp_path):
    """A copy of the tiny collection whose tasks also have a short linearized fine-tune, via the job."""
    from engine.jobs.finetune import finetune_job

    root = tmp_path / "collection"
    shutil.copytree(tiny_collection_dir, root)
    home = DataHome.from_env().ensure()
    ws = Workspace.open(root, cache_dir=home.cache)
    runner = LocalRunner()
    names = {}
    for task in ws.task_names:
        status = runner.wait(
            runner.submit(
                "ft",
                finetune_job,
                workspace=ws,
                task=task,
                out_root=home.finetunes,
                config=replace(TINY, mode="linearized", steps=4, eval_every=2),
            ),
            timeout=120,
        )
        assert status.state is JobState.DONE, status.error
        names[task] = status.result.checkpoint
    return root, home, names, status


def test_finetune_job_writes_to_the_data_home_and_every_list_shows_it(tiny_collection_dir, tmp_path):
    root, home, names, status = _with_linearized_variant(tiny_collection_dir, tmp_path)
    curves = status.result.curves
    assert curves.step == (1, 2, 3, 4) and curves.val_step == (0, 2, 4) and len(curves.loss) == 4
    assert FinetuneCurves.from_json(status.metrics) == curves  # the last progress report is the final curve
    assert not any((root / "finetuned").glob("*linearized*")), "a fine-tune must never be written into the collection"
    collection = load_collection(root).with_finetunes(home.finetunes)
    task = "texture"
    assert names[task] in collection.variants(task)
    meta = collection.checkpoint_meta(task, names[task])
    assert meta.variant == "linearized" and meta.linearized and meta.training["steps"] == 4
    assert meta.parent_sha256 == collection.pretrained().sha256


def test_linearized_checkpoints_are_evaluated_as_linearized_models(tiny_collection_dir, tmp_path):
    root, home, names, _ = _with_linearized_variant(tiny_collection_dir, tmp_path)
    collection = load_collection(root).with_finetunes(home.finetunes)
    ws = Workspace.from_collection(collection, cache_dir=home.cache, variants=names)
    assert ws.linearized and ws.variant_of("texture") == names["texture"]
    m = ws.matrix
    theta = m.theta0 + 0.6 * m.T.sum(dim=0)  # [P]
    part = ws.suite.tasks["colour"].split("test")
    feats = torch.nn.functional.normalize(linearized_features(ws.suite, m.theta0, theta, part.images), dim=-1)
    expected = float(((feats @ ws.suite.heads["colour"].T).argmax(-1) == part.labels).float().mean())
    assert ws.compare(
        ["colour", "brightness", "texture"], "task_arithmetic", {"lam": 0.6}, split="test"
    ).merged.accuracy["colour"] == pytest.approx(expected)
    assert ws.importance.source("colour", "tau").config.model == "linearized"  # STA takes the linearized gradient
    assert ws.importance.source("colour", "grad0").config.model == "network"  # at θ₀ both agree: shared map
    preview = TangentPreview.build(ws.suite, m.theta0, m.T, vectors=m.task_names, split="test")
    exact = evaluate(theta, ws.suite, "test").accuracy
    assert preview.accuracy([0.6] * 3) == pytest.approx(exact)
    mixed = {"colour": names["colour"]}
    with pytest.raises(CheckpointError, match="linearized"):
        Workspace.from_collection(collection, cache_dir=home.cache, variants=mixed)


def test_task_matrix_takes_one_checkpoint_per_task(tiny_collection_dir, tmp_path):
    root, home, names, _ = _with_linearized_variant(tiny_collection_dir, tmp_path)
    collection = load_collection(root).with_finetunes(home.finetunes)
    mixed = task_matrix(collection, variants={"colour": names["colour"]})
    standard = task_matrix(collection)
    assert not torch.equal(mixed.T[0], standard.T[0]) and torch.equal(mixed.T[1], standard.T[1])


def test_lora_trains_only_low_rank_updates_of_its_targets(setup):
    """Mode lora: the loss falls, every adapted block moves by a matrix of rank ≤ r, nothing else moves, and the
    factors it returns rebuild θ (Hu et al., Eq. 3: W₀ + s·B·A)."""
    suite, theta0 = setup
    config = replace(TINY, mode="lora", steps=15, lora_rank=2, lora_alpha=4.0, lora_targets=("q", "v", "fc1"))
    result = _train(setup, config)
    assert result.history[-1].loss < result.history[0].loss and result.lora is not None
    before, after = unflatten(theta0, suite.spec), unflatten(result.theta, suite.spec)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {k for k, _, _ in result.lora}
    for (name, row, rows), (up, down) in result.lora.items():
        delta = (after[name] - before[name])[row : row + rows]  # [rows, in]
        assert torch.linalg.matrix_rank(delta) <= 2 and torch.allclose(delta, up @ down, atol=1e-6), name
    in_proj = next(n for n, _, _ in result.lora if n.endswith("attn.in_proj_weight"))
    k_rows = slice(after[in_proj].shape[1], 2 * after[in_proj].shape[1])  # q, k, v: row blocks of W
    assert torch.equal(after[in_proj][k_rows], before[in_proj][k_rows]), "k is no target: its rows stay θ₀'s"


def test_a_lora_finetune_job_saves_an_adapter_every_list_shows(tiny_collection_dir, tmp_path):
    """The job writes a PEFT adapter folder in the data home (never the collection); the collection lists it by
    name, reads it back as the θ the trainer ended at, with the recipe in its metadata."""
    from engine.jobs.finetune import finetune_job
    from engine.pool.collection import task_matrix

    home = DataHome.from_env().ensure()
    ws = Workspace.open(tiny_collection_dir, cache_dir=home.cache)
    runner = LocalRunner()
    config = replace(TINY, mode="lora", steps=4, eval_every=2, lora_rank=2)
    status = runner.wait(
        runner.submit("ft", finetune_job, workspace=ws, task="texture", out_root=home.finetunes, config=config),
        timeout=120,
    )
    assert status.state is JobState.DONE, status.error
    folder = Path(status.result.path)
    assert folder.is_dir() and {p.name for p in folder.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "mergelab.json",
    }
    assert status.result.checkpoint.startswith("lora-r2-s4-") and home.finetunes in folder.parents
    collection = load_collection(tiny_collection_dir).with_finetunes(home.finetunes)
    meta = collection.checkpoint_meta("texture", status.result.checkpoint)
    assert meta.source == "mergelab fine-tune" and meta.training["mode"] == "lora" and not meta.linearized
    assert meta.training["lora"]["rank"] == 2 and meta.class_names == ws.suite.tasks["texture"].class_names
    read = task_matrix(collection, variants={"texture": status.result.checkpoint})
    tau = unflatten(read.T[read.task_names.index("texture")], read.spec)  # the adapter's ΔW, as a pool reads it
    moved = {k for k, v in tau.items() if v.abs().max() > 0}
    assert moved == {f"transformer.resblocks.{i}.{w}" for i in _layers(read.spec) for w in ADAPTED}
    assert all(torch.linalg.matrix_rank(tau[k][: tau[k].shape[1]]) <= 2 for k in moved)


ADAPTED = ("attn.in_proj_weight", "attn.out_proj.weight")  # the default targets q, k, v, out


def _layers(spec):
    return {n.split(".")[2] for n in spec.names if n.startswith("transformer.resblocks.")}
