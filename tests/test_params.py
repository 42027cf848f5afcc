import pytest
import torch

from engine.errors import ParameterError, ShapeError, UnknownMethodError
from engine.merge import apply, get_method
from engine.merge.kernels import CPU_CHUNK, weighted_sum
from engine.models import create_visual
from engine.params import ParamSpec, TaskMatrix, TaskVector, flatten, unflatten
from tests.builders import TINY_ARCH, perturbed


@pytest.fixture(scope="module")
def states():
    torch.manual_seed(0)
    base = create_visual(TINY_ARCH).state_dict()
    return base, {f"t{i}": perturbed(base, seed=i) for i in range(3)}


def test_flatten_unflatten_is_exact(states):
    base, _ = states
    spec = ParamSpec.from_state_dict(base)
    flat = flatten(base, spec)
    assert flat.shape == (spec.numel,) and spec.numel == sum(v.numel() for v in base.values())
    back = unflatten(flat, spec)
    assert list(back) == sorted(base)
    assert all(torch.equal(back[k], base[k]) for k in base)
    back[spec.names[0]].fill_(7.0)  # views: writing through them writes the flat vector
    assert flat[spec.slice_of(spec.names[0])].eq(7.0).all()


def test_blocks_cover_the_vector_contiguously(states):
    spec = ParamSpec.from_state_dict(states[0])
    for level in ("tensor", "layer"):
        blocks = spec.blocks(level=level)
        assert blocks[0][1].start == 0 and blocks[-1][1].stop == spec.numel
        assert all(a[1].stop == b[1].start for a, b in zip(blocks, blocks[1:]))
    assert "transformer.resblocks.0" in dict(spec.blocks(level="layer"))


def test_wrong_shape_is_named(states):
    base, _ = states
    spec = ParamSpec.from_state_dict(base)
    bad = dict(base, proj=torch.zeros(3, 3))
    with pytest.raises(ShapeError, match="'proj' has shape"):
        flatten(bad, spec, source="bad.safetensors")


def test_lambda_zero_gives_theta0_exactly(states):
    tm = TaskMatrix.from_state_dicts(*states)
    merged = apply("task_arithmetic", tm.theta0, tm.T, {"lam": 0.0})
    assert torch.equal(merged, tm.theta0)


def test_one_task_at_lambda_one_gives_its_finetuned_weights(states):
    base, finetuned = states
    tm = TaskMatrix.from_state_dicts(base, finetuned).select(["t1"])
    merged = unflatten(apply("task_arithmetic", tm.theta0, tm.T, {"lam": 1.0}), tm.spec)
    for name, expected in finetuned["t1"].items():
        # θ₀ + fl(θ₁ − θ₀) == θ₁ bitwise wherever the fp32 subtraction is exact (Sterbenz); elsewhere
        # it can differ by one rounding of τ, i.e. at most one ulp of the larger operand.
        ulp = torch.maximum(expected.abs(), base[name].abs()).mul(2**-23)
        assert ((merged[name] - expected).abs() <= ulp).all(), name
    exact = sum(int(torch.equal(merged[k], v)) for k, v in finetuned["t1"].items())
    assert exact >= len(finetuned["t1"]) // 2


def test_rows_are_a_view_when_consecutive_and_a_copy_otherwise(states):
    tm = TaskMatrix.from_state_dicts(*states)
    names = list(tm.task_names)
    every = tm.rows(names)
    assert every.data_ptr() == tm.T.data_ptr() and torch.equal(every, tm.T)  # merging every task: no copy
    tail = tm.rows(names[1:])
    assert tail.untyped_storage().data_ptr() == tm.T.untyped_storage().data_ptr() and torch.equal(tail, tm.T[1:])
    swapped = tm.rows([names[1], names[0]])
    assert swapped.untyped_storage().data_ptr() != tm.T.untyped_storage().data_ptr()
    assert torch.equal(swapped, torch.stack([tm.T[1], tm.T[0]]))
    with pytest.raises(KeyError, match="nope"):
        tm.rows(["nope"])


