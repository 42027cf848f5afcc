"""KnOTS (engine/merge/knots.py) against merges computed by KnOTS' own public code (tests/fixtures/knots/, made by
make_fixture.py there), and its reductions: no trim + sum at λ = 1 is task arithmetic, one task at λ = 1 is it."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.merge import get_method
from engine.merge.registry import apply
from engine.models import expected_visual_shapes
from engine.params import ParamSpec
from tests.builders import TINY_ARCH

FIXTURE = Path(__file__).parent / "fixtures" / "knots" / "knots.safetensors"
BLOCK = "transformer.resblocks.0."
ROWS = {"q_proj": 0, "k_proj": 16, "v_proj": 32}


@pytest.fixture(scope="module")
def spec():
    return ParamSpec.from_shapes({k: (v, torch.float32) for k, v in expected_visual_shapes(TINY_ARCH).items()})


def _lora_rows(spec, tensors, tasks=3):
    """T [K, P]: each task's ΔW = B·A on q, k, v (rows of the fused in_proj) and out_proj, zero elsewhere."""
    T = torch.zeros(tasks, spec.numel)
    for t in range(tasks):
        in_proj = spec.matrix_view(T[t], BLOCK + "attn.in_proj_weight")
        for module, row in ROWS.items():
            in_proj[row : row + 16] = tensors[f"task{t}.{module}.B"] @ tensors[f"task{t}.{module}.A"]
        out = tensors[f"task{t}.out_proj.B"] @ tensors[f"task{t}.out_proj.A"]
        spec.matrix_view(T[t], BLOCK + "attn.out_proj.weight").copy_(out)
    return T


@pytest.mark.parametrize(
    ("case", "method", "params"),
    [
        ("ties_d0.2_l0.6", "knots_ties", {}),  # the public configuration is the default
        ("ties_d0.5_l1.0", "knots_ties", {"density": 0.5, "lam": 1.0}),
        ("ta_d1.0_l1.0", "knots_ta", {"density": 1.0, "lam": 1.0}),
    ],
)
def test_knots_equals_knots_own_code(spec, case, method, params):
    tensors = load_file(FIXTURE)
    T = _lora_rows(spec, tensors)
    theta0 = torch.randn(spec.numel, generator=torch.Generator().manual_seed(0))
    delta = apply(get_method(method), theta0, T, params, spec=spec) - theta0
    in_proj = spec.matrix_view(delta, BLOCK + "attn.in_proj_weight")
    for module, row in ROWS.items():
        assert torch.allclose(in_proj[row : row + 16], tensors[f"{case}.{module}"], atol=1e-5), module
    out = spec.matrix_view(delta, BLOCK + "attn.out_proj.weight")
    assert torch.allclose(out, tensors[f"{case}.out_proj"], atol=1e-5)
    outside = torch.ones(spec.numel, dtype=torch.bool)
    outside[spec.slice_of(BLOCK + "attn.in_proj_weight")] = False
    outside[spec.slice_of(BLOCK + "attn.out_proj.weight")] = False
    assert delta[outside].abs().max() < 1e-6


def test_reductions_task_arithmetic_and_one_task(spec):
    tensors = load_file(FIXTURE)
    T = _lora_rows(spec, tensors)
    theta0 = torch.zeros(spec.numel)
    ta = apply(get_method("knots_ta"), theta0, T, {"density": 1.0, "lam": 1.0}, spec=spec)
    assert torch.allclose(ta, T.sum(dim=0), atol=1e-5)  # no trim, full rank, λ = 1: task arithmetic
    for method in ("knots_ties", "knots_ta", "knots_dare_ties"):
        params = {"density": 1.0, "lam": 1.0} | ({"drop": 0.0} if method == "knots_dare_ties" else {})
        one = apply(get_method(method), theta0, T[:1], params, spec=spec)
        assert torch.allclose(one, T[0], atol=1e-5), method  # one task at λ = 1: the adapter itself


def test_trimming_is_over_all_layers_of_a_task_together(spec):
    """A task whose out_proj update is 100× its q/k/v ones keeps only out_proj at d = 0.1 (fewer entries than its
    out_proj has in the shared basis): the top share is taken over the task's whole vector, not per layer."""
    tensors = load_file(FIXTURE)
    T = _lora_rows(spec, tensors, tasks=1)
    spec.matrix_view(T[0], BLOCK + "attn.out_proj.weight").mul_(100)
    delta = apply(get_method("knots_ties"), torch.zeros(spec.numel), T, {"density": 0.1, "lam": 1.0}, spec=spec)
    in_proj = spec.matrix_view(delta, BLOCK + "attn.in_proj_weight")
    out = spec.matrix_view(delta, BLOCK + "attn.out_proj.weight")
    assert in_proj.abs().max() == 0 and out.abs().max() > 0
