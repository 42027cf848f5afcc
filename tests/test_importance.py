import pytest
import torch
import torch.nn.functional as F

from engine.collection import load_collection, open_suite, task_matrix
from engine.data import normalize_batch
from engine.errors import CheckpointError
from engine.finetune import batch_indices
from engine.importance import (ImportanceConfig, importance_file, load_importance, normalize_per_tensor,
                               save_importance, taylor_importance)
from engine.models import create_visual
from engine.params import ParamSpec, unflatten
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
    got = taylor_importance(suite.visual, theta_ft, tm.theta0, tm.spec, suite.heads["colour"], train,
                            suite.preprocess, config)
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


def test_per_tensor_normalisation():
    spec = ParamSpec(("a", "b"), ((2,), (3,)))
    norm = normalize_per_tensor(torch.tensor([1.0, 4.0, 0.0, 0.5, 0.25]), spec)
    assert norm.tolist() == [0.25, 1.0, 0.0, 1.0, 0.5]
    assert normalize_per_tensor(torch.zeros(5), spec).tolist() == [0.0] * 5


def test_cached_maps_name_their_checkpoint(setup, tmp_path):
    collection, _, tm = setup
    sha = collection.finetuned("colour").sha256
    path = importance_file(tmp_path, sha, ImportanceConfig())
    save_importance(path, torch.rand(tm.spec.numel), checkpoint_sha=sha, config=ImportanceConfig())
    assert load_importance(path, checkpoint_sha=sha, numel=tm.spec.numel).shape == (tm.spec.numel,)
    other = collection.finetuned("texture").sha256
    with pytest.raises(CheckpointError, match="belongs to checkpoint .* not"):
        load_importance(path, checkpoint_sha=other, numel=tm.spec.numel)
    with pytest.raises(CheckpointError, match="entries"):
        load_importance(path, checkpoint_sha=sha, numel=7)