def test_per_task_lambdas_match_the_formula(states):
    tm = TaskMatrix.from_state_dicts(*states)
    lams = [0.2, -0.5, 1.0]
    merged = apply("task_arithmetic", tm.theta0, tm.T, {"lam": lams})
    expected = tm.theta0 + sum(l * tm.T[k] for k, l in enumerate(lams))
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-6)
    assert not torch.equal(merged, tm.theta0)


def test_cpu_kernel_matches_addmv_across_chunk_edges():
    gen = torch.Generator().manual_seed(1)
    theta0 = torch.randn(CPU_CHUNK * 2 + 17, generator=gen)
    T = torch.randn(4, theta0.numel(), generator=gen)
    coeffs = torch.tensor([0.3, 0.0, -1.2, 0.7])
    torch.testing.assert_close(weighted_sum(theta0, T, coeffs), torch.addmv(theta0, T.t(), coeffs))
    with pytest.raises(ValueError, match="do not line up"):
        weighted_sum(theta0, T, coeffs[:3])


def test_task_vector_algebra(states):
    tm = TaskMatrix.from_state_dicts(*states)
    a, b, c = (tm.vector(t) for t in tm.task_names)
    assert torch.equal((a + b).values, tm.T[0] + tm.T[1])
    assert torch.equal((a - b).values, tm.T[0] - tm.T[1])
    assert torch.equal((-a).values, -tm.T[0])
    assert torch.equal((0.5 * a).values, (a * 0.5).values)
    assert torch.equal(sum([a, b, c]).values, (a + b + c).values)
    assert torch.equal((a - a).apply_to(tm.theta0), tm.theta0)
    other = TaskVector(torch.zeros(3), ParamSpec(("x",), ((3,),)))
    with pytest.raises(ShapeError):
        a + other


def test_registry_rejects_unknown_methods_and_parameters(states):
    tm = TaskMatrix.from_state_dicts(*states)
    with pytest.raises(UnknownMethodError, match="'tie_merging'|tie_merging.*task_arithmetic"):
        apply("tie_merging", tm.theta0, tm.T)
    with pytest.raises(UnknownMethodError, match="lambda"):
        apply("task_arithmetic", tm.theta0, tm.T, {"lambda": 0.3})
    with pytest.raises(ParameterError, match="outside"):
        apply("task_arithmetic", tm.theta0, tm.T, {"lam": 9.0})
    with pytest.raises(ParameterError, match="2 values for 3 tasks"):
        apply("task_arithmetic", tm.theta0, tm.T, {"lam": [0.1, 0.2]})
    assert get_method("task_arithmetic").params[0].name == "lam"


def test_merge_leaves_inputs_untouched(states):
    tm = TaskMatrix.from_state_dicts(*states)
    theta0, T = tm.theta0.clone(), tm.T.clone()
    apply("task_arithmetic", tm.theta0, tm.T, {"lam": 0.7})
    assert torch.equal(theta0, tm.theta0) and torch.equal(T, tm.T)


def test_network_order_runs_embeddings_then_blocks_by_number_then_the_head():
    from engine.params import network_order

    names = [  # flat (sorted) order of a 12-block tower's layer labels
        "class_embedding",
        "conv1",
        "ln_post",
        "ln_pre",
        "positional_embedding",
        "proj",
        *sorted(f"transformer.resblocks.{i}" for i in range(12)),
    ]
    ordered = [names[i] for i in network_order(names)]
    assert ordered == [
        "conv1",
        "class_embedding",
        "positional_embedding",
        "ln_pre",
        *(f"transformer.resblocks.{i}" for i in range(12)),
        "ln_post",
        "proj",
    ]
    inside = ["t.resblocks.3.mlp.c_proj.weight", "t.resblocks.3.ln_2.weight", "t.resblocks.3.attn.in_proj_weight"]
    assert [inside[i] for i in network_order(inside)] == [inside[2], inside[1], inside[0]]  # attention, ln_2, MLP
