"""Sparse merges against slow per-key oracles written from the definitions (not from any repo)."""

import pytest
import torch

from engine.errors import ParameterError
from engine.merge import apply
from engine.merge.sparsify import DropStream, dare_keep_mask, kept_count, magnitude_mask
from engine.params import ParamSpec, TaskMatrix, flatten, unflatten


@pytest.fixture(scope="module")
def tiny():
    """Random tiny state dicts: a base and three 'fine-tuned' ones with some exact zeros and sign conflicts."""
    gen = torch.Generator().manual_seed(5)
    base = {
        "a.weight": torch.randn(6, 5, generator=gen),
        "a.bias": torch.randn(6, generator=gen),
        "b.weight": torch.randn(4, 6, generator=gen),
    }
    tuned = {}
    for t in range(3):
        state = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        state["a.bias"][t] = base["a.bias"][t]  # an exact zero in the task vector
        tuned[f"t{t}"] = state
    return base, tuned, TaskMatrix.from_state_dicts(base, tuned)


def _oracle_trim(tv: dict, density: float) -> dict:
    """Keep the top round(d·P) entries of one task vector by magnitude (over all its tensors)."""
    flat = torch.cat([v.flatten() for v in tv.values()])
    keep = kept_count(flat.numel(), density)
    threshold = flat.abs().sort(descending=True).values[keep - 1]
    return {k: torch.where(v.abs() >= threshold, v, torch.zeros_like(v)) for k, v in tv.items()}


def _oracle_ties(base: dict, tvs: list[dict], lam: float) -> dict:
    merged = {}
    for key in base:  # per key, per entry: the definition, slowly
        stacked = torch.stack([tv[key] for tv in tvs])  # [K, ...]
        out = torch.zeros_like(base[key])
        for idx in torch.cartesian_prod(*[torch.arange(n) for n in base[key].shape]).reshape(-1, base[key].ndim):
            values = stacked[(slice(None), *idx.tolist())]
            sign = torch.sign(values.sum())
            chosen = [v for v in values if v != 0 and torch.sign(v) == sign]
            out[tuple(idx.tolist())] = sum(chosen) / len(chosen) if chosen else 0.0
        merged[key] = base[key] + lam * out
    return merged


def _task_vectors(base, tuned):
    return [{k: tuned[t][k] - base[k] for k in base} for t in sorted(tuned)]


def test_ties_matches_its_oracle(tiny):
    base, tuned, tm = tiny
    tvs = [_oracle_trim(tv, 0.3) for tv in _task_vectors(base, tuned)]
    expected = flatten(_oracle_ties(base, tvs, 1.3), tm.spec)
    got = apply("ties", tm.theta0, tm.T, {"density": 0.3, "lam": 1.3})
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_dare_matches_its_oracle_with_the_same_mask(tiny):
    base, tuned, tm = tiny
    keep = dare_keep_mask(tuple(tm.T.shape), 0.5, seed=7)  # what the kernel draws for seed 7
    masks = [unflatten(keep[k].float(), tm.spec) for k in range(3)]
    lams = [0.2, 0.5, 0.9]
    expected = {
        k: base[k] + sum(l * m[k] * tv[k] / 0.5 for l, m, tv in zip(lams, masks, _task_vectors(base, tuned)))
        for k in base
    }
    got = apply("dare", tm.theta0, tm.T, {"drop": 0.5, "lam": lams, "seed": 7})
    torch.testing.assert_close(got, flatten(expected, tm.spec), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "K, P, width", [(3, 1_000_003, 4096), (1, 77, 10), (5, 300_000, 65_536), (2, 262_145, 1 << 18)]
)
def test_the_drop_stream_hands_out_dare_s_mask_block_by_block(K, P, width):
    """Out of core, DARE draws its mask a block at a time (sparsify.DropStream): the same entries as the whole
    mask for any block width, including a last short block and rows longer than the skip pass's scratch."""
    whole = dare_keep_mask((K, P), 0.3, seed=11)  # bool [K, P]
    stream, blocks = DropStream((K, P), 0.3, seed=11), []
    buffer = torch.empty(K, width)
    for start in range(0, P, width):
        n = min(width, P - start)
        blocks.append(stream.keep(start, n, out=buffer[:, :n]).bool())
    assert torch.equal(torch.cat(blocks, dim=1), whole)
    with pytest.raises(ValueError, match=f"at column {P} of {P}, not 0"):
        stream.keep(0, 1, out=buffer[:, :1])  # the stream has moved on: a block asked for again is refused


def test_dare_ties_matches_its_oracle(tiny):
    base, tuned, tm = tiny
    keep = dare_keep_mask(tuple(tm.T.shape), 0.4, seed=3)
    masks = [unflatten(keep[k].float(), tm.spec) for k in range(3)]
    tvs = [{k: m[k] * tv[k] / 0.6 for k in base} for m, tv in zip(masks, _task_vectors(base, tuned))]
    got = apply("dare_ties", tm.theta0, tm.T, {"drop": 0.4, "lam": 0.8, "seed": 3})
    torch.testing.assert_close(got, flatten(_oracle_ties(base, tvs, 0.8), tm.spec), rtol=0, atol=1e-6)


