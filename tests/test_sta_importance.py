from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.data.tasks import normalize_batch
from engine.errors import CheckpointError
from engine.models import create_visual
from engine.params import ParamSpec, unflatten
from engine.pool.collection import load_collection, open_suite, task_matrix
from engine.sta.codes import decode, decode_table, encode, importance_mask, threshold_code
from engine.sta.importance import (
    ImportanceConfig,
    importance_file,
    load_importance,
    normalize_per_tensor,
    save_importance,
    taylor_importance,
)
from engine.train.finetune import batch_indices
from tests.builders import TINY_ARCH


@pytest.fixture(scope="module")
def setup(tiny_collection_dir, tmp_path_factory):
    collection = load_collection(tiny_collection_dir)
    suite = open_suite(collection, cache_dir=tmp_path_factory.mktemp("cache"))
    return collection, suite, task_matrix(collection)


def test_importance_equals_a_per_batch_autograd_oracle(setup):
    _, suite, tm = setup
    config = ImportanceConfig(variant="tau", batches=3, batch_size=8, seed=4)
    train = suite.tasks["colour"].split("train")
    theta_ft = tm.theta0 + tm.T[0]
    got = taylor_importance(
        suite.visual, theta_ft, tm.theta0, tm.spec, suite.heads["colour"], train, suite.preprocess, config
    )
    model = create_visual(TINY_ARCH)
    model.load_state_dict(unflatten(theta_ft, tm.spec))
    oracle = torch.zeros_like(theta_ft)
    for idx in batch_indices(len(train), steps=3, batch_size=8, seed=4):
        model.zero_grad()
        logits = F.normalize(model(normalize_batch(train.images[idx], suite.preprocess)), dim=-1)
        F.cross_entropy(logits @ suite.heads["colour"].T, train.labels[idx]).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        flat_grad = torch.cat([grads[n].flatten() for n in tm.spec.names])
        oracle += (tm.T[0] * flat_grad).abs()
    torch.testing.assert_close(got, oracle / 3, rtol=1e-4, atol=1e-7)
    assert (got >= 0).all() and got.sum() > 0


def test_linearized_importance_takes_the_linearized_models_gradient(setup):
    """model "linearized": ∇L = J(θ₀)ᵀ ∂L/∂f at f₀ + J(θ₀)·τ, here from the explicit Jacobian (reverse mode)."""
    _, suite, tm = setup
    config = ImportanceConfig(variant="tau", model="linearized", batches=2, batch_size=8, seed=1)
    train, head, tau = suite.tasks["colour"].split("train"), suite.heads["colour"], tm.T[0]
    got = taylor_importance(suite.visual, tm.theta0 + tau, tm.theta0, tm.spec, head, train, suite.preprocess, config)
    oracle = torch.zeros_like(tau)
    for idx in batch_indices(len(train), steps=2, batch_size=8, seed=1):
        x = normalize_batch(train.images[idx], suite.preprocess)

        def embed(theta):
            return torch.func.functional_call(suite.visual, unflatten(theta, tm.spec), (x,))  # [B, E]

        jacobian = torch.func.jacrev(embed)(tm.theta0)  # [B, E, P]
        features = (embed(tm.theta0) + jacobian @ tau).detach().requires_grad_(True)  # [B, E]
        loss = F.cross_entropy(F.normalize(features, dim=-1) @ head.T, train.labels[idx])
        (g,) = torch.autograd.grad(loss, features)  # [B, E]
        oracle += (tau * torch.einsum("bep,be->p", jacobian, g)).abs()
    torch.testing.assert_close(got, oracle / 2, rtol=1e-4, atol=1e-7)
    network = taylor_importance(
        suite.visual,
        tm.theta0 + tau,
        tm.theta0,
        tm.spec,
        head,
        train,
        suite.preprocess,
        ImportanceConfig(variant="tau", batches=2, batch_size=8, seed=1),
    )
    assert not torch.allclose(got, network, rtol=1e-2)  # the two models' gradients differ away from θ₀
    assert importance_file(Path("c"), "ab" * 32, config) != importance_file(
        Path("c"), "ab" * 32, ImportanceConfig(variant="tau", batches=2, batch_size=8, seed=1)
    )


def test_per_tensor_normalisation():
    spec = ParamSpec(("a", "b"), ((2,), (3,)))
    norm = normalize_per_tensor(torch.tensor([1.0, 4.0, 0.0, 0.5, 0.25]), spec)
    assert norm.tolist() == [0.25, 1.0, 0.0, 1.0, 0.5]
    assert normalize_per_tensor(torch.zeros(5), spec).tolist() == [0.0] * 5


