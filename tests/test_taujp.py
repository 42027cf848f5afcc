"""Jacobian-vector products, the τJp matrix and the tangent-space preview on the tiny collection."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from engine.data.tasks import normalize_batch
from engine.errors import DatasetError, ShapeError
from engine.eval.tangent import jvp_features, linearized_features
from engine.params import unflatten
from engine.pool.collection import load_collection, open_suite, task_matrix
from engine.taujp.matrix import layer_breakdown, pair_interference, taujp_matrix
from engine.taujp.preview import TangentPreview


@pytest.fixture(scope="module")
def setup(tiny_collection_dir, tmp_path_factory):
    collection = load_collection(tiny_collection_dir)
    suite = open_suite(collection, cache_dir=tmp_path_factory.mktemp("cache"))
    return suite, task_matrix(collection)


def _embed(suite, params, images):
    x = normalize_batch(images, suite.preprocess).to(params.dtype)
    with torch.no_grad():
        return functional_call(suite.visual, unflatten(params, suite.spec), (x,))


def test_jvp_matches_a_central_finite_difference(setup):
    suite, tm = setup
    images = suite.tasks["colour"].split("val").images[:16]
    theta0, v = tm.theta0.double(), tm.T[0].double()
    suite64 = type(suite)(suite.visual.double(), suite.spec, suite.preprocess, suite.tasks, suite.heads)
    try:
        f0, jv = jvp_features(suite64, theta0, v[None], images)
        h = 1e-4
        fd = (_embed(suite64, theta0 + h * v, images) - _embed(suite64, theta0 - h * v, images)) / (2 * h)
    finally:
        suite.visual.float()
    torch.testing.assert_close(f0, _embed(suite64, theta0, images), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(jv[0], fd, rtol=1e-5, atol=1e-6)


def test_batched_products_equal_per_sample_and_per_vector(setup):
    suite, tm = setup
    images = suite.tasks["texture"].split("val").images[:6]
    f0, jv = jvp_features(suite, tm.theta0, tm.T, images, batch_size=4)  # [N, E], [K, N, E]
    for k in range(tm.num_tasks):
        for n in range(images.shape[0]):
            g0, one = jvp_features(suite, tm.theta0, tm.T[k : k + 1], images[n : n + 1])
            torch.testing.assert_close(one[0, 0], jv[k, n], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(g0[0], f0[n], rtol=1e-5, atol=1e-6)
    h0, chunked = jvp_features(suite, tm.theta0, tm.T, images, batch_size=4, tangents_per_pass=2)
    torch.testing.assert_close(chunked, jv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h0, f0, rtol=0, atol=0)


def test_taujp_of_zero_is_zero_and_scales_linearly(setup):
    suite, tm = setup
    vectors = torch.stack([torch.zeros_like(tm.T[0]), tm.T[0], 2.5 * tm.T[0]])
    m = taujp_matrix(suite, tm.theta0, vectors, names=["zero", "a", "2.5a"], tasks=["colour", "texture"], max_images=8)
    assert m.values.shape == (3, 2) and m.images == (8, 8)
    assert torch.all(m.values[0] == 0) and torch.all(m.values[1] > 0)
    torch.testing.assert_close(m.values[2], 2.5 * m.values[1], rtol=1e-4, atol=0)


def test_taujp_entry_is_the_mean_embedding_norm_of_the_product(setup):
    suite, tm = setup
    m = taujp_matrix(suite, tm.theta0, tm.T, names=tm.task_names, tasks=tm.task_names, max_images=5)
    images = suite.tasks["texture"].split("val").images[:5]
    _, jv = jvp_features(suite, tm.theta0, tm.T[:1], images)
    expected = jv[0].norm(dim=-1).double().mean()
    assert m.values[0, tm.task_names.index("texture")].item() == pytest.approx(expected.item(), rel=1e-5)
    parts = layer_breakdown(suite, tm.theta0, tm.T[0], tm.spec, task="texture", max_images=5)
    assert set(parts) == {label for label, _ in tm.spec.blocks(level="layer")}
    assert all(v >= 0 for v in parts.values())


def test_linearized_model_at_theta0_is_the_pretrained_model_and_preview_is_exact(setup):
    suite, tm = setup
    images = suite.tasks["colour"].split("interactive").images
    torch.testing.assert_close(
        linearized_features(suite, tm.theta0, tm.theta0, images), _embed(suite, tm.theta0, images), rtol=1e-5, atol=1e-5
    )
    preview = TangentPreview.build(suite, tm.theta0, tm.T, vectors=tm.task_names)
    lam = [0.4, -0.2, 0.7]
    theta = tm.theta0 + sum(l * tm.T[k] for k, l in enumerate(lam))
    got = preview.accuracy(lam)
    for task in tm.task_names:
        part = suite.tasks[task].split("interactive")
        feats = F.normalize(linearized_features(suite, tm.theta0, theta, part.images), dim=-1)
        exact = float(((feats @ suite.heads[task].T).argmax(-1) == part.labels).float().mean())
        assert got[task] == pytest.approx(exact), task


def test_pair_interference_and_bad_input(setup):
    suite, tm = setup
    drop = pair_interference(suite, tm.theta0, tm.T[0], tm.T[1], task_b="brightness", lam=0.5)
    assert -1.0 <= drop <= 1.0
    assert pair_interference(suite, tm.theta0, torch.zeros_like(tm.T[0]), tm.T[1], task_b="brightness", lam=0.5) == 0.0
    with pytest.raises(ShapeError, match="τJp vectors"):
        taujp_matrix(suite, tm.theta0, tm.T[:, :10], names=tm.task_names, tasks=["colour"])
    with pytest.raises(DatasetError, match="nope: is not a task"):
        taujp_matrix(suite, tm.theta0, tm.T, names=tm.task_names, tasks=["nope"])
    with pytest.raises(DatasetError, match="has no val images"):
        taujp_matrix(suite, tm.theta0, tm.T, names=tm.task_names, tasks=["colour"], max_images=0)


def test_jvp_products_are_stored_and_a_second_preview_only_reads_them(setup, tmp_path, monkeypatch):
    import engine.taujp.jvp_cache as jvp_cache
    from engine.taujp.jvp_cache import JvpStore

    suite, tm = setup
    store = JvpStore(tmp_path / "jvp", "pre-sha", ("sha-a", "sha-b", "sha-c"))
    first = TangentPreview.build(suite, tm.theta0, tm.T, vectors=tm.task_names, store=store)
    assert len(list((tmp_path / "jvp").rglob("*.safetensors"))) == len(tm.task_names) * (1 + len(tm.task_names))

    def no_jvp(*args, **kwargs):
        raise AssertionError("the stored products should have been read")

    monkeypatch.setattr(jvp_cache, "jvp_features", no_jvp)
    again = TangentPreview.build(suite, tm.theta0, tm.T, vectors=tm.task_names, store=store)
    for task in tm.task_names:
        torch.testing.assert_close(again.products[task], first.products[task], rtol=0, atol=0)
    assert again.accuracy([0.3, 0.3, 0.3]) == first.accuracy([0.3, 0.3, 0.3])
    monkeypatch.undo()
    calls = []

    def counting(suite_, theta0, T, images, **kwargs):
        calls.append(T.shape[0])
        return jvp_features(suite_, theta0, T, images, **kwargs)

    monkeypatch.setattr(jvp_cache, "jvp_features", counting)
    changed = JvpStore(tmp_path / "jvp", "pre-sha", ("sha-a", "sha-new", "sha-c"))
    TangentPreview.build(suite, tm.theta0, tm.T, vectors=tm.task_names, store=changed)
    assert calls == [1] * len(tm.task_names), "only the new checkpoint's products are computed"


def test_tangent_pair_drops_are_the_linearized_models_exact_drops(setup):
    """From the cached products alone, drop_b(a) equals evaluating the linearized model (the suite's
    `linearized_at`) at λτ_b and λ(τ_a + τ_b): the cache changes the cost, not the result."""
    from engine.taujp.matrix import pair_drops
    from engine.taujp.preview import tangent_pair_drops

    suite, tm = setup
    preview = TangentPreview.build(suite, tm.theta0, tm.T, vectors=tm.task_names)
    for lam in (0.3, 0.9):
        got = tangent_pair_drops(preview, lam=lam)
        exact = pair_drops(
            suite.linearized(tm.theta0), tm.theta0, tm.T, names=tm.task_names, lam=lam, split="interactive"
        )
        assert set(got) == set(exact) and len(got) == len(tm.task_names) * (len(tm.task_names) - 1)
        for pair, drop in exact.items():
            assert got[pair] == pytest.approx(drop, abs=1e-6), pair


def test_tangent_pair_drops_need_every_vectors_task(setup):
    from engine.taujp.preview import tangent_pair_drops

    suite, tm = setup
    preview = TangentPreview.build(suite, tm.theta0, tm.T, vectors=tm.task_names, tasks=tm.task_names[:1])
    with pytest.raises(ValueError, match="holds no inputs of tasks"):
        tangent_pair_drops(preview, lam=0.5)