def test_magnitude_matches_its_oracle(tiny):
    base, tuned, tm = tiny
    tvs = [_oracle_trim(tv, 0.25) for tv in _task_vectors(base, tuned)]
    expected = {k: base[k] + 0.4 * sum(tv[k] for tv in tvs) for k in base}
    got = apply("magnitude", tm.theta0, tm.T, {"density": 0.25, "lam": 0.4})
    torch.testing.assert_close(got, flatten(expected, tm.spec), rtol=0, atol=1e-6)


@pytest.mark.parametrize("density", [0.01, 0.2, 0.5, 0.77, 1.0])
def test_density_keeps_exactly_round_d_p_entries(density):
    T = torch.randn(4, 10_001, generator=torch.Generator().manual_seed(1))
    T[:, :50] = 0.25  # ties at one magnitude
    mask = magnitude_mask(T, density)
    assert mask.sum(dim=1).tolist() == [kept_count(10_001, density)] * 4
    assert torch.equal(mask, magnitude_mask(T, density))  # ties broken the same way every time


def _tiny_importance(tm) -> torch.Tensor:
    from engine.sta.codes import encode

    return encode(torch.rand(tm.T.shape, generator=torch.Generator().manual_seed(9)) ** 3)  # uint8 [K, P]


def test_sta_matches_its_oracle(tiny):
    """θ₀ + λ Σₜ [Ĩₜ ≥ κ] ⊙ τₜ, per key and per entry, from the decoded importance values."""
    from engine.sta.codes import decode

    base, tuned, tm = tiny
    codes = _tiny_importance(tm)
    values = [unflatten(decode(codes[k]), tm.spec) for k in range(tm.num_tasks)]
    tvs = _task_vectors(base, tuned)
    for kappa in (0.02, 0.3):
        expected = {
            key: base[key] + 1.4 * sum(torch.where(values[k][key] >= kappa, tvs[k][key], 0.0) for k in range(len(tvs)))
            for key in base
        }
        got = apply("sta", tm.theta0, tm.T, {"threshold": kappa, "lam": 1.4}, importance=codes)
        torch.testing.assert_close(got, flatten(expected, tm.spec), rtol=0, atol=1e-6)


def test_sta_needs_matching_importance(tiny):
    _, _, tm = tiny
    with pytest.raises(ParameterError, match="sta.importance: needs importance maps"):
        apply("sta", tm.theta0, tm.T, {"threshold": 0.1})
    with pytest.raises(ParameterError, match=r"expected uint8 \(3, 60\)"):
        apply("sta", tm.theta0, tm.T, {"threshold": 0.1}, importance=_tiny_importance(tm)[:2])


def test_reductions_to_task_arithmetic(tiny):
    base, tuned, tm = tiny
    ta = apply("task_arithmetic", tm.theta0, tm.T, {"lam": [0.3, 0.6, 0.1]})
    torch.testing.assert_close(
        apply("dare", tm.theta0, tm.T, {"drop": 0.0, "lam": [0.3, 0.6, 0.1]}), ta, rtol=0, atol=1e-6
    )
    one = tm.select(["t1"])
    torch.testing.assert_close(
        apply("ties", one.theta0, one.T, {"density": 1.0, "lam": 1.0}),
        apply("task_arithmetic", one.theta0, one.T, {"lam": 1.0}),
        rtol=0,
        atol=1e-6,
    )
    torch.testing.assert_close(
        apply("magnitude", tm.theta0, tm.T, {"density": 1.0, "lam": 0.3}),
        apply("task_arithmetic", tm.theta0, tm.T, {"lam": 0.3}),
        rtol=0,
        atol=1e-6,
    )
    torch.testing.assert_close(
        apply("sta", tm.theta0, tm.T, {"threshold": 0.0, "lam": 0.3}, importance=_tiny_importance(tm)),
        apply("task_arithmetic", tm.theta0, tm.T, {"lam": 0.3}),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("ties", {"density": 0.0}, r"ties.density: value 0.0 outside \[0.01, 1.0\]"),
        ("ties", {"density": 1.5}, r"ties.density: value 1.5 outside"),
        ("dare", {"drop": 1.0}, r"dare.drop: value 1.0 outside \[0.0, 0.99\]"),
        ("sta", {"threshold": 1.5}, r"sta.threshold: value 1.5 outside \[0.0, 1.0\]"),
    ],
)
def test_bad_sparsity_parameters(tiny, method, params, message):
    _, _, tm = tiny
    with pytest.raises(ParameterError, match=message):
        apply(method, tm.theta0, tm.T, params)


def test_the_banded_path_for_large_tensors_is_exact(monkeypatch):
    import engine.merge.sparsify as sparsify

    T = torch.randn(2, 200_003, generator=torch.Generator().manual_seed(2))
    T[0, :1000] = 0.5  # a block of ties
    exact = sparsify.magnitude_mask(T, 0.3)
    monkeypatch.setattr(sparsify, "EXACT_TOPK_LIMIT", 1000)
    monkeypatch.setattr(sparsify, "QUANTILE_SAMPLE", 4096)
    banded = sparsify.magnitude_mask(T, 0.3)
    assert banded.sum(dim=1).tolist() == [kept_count(200_003, 0.3)] * 2
    assert ((T.abs() * banded).sum(dim=1) - (T.abs() * exact).sum(dim=1)).abs().max() < 1e-3


