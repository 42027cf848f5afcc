"""Learned coefficients: the block-scaled merge's algebra, aTLAS and DV-BASI on the tiny collection."""

from dataclasses import replace

import pytest
import torch

from engine.errors import ParameterError
from engine.learn.atlas import atlas
from engine.learn.coefficients import LearnConfig, ValSplit, block_sizes, combine, objective_loss
from engine.learn.dvbasi import DvBasiConfig, dv_basi
from engine.pool.collection import load_collection, open_suite, task_matrix

SHORT = LearnConfig(epochs=3, patience=3, batch_size=24)
INNER = LearnConfig(epochs=3, patience=3, batch_size=24, select_by="fit_loss")


@pytest.fixture(scope="module")
def setup(tiny_collection_dir, tmp_path_factory):
    collection = load_collection(tiny_collection_dir)
    suite = open_suite(collection, cache_dir=tmp_path_factory.mktemp("cache"))
    return suite, task_matrix(collection), ValSplit.of(suite)


def test_zero_coefficients_give_the_start_point_exactly(setup):
    suite, tm, _ = setup
    sizes = block_sizes(tm.spec)
    n = sizes.numel()
    assert int(sizes.sum()) == tm.spec.numel and n == len(tm.spec.names)
    zero = torch.zeros(tm.num_tasks, n)
    assert torch.equal(combine(tm.theta0, tm.T, zero, sizes), tm.theta0)
    ones = torch.ones(tm.num_tasks, n)
    torch.testing.assert_close(combine(tm.theta0, tm.T, ones, sizes), tm.theta0 + tm.T.sum(0))
    coefficients = torch.randn(tm.num_tasks, n, dtype=torch.float64, requires_grad=True)
    T64, base64 = tm.T.double()[:, :], tm.theta0.double()
    torch.autograd.gradcheck(lambda c: combine(base64, T64, c, sizes)[::997], (coefficients,))
    ids = torch.repeat_interleave(torch.arange(n), sizes)
    torch.testing.assert_close(
        combine(tm.theta0, tm.T, ones * 0.5, sizes),
        tm.theta0 + sum(0.5 * torch.ones(n)[ids] * tm.T[k] for k in range(tm.num_tasks)),
    )


def test_large_blocks_and_runs_of_small_ones_give_the_same_merge_and_gradient(setup):
    _, tm, _ = setup
    sizes = block_sizes(tm.spec)
    assert (sizes >= 997).any() and (sizes < 997).sum() > 2, "both kinds of segment must occur"
    coefficients = torch.randn(tm.num_tasks, sizes.numel(), dtype=torch.float64, requires_grad=True)
    T64, base64 = tm.T.double(), tm.theta0.double()
    ids = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)  # block of each entry [P]
    reference = base64 + (coefficients[:, ids] * T64).sum(0)  # [P]
    merged = combine(base64, T64, coefficients, sizes, group=997)
    torch.testing.assert_close(merged, reference)
    weights = torch.randn_like(reference)
    (grad,) = torch.autograd.grad((merged * weights).sum(), coefficients)
    (expected,) = torch.autograd.grad((reference * weights).sum(), coefficients)
    torch.testing.assert_close(grad, expected)


def test_segments_tile_the_vector_in_block_order_for_any_sizes():
    from engine.learn.coefficients import _Segments

    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        n = int(torch.randint(1, 30, (), generator=generator))
        sizes = torch.randint(1, 50, (n,), generator=generator) * torch.randint(1, 4, (n,), generator=generator) ** 3
        group = int(torch.randint(1, 200, (), generator=generator))
        position, block = 0, 0
        spans = _Segments.of(sizes, group).spans
        for start, stop, first, lengths in spans:
            assert (start, first) == (position, block) and lengths.tolist() == sizes[
                first : first + len(lengths)
            ].tolist()
            assert int(lengths.sum()) == stop - start and (len(lengths) == 1 or int(lengths.max()) < group)
            position, block = stop, block + len(lengths)
        assert (position, block) == (int(sizes.sum()), n) and len(spans) <= 2 * position / group + 1


def test_gradients_reach_only_the_coefficients(setup):
    suite, tm, data = setup
    sizes = block_sizes(tm.spec)
    coefficients = torch.zeros(tm.num_tasks, sizes.numel(), requires_grad=True)
    batch = {t: data.fit[t] for t in suite.task_names}
    objective_loss(suite, combine(tm.theta0, tm.T, coefficients, sizes), batch, "supervised").backward()
    assert coefficients.grad is not None and coefficients.grad.abs().sum() > 0
    assert not tm.T.requires_grad and not tm.theta0.requires_grad
    assert all(p.grad is None for p in suite.visual.parameters())


def test_a_dvbasi_step_with_scale_one_doubles_delta(setup):
    suite, tm, _ = setup
    sizes = block_sizes(tm.spec)
    current = tm.theta0 + 0.3 * tm.T.sum(0)
    delta = current - tm.theta0
    moved = combine(current, delta[None], torch.ones(1, sizes.numel()), sizes)
    torch.testing.assert_close(moved - tm.theta0, 2 * delta)


