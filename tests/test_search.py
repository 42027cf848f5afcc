"""Sweeps and searches as batches of trials (engine/search/), with the in-process evaluator."""

import random

import pytest

from engine.errors import ParameterError
from engine.search.axes import parse_axes, parse_axis
from engine.search.coefficients import SearchSpace, coefficient_search
from engine.search.grid import grid_sweep
from engine.search.outcome import run_batch
from engine.search.trials import LocalEvaluator, TrialRequest
from engine.workspace import Workspace


@pytest.fixture(scope="module")
def ws(tiny_collection_dir, tmp_path_factory):
    return Workspace.open(tiny_collection_dir, cache_dir=tmp_path_factory.mktemp("cache"))


def test_an_axis_is_a_range_with_a_count_or_a_list():
    assert parse_axis("lam=0:1:5") == ("lam", (0.0, 0.25, 0.5, 0.75, 1.0))
    assert parse_axis("density=0.1,0.2,0.5") == ("density", (0.1, 0.2, 0.5))
    assert parse_axis("lam=0.3:0.3:1") == ("lam", (0.3,))
    assert len(parse_axis("lam=0:1:21")[1]) == 21 and parse_axis("lam=0:1:21")[1][1] == 0.05


@pytest.mark.parametrize("text", ["lam", "=1,2", "lam=", "lam=0:1", "lam=0:1:2.5", "lam=0:1:1", "lam=a,b"])
def test_a_malformed_axis_names_itself(text):
    with pytest.raises(ParameterError, match="grid"):
        parse_axis(text)


def test_an_axis_given_twice_is_refused():
    with pytest.raises(ParameterError, match="more than once"):
        parse_axes(["lam=0:1:3", "lam=0.5"])


def test_a_grid_sweep_evaluates_every_point_in_grid_order(ws):
    axes = parse_axes(["density=0.2,0.6", "lam=0.5:1.5:3"])
    outcome = grid_sweep(LocalEvaluator(ws), method="ties", tasks=ws.task_names, axes=axes)
    assert outcome.complete and outcome.planned == 6
    assert [t.params for t in outcome.trials] == [
        {"density": d, "lam": lam} for d in (0.2, 0.6) for lam in (0.5, 1, 1.5)
    ]
    for trial in outcome.trials:
        direct = ws.compare(ws.task_names, "ties", trial.params, split="val")
        assert trial.accuracy == direct.merged.accuracy and trial.mean_normalized == direct.mean_normalized


def test_a_grid_axis_must_be_a_declared_parameter(ws):
    with pytest.raises(ParameterError, match="ties.rank"):
        grid_sweep(LocalEvaluator(ws), method="ties", tasks=ws.task_names, axes=[("rank", (1.0,))])


def test_a_stopped_sweep_keeps_what_it_reached(ws):
    seen = []
    outcome = grid_sweep(
        LocalEvaluator(ws),
        method="task_arithmetic",
        tasks=ws.task_names,
        axes=[("lam", (0.1, 0.2, 0.3, 0.4))],
        on_trial=seen.append,
        stop=lambda: len(seen) >= 2,
    )
    assert not outcome.complete and [t.index for t in outcome.trials] == [0, 1] and outcome.planned == 4


def test_results_are_ordered_by_index_whatever_order_they_finish_in(ws):
    class Shuffled(LocalEvaluator):
        def run(self, requests, *, stop=lambda: False):
            results = list(super().run(requests, stop=stop))
            random.Random(3).shuffle(results)
            yield from results

    requests = [
        TrialRequest(i, "task_arithmetic", ws.task_names, {"lam": lam}) for i, lam in enumerate((0.1, 0.5, 0.9))
    ]
    finished = []
    ordered = run_batch(Shuffled(ws), requests, on_trial=finished.append, stop=lambda: False)
    assert [r.index for r in ordered] == [0, 1, 2] and [r.index for r in finished] != [0, 1, 2]


@pytest.mark.parametrize("strategy", ["tpe", "cma"])
def test_a_seeded_search_is_reproducible_and_reports_its_best_on_test(ws, strategy):
    space = SearchSpace("task_arithmetic", ws.task_names, low=0.0, high=1.0)
    run = lambda: coefficient_search(LocalEvaluator(ws), space, strategy=strategy, trials=10, batch=4, seed=7)
    first, second = run(), run()
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert len(first.trials) == 10 and first.complete
    assert all(len(t.params["lam"]) == 3 and all(0 <= v <= 1 for v in t.params["lam"]) for t in first.trials)
    assert len({tuple(t.params["lam"]) for t in first.trials}) == 10  # it explores
    assert first.best == second.best and first.test.split == "test" and first.test.params == first.best.params
    other_seed = coefficient_search(LocalEvaluator(ws), space, strategy=strategy, trials=4, batch=4, seed=8)
    assert other_seed.trials[0].params != first.trials[0].params


def test_a_search_in_other_batch_orders_asks_the_same_trials(ws):
    class Reversed(LocalEvaluator):
        def run(self, requests, *, stop=lambda: False):
            yield from reversed(list(super().run(requests, stop=stop)))

    space = SearchSpace("task_arithmetic", ws.task_names)
    kwargs = dict(strategy="tpe", trials=12, batch=4, seed=1, test_split=None)
    forward = coefficient_search(LocalEvaluator(ws), space, **kwargs)
    backward = coefficient_search(Reversed(ws), space, **kwargs)
    assert [t.params for t in forward.trials] == [t.params for t in backward.trials]


def test_a_search_space_must_be_a_per_task_parameter_in_range():
    with pytest.raises(ParameterError, match="per-task"):
        SearchSpace("ties", ("a", "b"), param="density")
    with pytest.raises(ParameterError, match="outside"):
        SearchSpace("task_arithmetic", ("a", "b"), low=0.0, high=5.0)


def test_with_mergelab_ray_unset_trials_run_in_process(ws, monkeypatch):
    from engine.search.backend import ray_setting, trial_evaluator

    monkeypatch.delenv("MERGELAB_RAY", raising=False)
    assert ray_setting() == "" and isinstance(trial_evaluator(ws), LocalEvaluator)
    monkeypatch.setenv("MERGELAB_RAY", "local")
    assert ray_setting() == "local" and ray_setting("auto") == "auto"


def test_a_grid_sweep_job_runs_from_its_json_spec(ws, tiny_collection_dir, tmp_path):
    from engine.jobs.runner import JobState, LocalRunner
    from engine.jobs.spec import JobSpec, submit
    from engine.runs.log import RunLog
    from engine.search.ref import WorkspaceRef

    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    args = {"tasks": list(ws.task_names), "method": "task_arithmetic", "grid": {"lam": [0.2, 0.4, 0.6]}}
    spec = JobSpec("grid_sweep", WorkspaceRef.of(ws, collection=str(tiny_collection_dir)), args, name="λ grid")
    spec = JobSpec.from_json(spec.to_json())
    job = submit(runner, spec, resolve=lambda _ref: ws)
    status = runner.wait(job, timeout=60)
    assert status.state is JobState.DONE, status.error
    (sweep,) = log.runs(top_level=True)
    assert sweep.kind == "grid_sweep" and log.job(job).spec["kind"] == "grid_sweep"
    assert [r.inputs["params"]["lam"] for r in sorted(log.runs(parent_id=sweep.id), key=lambda r: r.id)] == [
        0.2,
        0.4,
        0.6,
    ]
