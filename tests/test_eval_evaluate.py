import pytest
import torch
import torch.nn.functional as F

from engine.data.tasks import normalize_batch
from engine.errors import DatasetError, ParameterError
from engine.eval.evaluate import bf16_fast, encode_images, evaluate, normalized_accuracy, predictions
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


def _bare_features(params, suite, images, dtype):
    """The reference: a real module with the weights loaded and converted to `dtype`, the batch too."""
    visual = create_visual(TINY_ARCH)
    visual.load_state_dict(unflatten(params, suite.spec))
    visual = visual.to(dtype)
    with torch.no_grad():
        x = normalize_batch(images, suite.preprocess).to(dtype)
        return F.normalize(visual(x).float(), dim=-1)


def test_bfloat16_evaluation_is_the_tower_converted_to_bfloat16(suite_and_matrix):
    _, suite, tm = suite_and_matrix
    merged = apply("task_arithmetic", tm.theta0, tm.T, {"lam": 0.4})
    images = suite.tasks["colour"].split("test").images[:40]
    bf16 = encode_images(merged, suite, images, batch_size=40, precision="bfloat16")
    assert bf16.dtype == torch.float32
    assert torch.equal(bf16, _bare_features(merged, suite, images, torch.bfloat16))
    fp32 = encode_images(merged, suite, images, batch_size=40)
    assert torch.allclose(fp32, _bare_features(merged, suite, images, torch.float32), atol=1e-6)
    cosine = (bf16 * fp32).sum(dim=-1)  # [N]
    assert cosine.min() > 0.99 and not torch.equal(bf16, fp32)  # close, yet computed in another precision


def test_bfloat16_predictions_mostly_agree_and_float32_is_the_default(suite_and_matrix):
    _, suite, tm = suite_and_matrix
    merged = apply("task_arithmetic", tm.theta0, tm.T, {"lam": 0.4})
    parts = {t: suite.tasks[t].split("test") for t in suite.task_names}
    fp32, bf16 = (predictions(merged, suite, parts, precision=p) for p in ("float32", "bfloat16"))
    assert evaluate(merged, suite, "test").correct == {t: int((fp32[t] == parts[t].labels).sum()) for t in parts}
    changed = sum(int((fp32[t] != bf16[t]).sum()) for t in parts)
    assert changed <= 0.05 * sum(len(p) for p in parts.values())
    result = evaluate(merged, suite, "test", precision="bfloat16")
    assert result.correct == {t: int((bf16[t] == parts[t].labels).sum()) for t in parts}


def test_unknown_precision_and_bfloat16_on_a_linearized_suite_are_refused(suite_and_matrix):
    _, suite, tm = suite_and_matrix
    with pytest.raises(ParameterError, match="precision: unknown precision 'float16'"):
        evaluate(tm.theta0, suite, "test", precision="float16")
    with pytest.raises(ParameterError, match="precision: bfloat16 is not offered for a linearized suite"):
        evaluate(tm.theta0, suite.linearized(tm.theta0), "test", precision="bfloat16")


def test_bf16_fast_only_names_devices_with_bf16_units():
    assert not bf16_fast("meta")
    assert bf16_fast("cuda") == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    flags = open("/proc/cpuinfo").read().split()
    assert bf16_fast("cpu") == ("amx_bf16" in flags or "avx512_bf16" in flags)
