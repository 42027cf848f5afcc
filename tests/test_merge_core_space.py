"""Core Space merging (engine/merge/core_space.py) against the paper's construction from the adapters' own factors
(bases from the SVDs of [B₁ … B_K] and [A₁; …; A_K], written here with per-task loops in float64, as the authors'
code builds them), and its guarantees: the cores lose nothing, TA in core space is task arithmetic, one task at
scale 1 is the adapter, and TIES trims each layer's cores apart (KnOTS trims a task's layers together)."""

import pytest
import torch

from engine.merge import get_method
from engine.merge.core_space import core_delta, core_spaces
from engine.merge.registry import apply
from engine.models import expected_visual_shapes
from engine.params import ParamSpec
from tests.builders import TINY_ARCH

BLOCKS = ("transformer.resblocks.0.",)
RANK, TASKS = 3, 4


@pytest.fixture(scope="module")
def spec():
    return ParamSpec.from_shapes({k: (v, torch.float32) for k, v in expected_visual_shapes(TINY_ARCH).items()})


def _adapter_blocks(spec) -> list[tuple[str, int, int]]:
    """(tensor, first row, rows) of q, k, v (rows of the fused in_proj), out_proj and the MLP's c_fc (64 × 16)."""
    out = []
    for block in BLOCKS:
        rows = spec.shapes[spec.names.index(block + "attn.in_proj_weight")][0] // 3
        out += [(block + "attn.in_proj_weight", i * rows, rows) for i in range(3)]
        out.append((block + "attn.out_proj.weight", 0, rows))
        out.append((block + "mlp.c_fc.weight", 0, spec.shapes[spec.names.index(block + "mlp.c_fc.weight")][0]))
    return out


def _factors(spec, *, seed=0) -> dict[tuple[str, int, int], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per block, each task's (B [O, r], A [r, I]) in float64, random of full rank r."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, row, rows in _adapter_blocks(spec):
        width = spec.shapes[spec.names.index(name)][1]
        out[(name, row, rows)] = [
            (torch.randn(rows, RANK, generator=generator, dtype=torch.float64),
             torch.randn(RANK, width, generator=generator, dtype=torch.float64) / width**0.5)
            for _ in range(TASKS)
        ]  # fmt: skip
    return out


def _rows(spec, factors) -> torch.Tensor:
    """T [K, P] float32: each task's B·A in its block, zero elsewhere."""
    T = torch.zeros(TASKS, spec.numel)
    for (name, row, rows), pairs in factors.items():
        for t, (b, a) in enumerate(pairs):
            spec.matrix_view(T[t], name)[row : row + rows] = (b @ a).float()
    return T


def _reference_cores(pairs):
    """The paper's construction: U from [B₁ … B_K], V from [A₁; …; A_K], Mₜ = Uᵀ Bₜ Aₜ V (per task, a loop)."""
    u = torch.linalg.svd(torch.cat([b for b, _ in pairs], dim=1), full_matrices=False)[0]  # [O, K·r]
    vh = torch.linalg.svd(torch.cat([a for _, a in pairs], dim=0), full_matrices=False)[2]  # [K·r, I]
    return u, [u.T @ b @ a @ vh.T for b, a in pairs], vh


def _reference_tsv(cores):
    """TSV on cores as the authors write it: each core's top p/K triplets placed side by side, then both stacks
    replaced by U Vᵀ of their own SVDs, the singular values kept."""
    p, k = cores[0].shape[0], len(cores)
    r = p // k
    sum_u, sum_s, sum_v = (
        torch.zeros(p, p, dtype=torch.float64),
        torch.zeros(p, dtype=torch.float64),
        torch.zeros(p, p, dtype=torch.float64),
    )
    for i, m in enumerate(cores):
        u, s, vh = torch.linalg.svd(m)
        sum_u[:, i * r : (i + 1) * r], sum_s[i * r : (i + 1) * r], sum_v[i * r : (i + 1) * r] = u[:, :r], s[:r], vh[:r]
    uu, _, vu = torch.linalg.svd(sum_u)
    uv, _, vv = torch.linalg.svd(sum_v)
    return uu @ vu @ torch.diag(sum_s) @ uv @ vv


def _reference_iso(cores):
    u, s, vh = torch.linalg.svd(sum(cores))
    return s.mean() * u @ vh


@pytest.mark.parametrize(("method", "merge"), [("core_tsv", _reference_tsv), ("core_iso_c", _reference_iso)])
def test_rotation_invariant_merges_equal_the_papers_construction_from_factors(spec, method, merge):
    factors = _factors(spec)
    T = _rows(spec, factors)
    delta = apply(get_method(method), torch.zeros(spec.numel), T, {"alpha": 1.0}, spec=spec)
    inside = torch.zeros(spec.numel, dtype=torch.bool)
    for (name, row, rows), pairs in factors.items():
        u, cores, vh = _reference_cores(pairs)
        expected = (u @ merge(cores) @ vh).float()  # [O, I]
        got = spec.matrix_view(delta, name)[row : row + rows]
        assert torch.allclose(got, expected, atol=1e-5), (name, row, (got - expected).abs().max())
        spec.matrix_view(inside, name)[row : row + rows] = True
    assert delta[~inside].abs().max() == 0  # every other entry stays at θ₀


def test_cores_lose_nothing_and_ta_in_core_space_is_task_arithmetic(spec):
    T = _rows(spec, _factors(spec, seed=1))
    for (name, row, rows), u, cores, v in core_spaces(T, spec):
        tau = spec.matrix_view(T, name)[:, row : row + rows]  # [K, O, I]
        assert torch.allclose(u @ cores @ v.T, tau, atol=1e-5), (name, row)
        assert u.shape[1] == (TASKS * RANK if tau.any() else 0)
    assert torch.allclose(core_delta(T, spec, inner="ta"), T.sum(dim=0), atol=1e-5)


@pytest.mark.parametrize("method", ["core_tsv", "core_ties", "core_iso_c"])
def test_one_task_at_scale_one_is_the_adapter(spec, method):
    T = _rows(spec, _factors(spec, seed=2))[:1]
    params = {"density": 1.0, "lam": 1.0} if method == "core_ties" else {"alpha": 1.0}
    one = apply(get_method(method), torch.zeros(spec.numel), T, params, spec=spec)
    if method == "core_iso_c":  # isotropic: the adapter's directions, each at the mean singular value
        for (name, row, rows), _, cores, _ in core_spaces(T, spec):
            s = torch.linalg.svdvals(cores[0])
            block = spec.matrix_view(one, name)[row : row + rows]
            assert torch.allclose(torch.linalg.svdvals(block)[: len(s)], s.mean().expand(len(s)), atol=1e-5)
        return
    assert torch.allclose(one, T[0], atol=1e-5)


def test_ties_trims_each_layer_s_cores_apart(spec):
    """A task whose out_proj update is 100× its q/k/v ones still keeps q/k/v entries at d = 0.1 (KnOTS-TIES, which
    trims a task's layers together, keeps only out_proj there: tests/test_merge_knots.py)."""
    T = _rows(spec, _factors(spec, seed=3))[:1]
    spec.matrix_view(T[0], BLOCKS[0] + "attn.out_proj.weight").mul_(100)
    delta = apply(get_method("core_ties"), torch.zeros(spec.numel), T, {"density": 0.1, "lam": 1.0}, spec=spec)
    assert spec.matrix_view(delta, BLOCKS[0] + "attn.in_proj_weight").abs().max() > 0
    assert spec.matrix_view(delta, BLOCKS[0] + "attn.out_proj.weight").abs().max() > 0