def test_dvbasi_iterations_equal_one_blockwise_scale_of_the_first_delta(setup):
    suite, tm, data = setup
    start = tm.theta0 + 0.3 * tm.T.sum(0)
    result = dv_basi(suite, tm.theta0, start, tm.spec, data=data, config=DvBasiConfig(iterations=2, learn=INNER))
    sizes = block_sizes(tm.spec)
    product, points = torch.ones_like(result.iterations[0].scales), [start]
    for it in result.iterations:
        product = product * (1 + it.scales)
        points.append(combine(points[-1], (points[-1] - tm.theta0)[None], it.scales[None], sizes))
    expanded = torch.repeat_interleave(product, sizes)  # D_b per entry [P]
    torch.testing.assert_close(points[-1], tm.theta0 + expanded * (start - tm.theta0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.theta, points[result.best_iteration])
    assert all(it.delta_norm > 0 and len(it.epochs) >= 1 for it in result.iterations)


def test_atlas_lowers_its_objective_and_keeps_the_best_epoch(setup):
    suite, tm, data = setup
    learned = atlas(suite, tm.theta0, tm.T, tm.spec, data=data, config=replace(SHORT, epochs=6, patience=6))
    history = learned.learned.history
    assert history[-1].loss < history[0].loss
    assert learned.learned.coefficients.shape == (tm.num_tasks, len(learned.blocks))
    if learned.learned.best_epoch:
        chosen = history[learned.learned.best_epoch - 1].mean_selection
        assert chosen == max(r.mean_selection for r in history)


def test_isotropic_and_random_controls_run(setup):
    suite, tm, data = setup
    start = tm.theta0 + 0.3 * tm.T.sum(0)
    iso = dv_basi(
        suite, tm.theta0, start, tm.spec, data=data, config=DvBasiConfig(iterations=1, scaling="isotropic", learn=INNER)
    )
    assert iso.iterations[0].scales.shape == (1,)
    rnd = dv_basi(
        suite, tm.theta0, start, tm.spec, data=data, config=DvBasiConfig(iterations=1, direction="random", learn=INNER)
    )
    assert rnd.iterations[0].delta_norm == pytest.approx(float((start - tm.theta0).norm()), rel=1e-4)


@pytest.mark.parametrize(
    "make, key",
    [
        (lambda: DvBasiConfig(iterations=0), "iterations"),
        (lambda: DvBasiConfig(learn=LearnConfig(patience=0)), "patience"),
    ],
)
def test_bad_settings_are_refused_when_the_config_is_made(make, key):
    with pytest.raises(ParameterError) as info:
        make()
    assert info.value.subject == key


def test_val_split_is_disjoint_and_covers_val(setup):
    suite, _, data = setup
    for task, part in suite.tasks.items():
        val = part.split("val")
        assert len(data.fit[task]) + len(data.select[task]) == len(val)
        rows = {tuple(x.flatten().tolist()) for x in data.fit[task].images}
        assert not rows & {tuple(x.flatten().tolist()) for x in data.select[task].images}


def test_learn_job_logs_exports_and_a_cancel_keeps_the_best_point(tiny_collection_dir, tmp_path):
    import threading

    from engine.io.checkpoints import load_checkpoint
    from engine.jobs.learn import LearnCurves, learn_job
    from engine.jobs.runner import Cancelled, JobContext
    from engine.runs.log import RunLog
    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    log = RunLog(tmp_path / "runs.sqlite3")
    seen = []
    ctx = JobContext(lambda **change: seen.append(change), threading.Event())
    outcome = learn_job(
        ctx,
        workspace=ws,
        atlas_config=SHORT,
        config=DvBasiConfig(iterations=1, learn=INNER),
        out_dir=tmp_path / "exports",
        run_log=log,
    )
    assert outcome.point.startswith("aTLAS") and set(outcome.accuracy) == set(ws.task_names)
    assert [e.stage for e in outcome.curves.epochs][:1] == ["atlas"]
    assert len(outcome.curves.iterations) == 1 and seen[-1]["metrics"]["iterations"]
    assert load_checkpoint(outcome.artifact).meta.variant == "merged"
    (run,) = log.runs(kind="learned")
    assert run.status == "done" and run.method == "dv_basi"
    assert LearnCurves.from_json(run.outputs["curves"]) == outcome.curves  # the JSON round-trips
    assert run.outputs["start"]["point"] == outcome.start.point == "aTLAS" and not outcome.partial

    cancel = threading.Event()

    def update(**change):
        if "dv-basi" in change.get("message", ""):
            cancel.set()  # cancel during the first DV-BASI epoch

    with pytest.raises(Cancelled):
        learn_job(
            JobContext(update, cancel),
            workspace=ws,
            atlas_config=SHORT,
            config=DvBasiConfig(iterations=3, learn=INNER),
            run_log=log,
        )
    cancelled = [r for r in log.runs(kind="learned") if r.status == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0].outputs["point"] == "aTLAS" and cancelled[0].outputs["partial"]
    assert cancelled[0].outputs["mean_accuracy"] == pytest.approx(
        sum(cancelled[0].outputs["accuracy"].values()) / len(ws.task_names)
    )
