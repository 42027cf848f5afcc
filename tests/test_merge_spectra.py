"""Subspace statistics of task matrices: spectra, top-k energy, effective rank, alignment."""

import pytest
import torch

from engine.merge.spectra import rank_correlation, subspace_stats
from engine.params import ParamSpec

SPEC = ParamSpec(("a.weight", "b.bias", "c.weight"), ((6, 4), (3,), (4, 4)))


def _tasks(*mats_a):
    """T [K, P] whose a.weight rows are the given [6, 4] matrices and c.weight the identity."""
    T = torch.zeros(len(mats_a), SPEC.numel)
    for k, m in enumerate(mats_a):
        T[k, SPEC.slice_of("a.weight")] = m.reshape(-1)
        T[k, SPEC.slice_of("c.weight")] = torch.eye(4).reshape(-1)
    return T


def test_rank_one_tasks_in_shared_and_orthogonal_directions():
    e = torch.eye(6)
    f = torch.eye(4)
    one = torch.outer(e[0], f[0]) * 3.0  # rank 1
    same = torch.outer(e[0], f[1]) * 2.0  # same left direction as `one`
    other = torch.outer(e[1], f[2])  # an orthogonal left direction
    stats = subspace_stats(_tasks(one, same, other), SPEC, ("one", "same", "other"))
    assert stats.layers == ("a.weight", "c.weight") and stats.full_rank == (4, 4)
    a = stats.layers.index("a.weight")
    assert stats.spectra[a].shape == (3, 4) and stats.spectra[a][0, 0] == pytest.approx(3.0)
    assert torch.allclose(stats.top_share[a], torch.ones(3))  # all the energy in the top ⌊4/3⌋ = 1 direction
    assert torch.allclose(stats.effective_rank[a], torch.ones(3))
    align = stats.alignment[a]
    assert torch.allclose(align.diagonal(), torch.ones(3)) and torch.allclose(align, align.T)
    assert align[0, 1] == pytest.approx(1.0) and align[0, 2] == pytest.approx(0.0, abs=1e-7)
    c = stats.layers.index("c.weight")  # isotropic: identity matrices
    assert torch.allclose(stats.effective_rank[c], torch.full((3,), 4.0))
    assert torch.allclose(stats.top_share[c], torch.full((3,), 0.25))
    assert stats.overall_alignment.shape == (3, 3)


def test_a_task_with_fewer_directions_than_k_is_aligned_over_those_it_has():
    """K = 2 gives k = 2 directions of a.weight per task. Rank-1 tasks sharing their left direction are aligned 1,
    whatever rounding does to the vectors of their zero singular values; a task with no update is aligned 0."""
    e, f = torch.eye(6), torch.eye(4)
    one = torch.outer(e[0], f[0]) * 0.03  # rank 1
    same = torch.outer(e[0], f[1]) * 0.02
    theta0 = torch.randn(SPEC.numel, generator=torch.Generator().manual_seed(0))  # [P]
    exact = _tasks(one, same)  # [2, P]
    rounded = (theta0 + exact) - theta0  # as read from fine-tuned files: rounding of 1e-8
    assert 0 < (rounded - exact).abs().max() < 1e-6
    a = SPEC.matrices().index("a.weight")
    for T in (exact, rounded):
        align = subspace_stats(T, SPEC, ("one", "same")).alignment[a]
        assert torch.allclose(align, torch.ones(2, 2), atol=1e-5)
    none = subspace_stats(_tasks(one, torch.zeros(6, 4)), SPEC, ("one", "none")).alignment[a]
    assert none[0, 0] == pytest.approx(1.0) and none[0, 1] == none[1, 1] == 0.0


def test_rank_correlation_is_spearmans_rho():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rank_correlation(x, x**3) == pytest.approx(1.0)
    assert rank_correlation(x, -x) == pytest.approx(-1.0)
    # with a tie: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): Pearson of the ranks
    tied = rank_correlation(torch.tensor([1.0, 2.0, 2.0, 4.0]), x)
    assert tied == pytest.approx(0.9486832980505138)


def test_update_spectra_gives_each_merged_updates_singular_values_in_one_layer():
    """Δ = θ − θ₀ of one layer: a rank-one update has one singular value; LiNeS-like scaling of the layer by c
    scales its spectrum by c and keeps its shape; a vector that is not 2-D is refused by name."""
    from engine.errors import ShapeError
    from engine.merge.spectra import update_spectra

    theta0 = torch.randn(SPEC.numel, generator=torch.Generator().manual_seed(0))
    update = torch.zeros(SPEC.numel)
    update[SPEC.slice_of("a.weight")] = torch.outer(torch.arange(1.0, 7.0), torch.ones(4)).reshape(-1)
    spectra = update_spectra(theta0, {"base": theta0 + update, "scaled": theta0 + 0.5 * update}, SPEC, "a.weight")
    assert list(spectra) == ["base", "scaled"] and spectra["base"].shape == (4,)
    norm = float(torch.arange(1.0, 7.0).norm() * 2.0)  # ‖u‖·‖v‖ of the rank-one update
    assert spectra["base"][0] == pytest.approx(norm, rel=1e-5) and spectra["base"][1:].abs().max() < 1e-4
    torch.testing.assert_close(spectra["scaled"], 0.5 * spectra["base"])
    with pytest.raises(ShapeError, match="b.bias"):
        update_spectra(theta0, {"base": theta0}, SPEC, "b.bias")