def test_cached_maps_name_their_checkpoint(setup, tmp_path):
    collection, _, tm = setup
    sha = collection.finetuned("colour").sha256
    path = importance_file(tmp_path, sha, ImportanceConfig())
    codes = encode(torch.rand(tm.spec.numel))
    with pytest.raises(CheckpointError, match="must be uint8"):
        save_importance(path, torch.rand(tm.spec.numel), checkpoint_sha=sha, config=ImportanceConfig())
    save_importance(path, codes, checkpoint_sha=sha, config=ImportanceConfig())
    assert torch.equal(load_importance(path, checkpoint_sha=sha, numel=tm.spec.numel), codes)
    other = collection.finetuned("texture").sha256
    with pytest.raises(CheckpointError, match="belongs to checkpoint .* not"):
        load_importance(path, checkpoint_sha=other, numel=tm.spec.numel)
    with pytest.raises(CheckpointError, match="entries"):
        load_importance(path, checkpoint_sha=sha, numel=7)


def test_codes_round_trip_within_one_log_step_and_thresholds_agree_with_decoded_values():
    values = torch.cat([torch.tensor([0.0, 1e-9, 1e-6, 1.0]), torch.rand(5000) ** 8])  # heavy-tailed, in [0, 1]
    codes = encode(values)
    back = decode(codes)
    assert back[0] == 0 and back[1] == 0 and back[3] == 1.0
    kept = values >= 1e-6
    ratio = back[kept] / values[kept]
    assert ratio.min() > 10 ** (-3 / 254) - 1e-6 and ratio.max() < 10 ** (3 / 254) + 1e-6  # half a step
    table = decode_table()
    assert torch.all(table[1:] > table[:-1])
    for kappa in (0.0, 1e-7, 0.013, 0.05, 0.5, 0.999, 1.0):
        mask = importance_mask(codes, kappa)
        expected = back >= kappa
        assert torch.equal(torch.ones_like(expected) if mask is None else mask, expected), kappa
    assert threshold_code(0.0) == 0 and threshold_code(1.0) == 255


def test_workspace_computes_caches_and_checks_importance(tiny_collection_dir, tmp_path):
    """Computed once per checkpoint, read back from the cache, and a map of another checkpoint is refused."""
    import json
    import shutil

    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    codes = ws.importance.codes("tau")  # [K, P]
    assert codes.dtype == torch.uint8 and codes.shape == ws.matrix.T.shape
    cached = sorted((tmp_path / "cache" / "importance").glob("*.safetensors"))
    assert len(cached) == len(ws.task_names)
    again = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache").importance.codes("tau")
    assert torch.equal(again, codes)

    copy = tmp_path / "collection"
    shutil.copytree(tiny_collection_dir, copy)
    manifest = json.loads((copy / "collection.json").read_text())
    first, second = list(manifest["tasks"])[:2]
    wrong = cached[
        [
            c.name.startswith(Workspace.open(copy, cache_dir=tmp_path / "c2").collection.finetuned_sha256(second)[:16])
            for c in cached
        ].index(True)
    ]
    shutil.copy(wrong, copy / "wrong.safetensors")
    manifest["tasks"][first]["importance"] = {"tau": "wrong.safetensors"}
    (copy / "collection.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="wrong.safetensors.*belongs to checkpoint"):
        Workspace.open(copy, cache_dir=tmp_path / "c3").importance.codes("tau")


def test_importance_summary_against_plain_counting():
    from engine.sta.stats import importance_summary

    spec = ParamSpec(("blocks.resblocks.0.w", "blocks.resblocks.1.w", "proj"), ((5,), (3,), (2,)))
    values = torch.rand(3, 10, generator=torch.Generator().manual_seed(3))
    values[0, :2] = 0.0
    codes = encode(values)
    summary = importance_summary(codes, spec, tasks=["a", "b", "c"], threshold=0.4)
    kept = decode(codes) >= 0.4  # [3, 10]
    assert summary.histogram.sum(dim=1).tolist() == [10, 10, 10]
    assert summary.histogram[0, 0] == 2
    for k in range(3):
        for j in range(3):
            union = (kept[k] | kept[j]).sum()
            expected = float((kept[k] & kept[j]).sum() / union) if union else 1.0
            assert summary.overlap[k, j].item() == pytest.approx(expected)
        assert summary.kept_fraction[k].item() == pytest.approx(float(kept[k].float().mean()))
    assert summary.layers == ("blocks.resblocks.0", "blocks.resblocks.1", "proj")
    assert summary.kept_per_layer[:, 0].tolist() == pytest.approx(kept[:, :5].float().mean(dim=1).tolist())
    assert summary.kept_per_layer[:, 2].tolist() == pytest.approx(kept[:, 8:].float().mean(dim=1).tolist())
