"""WUDI against a slow oracle (autograd of the paper's loss, one Adam optimiser per layer, float64), its
reductions, bad input, and how the Workspace keeps its optimised parts (cache and data home)."""

import pytest
import torch

from engine.errors import ParameterError
from engine.merge import apply
from engine.merge.wudi import wudi_run
from tests.test_merge_subspace import NAMES_SHAPES, SPEC, _matrix


@pytest.fixture()
def tower():
    torch.manual_seed(0)
    theta0 = torch.randn(SPEC.numel, dtype=torch.float64)  # [P]
    T = torch.randn(3, SPEC.numel, dtype=torch.float64) * 0.1  # [K, P]
    return theta0, T


def oracle_wudi(T: torch.Tensor, *, steps: int, lr: float) -> tuple[torch.Tensor, float]:
    """Δ [P] and the final summed loss: per 2-D tensor, Adam on Σₜ ‖(τ_m − τₜ) τₜᵀ‖² / ‖τₜ‖² from Σₜ τₜ,
    the loss written out and differentiated by autograd; every other tensor: the mean."""
    delta, final = torch.zeros(SPEC.numel, dtype=T.dtype), 0.0
    for name, shape in NAMES_SHAPES.items():
        taus = [_matrix(T[k], name) for k in range(T.shape[0])]
        if len(shape) != 2:
            delta[SPEC.slice_of(name)] = (sum(taus) / len(taus)).reshape(-1)
            continue
        merged = torch.nn.Parameter(sum(taus).clone())
        optimiser = torch.optim.Adam([merged], lr=lr)

        def loss() -> torch.Tensor:
            return sum(((merged - tau) @ tau.T).square().sum() / tau.square().sum() for tau in taus)

        for _ in range(steps):
            optimiser.zero_grad()
            loss().backward()
            optimiser.step()
        with torch.no_grad():
            final += float(loss())
        delta[SPEC.slice_of(name)] = merged.detach().reshape(-1)
    return delta, final


@pytest.mark.parametrize("steps, lr", [(40, 1e-3), (300, 1e-5)])
def test_wudi_matches_its_oracle(tower, steps, lr):
    _, T = tower
    run = wudi_run(T, SPEC, steps=steps, lr=lr)
    expected, final = oracle_wudi(T, steps=steps, lr=lr)
    torch.testing.assert_close(run.delta, expected, rtol=1e-5, atol=1e-10)
    start = wudi_run(T, SPEC, steps=0).delta
    torch.testing.assert_close(run.delta - start, expected - start, rtol=1e-5, atol=1e-10)  # the moves, not only Δ
    assert run.losses[-1] == pytest.approx(final, rel=1e-8)
    assert len(run.losses) == steps + 1 and run.losses[-1] < run.losses[0]


def test_wudi_through_the_registry_is_theta0_plus_alpha_delta(tower):
    theta0, T = tower
    merged = apply("wudi", theta0, T, {"alpha": 0.7, "steps": 20}, spec=SPEC)
    torch.testing.assert_close(merged, theta0 + 0.7 * wudi_run(T, SPEC, steps=20).delta, rtol=1e-12, atol=0)


def test_wudi_without_steps_is_the_sum_on_matrices_and_the_mean_elsewhere(tower):
    _, T = tower
    delta = wudi_run(T, SPEC, steps=0).delta
    for name, shape in NAMES_SHAPES.items():
        part = delta[SPEC.slice_of(name)]
        expected = T[:, SPEC.slice_of(name)].sum(0) if len(shape) == 2 else T[:, SPEC.slice_of(name)].mean(0)
        torch.testing.assert_close(part, expected, rtol=0, atol=1e-15)


def test_one_task_wudi_is_task_arithmetic_for_any_steps(tower):
    """With K = 1 the start Σₜ τₜ = τ has zero loss and zero gradient: Adam does not move it (beyond the
    float64 rounding of a zero gradient, which Adam's normalisation turns into steps of ~1e-10)."""
    theta0, T = tower
    merged = apply("wudi", theta0, T[:1], {"alpha": 0.6, "steps": 50}, spec=SPEC)
    torch.testing.assert_close(merged, apply("task_arithmetic", theta0, T[:1], {"lam": 0.6}), rtol=1e-5, atol=1e-8)


def test_progress_follows_every_step_and_can_cancel(tower):
    _, T = tower
    seen = []
    wudi_run(T, SPEC, steps=5, progress=lambda step, steps, loss: seen.append((step, steps)))
    assert seen == [(i, 5) for i in range(1, 6)]

    class Cancelled(Exception):
        pass

    def cancel(step, steps, loss):
        if step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        wudi_run(T, SPEC, steps=5, progress=cancel)


@pytest.mark.parametrize(
    "params, match", [({"steps": -10}, "steps"), ({"steps": 2000}, "steps"), ({"alpha": 5}, "alpha")]
)
def test_bad_wudi_settings_are_refused(tower, params, match):
    theta0, T = tower
    with pytest.raises(ParameterError, match=match):
        apply("wudi", theta0, T, params, spec=SPEC)


def test_a_workspace_keeps_wudi_in_the_data_home_and_reads_it_back(tiny_collection_dir, tmp_path):
    """An iterative method's parts outlive the process: a fresh workspace (new cache) reads them instead of
    optimising again; a damaged file is a miss, recomputed and replaced."""
    from engine.cache.memory import ComputeCache
    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path)
    tasks, params = ws.task_names, {"alpha": 1.0, "steps": 30}
    assert ws.merges.needs_job(tasks, "wudi", params) and not ws.merges.parts_ready(tasks, "wudi", params)
    steps_seen = []
    first = ws.merge(tasks, "wudi", params, progress=lambda step, steps, loss: steps_seen.append(step))
    assert steps_seen == list(range(1, 31))
    assert ws.merges.parts_ready(tasks, "wudi", params) and not ws.merges.needs_job(
        tasks, "wudi", {**params, "alpha": 0.5}
    )
    assert ws.merges.needs_job(tasks, "wudi", {"steps": 40})  # another step count is another optimisation
    stored = ws.merges.parts_store.path(ws.merges.parts_key(ws.merges.plan(tasks, "wudi", params)))
    assert stored.is_file()

    fresh = Workspace.from_collection(ws.collection, cache_dir=tmp_path, cache=ComputeCache())
    assert fresh.merges.parts_ready(tasks, "wudi", params) and not fresh.merges.needs_job(tasks, "wudi", params)
    fresh_steps = []
    again = fresh.merge(tasks, "wudi", params, progress=lambda step, steps, loss: fresh_steps.append(step))
    assert fresh_steps == [] and torch.equal(again, first)  # read, not optimised

    stored.write_bytes(stored.read_bytes()[:100])  # a damaged entry
    other = Workspace.from_collection(ws.collection, cache_dir=tmp_path, cache=ComputeCache())
    torch.testing.assert_close(other.merge(tasks, "wudi", params), first, rtol=0, atol=0)
    assert stored.is_file() and stored.stat().st_size > 100  # replaced by the recomputed parts
