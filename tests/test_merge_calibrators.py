"""Calibrators after a base merge: LiNeS and SVC against float64 oracles written from their papers, against
FusionBench 0.2.33's SVC (tests/fixtures/fusionbench_svc.json, generated once by make_fusionbench_svc.py; the two
differ only where a task does not touch a direction), their reductions, and a λ or α move after a calibrated
merge that computes no new SVD."""

import json
from pathlib import Path

import pytest
import torch

import engine.merge.pipeline as pipeline
from engine.cache.memory import ComputeCache
from engine.errors import ParameterError, UnknownMethodError
from engine.io.tensor_store import TensorStore
from engine.merge.calibrators import lines_depth_fraction, svc, svc_factors
from engine.merge.pipeline import check_transforms, split_params
from engine.merge.session import MergeSession
from engine.params import ParamSpec, TaskMatrix
from engine.pool.collection import load_collection, task_matrix

FIXTURE = Path(__file__).parent / "fixtures" / "fusionbench_svc.json"
SPEC = ParamSpec(
    (
        "class_embedding",
        "conv1.weight",
        "ln_post.weight",
        "proj",
        "transformer.resblocks.0.attn.w",
        "transformer.resblocks.1.mlp.b",
        "transformer.resblocks.1.mlp.w",
        "transformer.resblocks.2.mlp.w",
    ),
    ((4,), (3, 2, 2), (4,), (4, 3), (6, 4), (6,), (6, 4), (5, 4)),
)


def _svc64(
    update: torch.Tensor, tasks: torch.Tensor, alpha: float, *, untouched_at_floor: bool = False
) -> torch.Tensor:
    """Algorithm 1 of the SVC paper on one matrix, float64, a loop per direction and task: Δ [m, n], τ [K, m, n].
    A task that does not touch direction r is left out of its sum (our rule); `untouched_at_floor` counts it at
    the floor α instead (FusionBench 0.2.33's, whose 0/0 becomes α)."""
    U, S, Vh = torch.linalg.svd(update, full_matrices=False)
    gamma = torch.ones_like(S)
    for r in range(S.shape[0]):
        merged = S[r] * Vh[r]
        floors = []
        for task in tasks:
            response = U[:, r] @ task
            norm = float(response @ response)
            if norm > 1e-20 * float(tasks.square().sum()):
                floors.append(max(alpha, float(merged @ response) / norm))
            elif untouched_at_floor:
                floors.append(alpha)
        if floors:
            gamma[r] = len(floors) / sum(floors)
    return U @ torch.diag(gamma * S) @ Vh


def _pool(K: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SPEC.numel, generator=g), torch.randn(K, SPEC.numel, generator=g)


def test_svc_equals_the_papers_algorithm_layer_by_layer_and_leaves_other_tensors():
    _, T = _pool()
    direction = T.sum(dim=0) * 0.7  # any update: here a scaled sum
    got = svc(direction, svc_factors(direction, T, SPEC), SPEC, scale=0.6, alpha=0.9)
    for name in SPEC.names:
        part = slice(SPEC.slice_of(name).start, SPEC.slice_of(name).stop)
        if name in SPEC.matrices():
            tasks = SPEC.matrix_view(T, name).double()
            expected = _svc64(0.6 * SPEC.matrix_view(direction, name).double(), tasks, 0.9)
            torch.testing.assert_close(SPEC.matrix_view(got, name), expected.float(), rtol=1e-4, atol=1e-5)
        else:
            torch.testing.assert_close(got[part], 0.6 * direction[part])


