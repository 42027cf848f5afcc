import pytest
import torch
import torch.nn.functional as F

from engine.data.tasks import normalize_batch
from engine.errors import DatasetError
from engine.eval.evaluate import evaluate, normalized_accuracy
from engine.merge import apply
from engine.models import create_visual
from engine.params import unflatten
from engine.pool.collection import load_collection, open_suite, pretrained_vector, task_matrix
from tests.builders import TINY_ARCH


@pytest.fixture(scope="module")
def suite_and_matrix(tiny_collection_dir, tmp_path_factory):
    collection = load_collection(tiny_collection_dir)
    suite = open_suite(collection, cache_dir=tmp_path_factory.mktemp("cache"))
    return collection, suite, task_matrix(collection)


def _per_image_loop(params, suite, split):
    """The reference: a real module with the weights loaded, one image at a time."""
    visual = create_visual(TINY_ARCH)
    visual.load_state_dict(unflatten(params, suite.spec))
    correct = {}
    with torch.no_grad():
        for name, task in suite.tasks.items():
            data = task.split(split)
            hits = 0
            for image, label in zip(data.images, data.labels):
                x = normalize_batch(image[None], suite.preprocess)
                logits = F.normalize(visual(x), dim=-1) @ suite.heads[name].T
                hits += int(logits.argmax() == label)
            correct[name] = hits
    return correct


@pytest.mark.parametrize("split", ["test", "interactive"])
def test_batched_evaluation_equals_a_per_image_loop(suite_and_matrix, split):
    _, suite, tm = suite_and_matrix
    merged = apply("task_arithmetic", tm.theta0, tm.T, {"lam": 0.4})
    result = evaluate(merged, suite, split, batch_size=50)
    assert result.correct == _per_image_loop(merged, suite, split)
    assert result.total == {t: len(suite.tasks[t].split(split)) for t in suite.task_names}


def test_interactive_split_is_a_fixed_subset_of_val(suite_and_matrix):
    _, suite, _ = suite_and_matrix
    task = suite.tasks["colour"]
    inter, val = task.split("interactive"), task.split("val")
    assert len(inter) == 128 < len(val)
    assert torch.equal(inter.images, task.split("interactive").images)
    assert all((val.images == img).flatten(1).all(1).any() for img in inter.images[:10])


def test_normalized_accuracy_matches_its_definition(suite_and_matrix):
    collection, suite, tm = suite_and_matrix
    reference = {}
    for k, name in enumerate(tm.task_names):
        reference[name] = evaluate(tm.theta0 + tm.T[k], suite, "test", tasks=[name]).accuracy[name]
    merged = apply("task_arithmetic", tm.theta0, tm.T, {"lam": 0.3})
    result = evaluate(merged, suite, "test", reference=reference)
    expected = {t: result.accuracy[t] / reference[t] for t in tm.task_names}
    assert result.normalized == pytest.approx(expected)
    assert result.mean_normalized == pytest.approx(sum(expected.values()) / len(expected))
    assert normalized_accuracy({"a": 0.5}, {"a": 0.8}) == {"a": 0.625}
    with pytest.raises(KeyError, match="'b'"):
        normalized_accuracy({"b": 0.5}, {"a": 0.8})


def test_zero_shot_vector_is_the_pretrained_tower(suite_and_matrix):
    collection, suite, tm = suite_and_matrix
    assert torch.equal(pretrained_vector(collection, suite.spec), tm.theta0)


def test_unknown_task_or_split(suite_and_matrix):
    _, suite, tm = suite_and_matrix
    with pytest.raises(DatasetError, match="'cars'|cars: is not a task"):
        evaluate(tm.theta0, suite, "test", tasks=["cars"])
    with pytest.raises(DatasetError, match="has no split 'dev'"):
        evaluate(tm.theta0, suite, "dev")


def test_concurrent_evaluations_do_not_disturb_each_other(suite_and_matrix):
    """Streamlit's fast reruns and several sessions evaluate on one shared suite from many threads."""
    from concurrent.futures import ThreadPoolExecutor

    _, suite, tm = suite_and_matrix
    lams = [0.0, 0.4, 0.8, 1.2] * 3
    merged = [apply("task_arithmetic", tm.theta0, tm.T, {"lam": lam}) for lam in lams]
    sequential = [evaluate(m, suite, "val", batch_size=16).correct for m in merged]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda m: evaluate(m, suite, "val", batch_size=16).correct, merged))
    assert parallel == sequential


def test_a_suite_without_tasks_is_refused_before_any_tensor_work():
    """torch.cat of no tasks' images used to be the error; the suite's emptiness is named instead."""
    from engine.eval.suite import EvalSuite

    empty = EvalSuite(visual=None, spec=None, preprocess=None, tasks={}, heads={})
    with pytest.raises(DatasetError, match="evaluation suite: holds no task to evaluate on 'test'"):
        evaluate(torch.zeros(1), empty, "test")