def test_sparsity_report_counts_kept_entries_and_sign_conflicts():
    from engine.merge.analysis import sparsity_report

    spec = ParamSpec(("blocks.resblocks.0.w", "head"), ((4,), (2,)))
    T = torch.tensor([[1.0, -2.0, 3.0, 0.5, 1.0, 1.0], [-1.0, -2.0, 0.0, 0.4, 1.0, -1.0]])
    ta = sparsity_report("task_arithmetic", T, {}, tasks=["a", "b"], spec=spec)
    assert ta.kept_fraction == {"a": 1.0, "b": 1.0}
    assert ta.layers == ("blocks.resblocks.0", "head") and ta.sign_conflict == (0.25, 0.5)
    ties_report = sparsity_report("ties", T, {"density": 0.5}, tasks=["a", "b"], spec=spec)
    assert ties_report.kept_fraction == {"a": 0.5, "b": 0.5}


def _oracle_top(row: torch.Tensor, density: float) -> torch.Tensor:
    """bool [P]: the round(d·P) largest magnitudes, ties kept in index order (a stable sort, slowly)."""
    mask = torch.zeros(row.numel(), dtype=torch.bool)
    mask[torch.sort(-row.abs(), stable=True).indices[: kept_count(row.numel(), density)]] = True
    return mask


def _tied_rows() -> torch.Tensor:
    """[3, 50_001]: magnitudes on a coarse grid (many ties at any cut), a mostly-zero row, a block of equal ones."""
    gen = torch.Generator().manual_seed(3)
    T = torch.round(torch.randn(3, 50_001, generator=gen) * 20) / 20
    T[1, :40_000] = 0.0
    T[2, 5_000:35_000] = -0.5
    return T


@pytest.mark.parametrize("banded", [False, True])
@pytest.mark.parametrize("density", [0.05, 0.15, 0.5, 0.9])
def test_magnitude_masks_keep_the_top_entries_and_ties_in_index_order(monkeypatch, banded, density):
    import engine.merge.sparsify as sparsify

    if banded:  # the sampled band and its chunked scan, several chunks and a short last one
        monkeypatch.setattr(sparsify, "EXACT_TOPK_LIMIT", 1000)
        monkeypatch.setattr(sparsify, "QUANTILE_SAMPLE", 4096)
        monkeypatch.setattr(sparsify, "SCAN_CHUNK", 3333)
    T = _tied_rows()
    mask = sparsify.magnitude_mask(T, density)
    for k in range(3):
        assert torch.equal(mask[k], _oracle_top(T[k], density)), k


def test_a_band_that_misses_the_cut_falls_back_to_the_exact_row(monkeypatch):
    import engine.merge.sparsify as sparsify

    monkeypatch.setattr(sparsify, "EXACT_TOPK_LIMIT", 1000)
    T = torch.randn(1, 20_000, generator=torch.Generator().manual_seed(8))
    T[0, :12_000] = 0.5  # 60% equal: the sampled band (lo, hi] is empty around the cut
    lo, hi = sparsify._bracket(T[0], kept_count(20_000, 0.5), seed=0)
    assert lo == hi == 0.5
    assert torch.equal(sparsify.magnitude_mask(T, 0.5)[0], _oracle_top(T[0], 0.5))


@pytest.mark.parametrize("ties", [False, True])
def test_the_cut_kernel_equals_the_mask_kernel_bit_for_bit(monkeypatch, ties):
    import engine.merge.generalized as generalized
    from engine.merge.sparsify import magnitude_cuts

    monkeypatch.setattr(generalized, "CPU_CHUNK_ENTRIES", 3 * 1500)  # 1,500 columns a chunk, a short last one
    T = _tied_rows()
    theta0 = torch.randn(T.shape[1], generator=torch.Generator().manual_seed(6))
    lam, rescale = torch.tensor([0.7, -0.2, 1.1]), torch.tensor([1.0, 2.0, 0.5])
    cut = magnitude_cuts(T, 0.3)
    assert any(0 < end < T.shape[1] for end in cut.tie_ends)  # some task stops keeping ties mid-row
    by_cut = generalized.masked_merge(theta0, T, mask=None, cut=cut, lam=lam, rescale=rescale, ties=ties)
    mask = magnitude_mask(T, 0.3)
    by_mask = generalized.masked_merge(theta0, T, mask=mask, lam=lam, rescale=rescale, ties=ties)
    assert torch.equal(by_cut, by_mask)
    monkeypatch.setattr(generalized, "CPU_CHUNK_ENTRIES", 1 << 30)  # one chunk: the same numbers
    assert torch.equal(generalized.masked_merge(theta0, T, mask=mask, lam=lam, rescale=rescale, ties=ties), by_mask)
    if not ties:
        torch.testing.assert_close(by_cut, theta0 + (lam * rescale) @ (T * mask), rtol=0, atol=1e-5)