def _fixture_case(name: str) -> dict:
    return next(c for c in json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"] if c["name"] == name)


def _on_one_matrix(case: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ParamSpec]:
    base = torch.tensor(case["base"], dtype=torch.float64)
    tasks = torch.stack([torch.tensor(t, dtype=torch.float64) - base for t in case["tasks"]])  # [K, m, n]
    spec = ParamSpec(("w",), (tuple(base.shape),))
    T = tasks.flatten(1).float()  # [K, P]
    got = svc(T.sum(0), svc_factors(T.sum(0), T, spec), spec, scale=1.0, alpha=case["alpha"]).view(base.shape)
    return got.double() + base, tasks, base, spec


@pytest.mark.parametrize("name", ["three tasks", "three tasks, alpha 0.5", "one task", "three identical tasks"])
def test_svc_matches_fusionbench_and_the_papers_algorithm(name):
    case = _fixture_case(name)
    got, tasks, base, _ = _on_one_matrix(case)
    fusionbench = torch.tensor(case["calibrated"], dtype=torch.float64)
    torch.testing.assert_close(got, fusionbench, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got, base + _svc64(tasks.sum(0), tasks, case["alpha"]), rtol=1e-4, atol=1e-5)


def test_where_a_task_does_not_touch_a_direction_we_leave_it_out_and_fusionbench_counts_it_at_alpha():
    """Two tasks on disjoint blocks: each direction of the sum is one task's. We leave the other task out (γ from
    the task that is there); FusionBench 0.2.33 counts it at the floor α, which shrinks γ to 2/(s + α)."""
    case = _fixture_case("two tasks on disjoint blocks")
    got, tasks, base, _ = _on_one_matrix(case)
    fusionbench = torch.tensor(case["calibrated"], dtype=torch.float64)
    ours = base + _svc64(tasks.sum(0), tasks, case["alpha"])
    torch.testing.assert_close(got, ours, rtol=1e-4, atol=1e-5)
    theirs = base + _svc64(tasks.sum(0), tasks, case["alpha"], untouched_at_floor=True)
    torch.testing.assert_close(fusionbench, theirs)
    assert not torch.allclose(got, fusionbench, atol=1e-3)
    torch.testing.assert_close(got, base + tasks.sum(0), rtol=1e-4, atol=1e-5)  # s = 1 for the one task: γ = 1


def test_a_direction_no_task_touches_keeps_its_singular_value():
    spec = ParamSpec(("w",), ((3, 2),))
    T = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # the task lives in row 0 only
    direction = torch.tensor([2.0, 0.0, 0.0, 0.0, 0.0, 3.0])  # a second direction (row 2) no task touches
    got = svc(direction, svc_factors(direction, T, spec), spec, scale=1.0, alpha=1.0)
    # row 0: s = ⟨(2, 0), (1, 0)⟩ / 1 = 2 → γ = 1/2; row 2: untouched, γ = 1
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 3.0]))


def test_lines_scales_each_layer_by_its_depth_and_places_the_other_tensors():
    fraction = lines_depth_fraction(SPEC)
    expected = {
        "class_embedding": 0.0,  # before the blocks: depth 1
        "conv1.weight": 0.0,
        "transformer.resblocks.0.attn.w": 0.0,
        "transformer.resblocks.1.mlp.b": 0.5,
        "transformer.resblocks.1.mlp.w": 0.5,
        "transformer.resblocks.2.mlp.w": 1.0,
        "ln_post.weight": 1.0,  # after the blocks: depth L
        "proj": 1.0,
    }
    for name, value in expected.items():
        assert torch.all(fraction[SPEC.slice_of(name)] == value), name


@pytest.fixture(scope="module")
def matrix(tiny_collection_dir):
    return task_matrix(load_collection(tiny_collection_dir))


def _session(matrix: TaskMatrix, tmp_path) -> MergeSession:
    return MergeSession(matrix, ComputeCache(), "fp", TensorStore(tmp_path / "parts"), lambda kind: None)


@pytest.mark.parametrize("method, params", [("task_arithmetic", {"lam": 0.4}), ("tsv_m", {"alpha": 0.8})])
def test_lines_at_alpha_one_and_beta_zero_is_the_base_merge(matrix, tmp_path, method, params):
    session = _session(matrix, tmp_path)
    base = session.merge(matrix.task_names, method, params)
    calibrated = session.merge(matrix.task_names, method, params, calibrate=("lines",))
    torch.testing.assert_close(calibrated, base)
    moved = session.merge(matrix.task_names, method, {**params, "lines.beta": 1.0}, calibrate=("lines",))
    fraction = lines_depth_fraction(matrix.spec)
    torch.testing.assert_close(moved, matrix.theta0 + (base - matrix.theta0) * (1 + fraction))


