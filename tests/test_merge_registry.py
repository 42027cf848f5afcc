"""Declared methods: what each registry entry says it selects, elects and keeps cheap, and the analysis that
reads only those declarations."""

import pytest
import torch

from engine.errors import ParameterError, UnknownMethodError
from engine.merge import METHODS, CompareGrid, MergeMethod, Param, apply
from engine.merge.analysis import sparsity_report
from engine.merge.kernels import weighted_sum
from engine.merge.sparsify import kept_count
from engine.params import ParamSpec

SPEC = ParamSpec(("blocks.resblocks.0.w", "blocks.resblocks.1.w"), ((6,), (4,)))


def _first_half(T: torch.Tensor, params, importance=None) -> torch.Tensor:
    keep = torch.zeros(T.shape, dtype=torch.bool)  # [K, P]
    keep[:, : T.shape[1] // 2] = True
    return keep


def _first_half_merge(theta0, T, *, lam, out=None):
    return weighted_sum(theta0, T * _first_half(T, {}), lam, out=out)


TOY = MergeMethod(
    "first_half",
    "Keep the first half",
    "",
    (Param("lam", 1.0, 0.0, 2.0, 0.1, "scale", per_task=True),),
    _first_half_merge,
    selection="magnitude",
    cheap=("lam",),
    keep_mask=_first_half,
    grid=CompareGrid.none("a test's method"),
)


def test_a_new_masking_method_shows_its_kept_fraction_from_its_declaration():
    T = torch.randn(2, 10)
    report = sparsity_report(TOY, T, {"lam": 0.5}, tasks=["a", "b"], spec=SPEC)
    assert report.kept_fraction == {"a": 0.5, "b": 0.5}
    kept_signs = torch.sign(T[:, :6] * _first_half(T, {})[:, :6])  # the first layer, masked
    conflict = float(((kept_signs.amax(dim=0) > 0) & (kept_signs.amin(dim=0) < 0)).float().mean())
    assert report.sign_conflict[0] == pytest.approx(conflict)
    merged = apply(TOY, torch.zeros(10), T, {"lam": 1.0})  # a method object merges like a registered name
    assert torch.equal(merged, (T * _first_half(T, {})).sum(dim=0))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_declares_a_consistent_selection(name):
    method = METHODS[name]
    assert (method.selection in ("magnitude", "random_drop", "importance")) == (method.keep_mask is not None)
    assert (method.selection == "low_rank") == (method.keep_rank is not None)
    assert method.per_layer == (method.selection == "low_rank" or method.iterative)  # WUDI: per layer, keeps all
    assert set(method.cheap) | set(method.expensive) == {p.name for p in method.params}
    assert not set(method.cheap) & set(method.expensive)
    assert len(method.cheap) == 1 and method.scale.name == method.cheap[0]  # one scaled final step: what sweeps move


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if not m.per_layer))
def test_the_keep_panel_of_every_method_matches_what_its_merge_keeps(name):
    """Kept fraction from the declaration against the merge itself: entries the merge leaves at θ₀ when
    λ = 1 and every task vector entry is non-zero and positive (no sign conflict can zero one out)."""
    torch.manual_seed(0)
    T = torch.rand(2, 10) + 0.1  # [K, P], all positive
    importance = torch.randint(0, 256, T.shape, dtype=torch.uint8) if METHODS[name].importance else None
    params = {"density": 0.4} if "density" in {p.name for p in METHODS[name].params} else {}
    report = sparsity_report(name, T, params, tasks=["a", "b"], spec=SPEC, importance=importance)
    mask = METHODS[name].kept(T, params, importance=importance)
    expected = [1.0, 1.0] if mask is None else mask.float().mean(dim=1).tolist()
    assert list(report.kept_fraction.values()) == pytest.approx(expected)
    if name in ("ties", "magnitude"):
        assert list(report.kept_fraction.values()) == pytest.approx([kept_count(10, 0.4) / 10] * 2)
    single = sparsity_report(
        name, T[:1], params, tasks=["a"], spec=SPEC, importance=None if importance is None else importance[:1]
    )
    merged = apply(
        name, torch.zeros(10), T[:1], {**params, "lam": 1.0}, importance=None if importance is None else importance[:1]
    )
    assert float((merged != 0).float().mean()) == pytest.approx(single.kept_fraction["a"])


def _made(**fields) -> MergeMethod:
    lam = Param("lam", 1.0, 0.0, 2.0, 0.1, "scale")
    return MergeMethod("m", "M", "", (lam,), _first_half_merge, **{"grid": CompareGrid.none("a test's"), **fields})


def test_declarations_are_checked_when_a_method_is_made():
    with pytest.raises(ParameterError, match="keep_mask"):
        _made(selection="magnitude")
    with pytest.raises(ParameterError, match="keep_mask"):
        _made(keep_mask=_first_half)
    with pytest.raises(ParameterError, match="selection 'low_rank'"):
        _made(selection="low_rank", keep_mask=_first_half)
    with pytest.raises(ParameterError, match="selection 'low_rank' with keep_rank=False"):
        _made(selection="low_rank", per_layer=True)
    with pytest.raises(ParameterError, match="selection 'subspace'"):
        _made(selection="subspace")
    with pytest.raises(ParameterError, match="m.alpha: is declared cheap"):
        _made(cheap=("alpha",))
    with pytest.raises(ParameterError, match="sign_election"):
        _made(sign_election="majority")
    with pytest.raises(ParameterError, match="importance"):
        _made(selection="importance", keep_mask=_first_half)


def test_a_method_declares_its_compare_grid_or_why_it_has_none():
    with pytest.raises(TypeError, match="grid"):
        MergeMethod("m", "M", "", (Param("lam", 1.0, 0.0, 2.0, 0.1, "scale"),), _first_half_merge)
    with pytest.raises(ParameterError, match="m.alpha: is a grid axis but no parameter"):
        _made(grid=CompareGrid.over(alpha=(1.0,)))
    with pytest.raises(ParameterError, match=r"m.lam: value 2.5 outside \[0.0, 2.0\]"):
        _made(grid=CompareGrid.over(lam=(1.0, 2.5)))
    with pytest.raises(ParameterError, match="m.lam: has no grid values"):
        _made(grid=CompareGrid.over(lam=()))
    with pytest.raises(ParameterError, match="needs either axes or the reason"):
        CompareGrid.none("")
    with pytest.raises(ParameterError, match="needs either axes or the reason"):
        CompareGrid((("lam", (1.0,)),), reason="both")
    assert _made(grid=CompareGrid.over(lam=(0.5, 1))).grid.as_mapping() == {"lam": (0.5, 1.0)}


def test_an_unknown_parameter_is_a_parameter_error():
    with pytest.raises(ParameterError, match="ties.lambda: is not a parameter"):
        apply("ties", torch.zeros(3), torch.ones(1, 3), {"lambda": 1.0})
    assert issubclass(UnknownMethodError, ParameterError)