def test_svc_of_one_task_under_task_arithmetic_at_one_is_the_identity(matrix, tmp_path):
    one = TaskMatrix(matrix.theta0, matrix.T[:1].clone(), matrix.spec, matrix.task_names[:1])
    session = _session(one, tmp_path)
    for alpha in (0.3, 1.0):
        got = session.merge(one.task_names, "task_arithmetic", {"lam": 1.0, "svc.alpha": alpha}, calibrate=("svc",))
        torch.testing.assert_close(got, one.theta0 + one.T[0], rtol=1e-5, atol=1e-5)


def test_svc_of_identical_tasks_under_task_arithmetic_at_one_is_that_task(matrix, tmp_path):
    same = TaskMatrix(matrix.theta0, matrix.T[:1].repeat(3, 1), matrix.spec, ("a", "b", "c"))
    session = _session(same, tmp_path)
    got = session.merge(same.task_names, "task_arithmetic", {"lam": 1.0}, calibrate=("svc",))
    for name in same.spec.names:  # SVC calibrates the matrices; other tensors keep the base merge, 3·τ
        expected = same.T[0] if name in same.spec.matrices() else 3 * same.T[0]
        part = same.spec.slice_of(name)
        torch.testing.assert_close(got[part], same.theta0[part] + expected[part], rtol=1e-5, atol=1e-5)


def test_a_scale_or_alpha_move_after_a_calibrated_merge_computes_no_svd(matrix, tmp_path, monkeypatch):
    factorized = []
    monkeypatch.setattr(pipeline, "svc_factors", lambda *a: factorized.append(1) or svc_factors(*a))
    session, tasks = _session(matrix, tmp_path), matrix.task_names
    steps = ("lines", "svc")
    session.merge(tasks, "tsv_m", {"alpha": 1.0, "lines.beta": 0.5}, calibrate=steps)
    assert len(factorized) == 1
    before = session.cache.stats().misses
    params = {"alpha": 0.6, "lines.beta": 0.5, "svc.alpha": 0.7}
    moved = session.merge(tasks, "tsv_m", params, calibrate=steps)
    assert session.cache.stats().misses == before and len(factorized) == 1
    torch.testing.assert_close(
        moved, _session(matrix, tmp_path / "fresh").merge(tasks, "tsv_m", params, calibrate=steps)
    )
    before = len(factorized)
    session.merge(tasks, "tsv_m", {**params, "lines.beta": 0.2}, calibrate=steps)  # LiNeS runs first: SVC's input
    assert len(factorized) == before + 1


def test_a_lambda_move_after_calibrated_task_arithmetic_computes_no_svd(matrix, tmp_path, monkeypatch):
    """Task arithmetic caches no parts, but it is linear in λ (`linear_scale`): SVC keeps λ apart as for TSV-M."""
    factorized = []
    monkeypatch.setattr(pipeline, "svc_factors", lambda *a: factorized.append(1) or svc_factors(*a))
    session, tasks = _session(matrix, tmp_path), matrix.task_names
    session.merge(tasks, "task_arithmetic", {"lam": 0.3}, calibrate=("svc",))
    moved = session.merge(tasks, "task_arithmetic", {"lam": 0.6, "svc.alpha": 0.7}, calibrate=("svc",))
    assert len(factorized) == 1
    fresh = _session(matrix, tmp_path / "fresh").merge(tasks, "task_arithmetic", {"lam": 0.6, "svc.alpha": 0.7},
                                                       calibrate=("svc",))  # fmt: skip
    torch.testing.assert_close(moved, fresh)


def test_pipeline_parameters_are_namespaced_and_checked():
    assert split_params({"alpha": 1.0, "svc.alpha": 0.5}, ("svc",)) == ({"alpha": 1.0}, {"svc": {"alpha": 0.5}})
    with pytest.raises(UnknownMethodError, match="svc.alpha"):
        split_params({"svc.alpha": 0.5}, ())
    with pytest.raises(UnknownMethodError, match="svc.beta"):
        pipeline.SVC.resolve({"beta": 1.0})
    with pytest.raises(UnknownMethodError, match="larv"):
        check_transforms(["larv"])


def test_a_task_specific_merge_is_not_calibrated(matrix, tmp_path):
    with pytest.raises(ParameterError, match="its own model"):
        _session(matrix, tmp_path).merge(matrix.task_names, "emr", {}, calibrate=("svc",))
