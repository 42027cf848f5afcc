"""Subspace merges (TSV-M, Iso-C, Iso-CTS, CART) against slow per-layer oracles written from the papers'
definitions in float64, their reductions, bad input, and the cached re-compose of a scale move."""

import math

import pytest
import torch

from engine.errors import ParameterError
from engine.merge import METHODS, apply
from engine.params import ParamSpec

K = 3
NAMES_SHAPES = {  # a two-block ViT tower in miniature, in the flat (sorted) order of a real one
    "class_embedding": (8,),
    "conv1.weight": (8, 3, 2, 2),
    "ln_post.bias": (8,),
    "positional_embedding": (5, 8),
    "proj": (8, 6),
    **{
        f"transformer.resblocks.{i}.{k}": s
        for i in range(2)
        for k, s in {
            "attn.in_proj_bias": (24,),
            "attn.in_proj_weight": (24, 8),
            "attn.out_proj.weight": (8, 8),
            "ln_1.weight": (8,),
            "mlp.c_fc.weight": (16, 8),
            "mlp.c_proj.weight": (8, 16),
        }.items()
    },
}
SPEC = ParamSpec(tuple(NAMES_SHAPES), tuple(NAMES_SHAPES.values()))
CART_SET = {n for n in SPEC.names if ("attn" in n or "mlp" in n) and "bias" not in n and "ln" not in n}


@pytest.fixture()
def tower():
    torch.manual_seed(0)
    theta0 = torch.randn(SPEC.numel, dtype=torch.float64)  # [P]
    T = torch.randn(K, SPEC.numel, dtype=torch.float64) * 0.1  # [K, P] Gaussian: distinct singular values
    return theta0, T


def _matrix(T_row: torch.Tensor, name: str) -> torch.Tensor:
    return T_row[SPEC.slice_of(name)].view(NAMES_SHAPES[name])


def _polar(a: torch.Tensor) -> torch.Tensor:
    p, _, qh = torch.linalg.svd(a, full_matrices=False)
    return p @ qh


def _each(T, fn_matrix, fn_other):
    """Δ [P] from a per-matrix rule and a rule for the other tensors, one tensor at a time."""
    delta = torch.zeros(SPEC.numel, dtype=T.dtype)
    for name, shape in NAMES_SHAPES.items():
        taus = [_matrix(T[k], name) for k in range(K)]
        value = fn_matrix(name, taus) if len(shape) == 2 else fn_other(name, taus)
        if value is not None:
            delta[SPEC.slice_of(name)] = value.reshape(-1)
    return delta


def _mean(_name, taus):
    return sum(taus) / len(taus)


def _rank(s: torch.Tensor) -> int:
    """The count of singular values [c] (descending) that are not zero up to float64 rounding."""
    return int((s > 1e-9 * s.max()).sum()) if len(s) else 0


def oracle_tsv(T):
    """Every task's top r triplets, those of a zero singular value left out (a low-rank task has fewer)."""

    def layer(_name, taus):
        p = min(taus[0].shape)
        r = max(1, p // len(taus))
        us, ss, vs = [], [], []
        for tau in taus:  # the top r singular triplets of each task
            u, s, vh = torch.linalg.svd(tau, full_matrices=False)
            kept = min(r, _rank(s)) if s.max() > 0 else 0
            us.append(u[:, :kept])
            ss.append(s[:kept])
            vs.append(vh[:kept].T)
        u_perp, v_perp = _polar(torch.cat(us, 1)), _polar(torch.cat(vs, 1))
        return u_perp @ torch.diag(torch.cat(ss)) @ v_perp.T

    return _each(T, layer, _mean)


def oracle_iso_c(T):
    """mean(S)·U Vᵀ over the summed matrix's span (its rank ρ): mean(S) over all min(out, in) values."""

    def layer(_name, taus):
        u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
        rho = _rank(s)
        return s.mean() * u[:, :rho] @ vh[:rho]

    return _each(T, layer, _mean)


def oracle_iso_cts(T, share):
    def layer(_name, taus):
        p = min(taus[0].shape)
        s_task = round((p - math.floor(p * share)) / len(taus))
        k = p - len(taus) * s_task
        u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
        us, vs, values = [u[:, :k]], [vh[:k].T], [s[:k]]
        for tau in taus:
            outside = tau - u[:, :k] @ u[:, :k].T @ tau
            ut, st, vht = torch.linalg.svd(outside, full_matrices=False)
            us.append(ut[:, :s_task])
            vs.append(vht[:s_task].T)
            values.append(st[:s_task])
        level, all_values = torch.cat(values).mean(), torch.cat(values)
        kept = all_values > 1e-9 * all_values.max()  # the directions the tasks have: the rest left out
        return level * _polar(torch.cat(us, 1)[:, kept]) @ _polar(torch.cat(vs, 1)[:, kept]).T

    return _each(T, layer, _mean)


def oracle_cart(T, rank_share, lam):
    mean = T.mean(0)

    def layer(name, taus):
        if name not in CART_SET:
            return None
        total = 0
        for tau in taus:
            c = tau - sum(taus) / len(taus)
            r = max(1, math.floor(rank_share * min(c.shape)))
            u, s, vh = torch.linalg.svd(c, full_matrices=False)
            total = total + u[:, :r] @ torch.diag(s[:r]) @ vh[:r]
        return total

    return mean + lam * _each(T, layer, lambda *_: None)


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_tsv_m_matches_its_oracle(tower):
    theta0, T = tower
    _close(apply("tsv_m", theta0, T, {"alpha": 0.7}, spec=SPEC), theta0 + 0.7 * oracle_tsv(T))


def test_iso_c_matches_its_oracle(tower):
    theta0, T = tower
    _close(apply("iso_c", theta0, T, {"alpha": 1.3}, spec=SPEC), theta0 + 1.3 * oracle_iso_c(T))


@pytest.mark.parametrize("share", [0.8, 0.5, 0.2])
def test_iso_cts_matches_its_oracle(tower, share):
    theta0, T = tower
    merged = apply("iso_cts", theta0, T, {"alpha": 0.9, "share": share}, spec=SPEC)
    _close(merged, theta0 + 0.9 * oracle_iso_cts(T, share))


@pytest.mark.parametrize("rank_share", [0.12, 0.3])
def test_cart_matches_its_oracle(tower, rank_share):
    theta0, T = tower
    merged = apply("cart", theta0, T, {"lam": 1.5, "rank_share": rank_share}, spec=SPEC)
    _close(merged, theta0 + oracle_cart(T, rank_share, 1.5))


def test_one_task_tsv_m_at_full_rank_is_task_arithmetic(tower):
    theta0, T = tower
    _close(apply("tsv_m", theta0, T[:1], {"alpha": 0.6}, spec=SPEC), theta0 + 0.6 * T[0])


def test_iso_c_of_a_matrix_with_equal_singular_values_is_that_matrix_times_alpha(tower):
    theta0, _ = tower
    tau = torch.zeros(1, SPEC.numel, dtype=torch.float64)
    for name, shape in NAMES_SHAPES.items():
        if len(shape) == 2:  # 0.3 × a matrix with orthonormal columns (or rows): every singular value 0.3
            q, _ = torch.linalg.qr(torch.randn(max(shape), min(shape), dtype=torch.float64))
            tau[0, SPEC.slice_of(name)] = 0.3 * (q if shape[0] >= shape[1] else q.T).reshape(-1)
        else:
            tau[0, SPEC.slice_of(name)] = torch.randn(math.prod(shape), dtype=torch.float64)
    _close(apply("iso_c", theta0, tau, {"alpha": 1.7}, spec=SPEC), theta0 + 1.7 * tau[0])


def test_iso_cts_with_the_whole_space_common_is_iso_c(tower):
    theta0, T = tower
    _close(
        apply("iso_cts", theta0, T, {"alpha": 1.1, "share": 1.0}, spec=SPEC),
        apply("iso_c", theta0, T, {"alpha": 1.1}, spec=SPEC),
    )


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0])
def test_cart_at_full_rank_is_the_weight_average_for_every_lambda(tower, lam):
    theta0, T = tower
    _close(apply("cart", theta0, T, {"lam": lam, "rank_share": 1.0}, spec=SPEC), theta0 + T.mean(0))


def test_float32_merges_stay_close_to_the_float64_oracles(tower):
    theta0, T = tower
    merged = apply("tsv_m", theta0.float(), T.float(), {"alpha": 1.0}, spec=SPEC)
    torch.testing.assert_close(merged.double(), theta0 + oracle_tsv(T), rtol=1e-4, atol=1e-5)


def _low_rank_tower(ranks: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """θ₀ and T [K, P] as LoRA adapters make them: task t's every 2-D layer has rank ranks[t] (0: a layer its
    adapter does not target), the other tensors are not touched."""
    g = torch.Generator().manual_seed(3)
    theta0 = torch.randn(SPEC.numel, generator=g, dtype=torch.float64)  # [P]
    T = torch.zeros(len(ranks), SPEC.numel, dtype=torch.float64)  # [K, P]
    for k, rank in enumerate(ranks):
        for name, (m, n) in ((n, s) for n, s in NAMES_SHAPES.items() if len(s) == 2):
            b, a = torch.randn(m, rank, generator=g, dtype=torch.float64), torch.randn(rank, n, generator=g)
            T[k, SPEC.slice_of(name)] = (0.1 * b @ a.double()).reshape(-1)  # s·B·A
    return theta0, T


LOW_RANK = {  # method → (parameters, its oracle)
    "tsv_m": ({"alpha": 0.7}, oracle_tsv),
    "iso_c": ({"alpha": 1.3}, oracle_iso_c),
    "iso_cts": ({"alpha": 0.9, "share": 0.8}, lambda T: oracle_iso_cts(T, 0.8)),
}


@pytest.mark.parametrize("name", sorted(LOW_RANK))
def test_low_rank_layers_merge_over_the_directions_the_tasks_have(name):
    """Ranks 1, 2 and 0 against TSV-M's 2 directions per task and Iso-CTS's 5 common ones of 8: the merge keeps no
    direction of a zero singular value, whose vectors an SVD routine picks at will."""
    theta0, T = _low_rank_tower((1, 2, 0))
    params, oracle = LOW_RANK[name]
    _close(apply(name, theta0, T, params, spec=SPEC), theta0 + params["alpha"] * oracle(T))


@pytest.mark.parametrize("name", sorted(LOW_RANK))
def test_a_low_rank_merge_does_not_depend_on_rounding(name):
    """T as a fine-tuned file gives it, (θ₀ + s·B·A) − θ₀ in float32, against s·B·A itself (what a pool of LoRA
    adapters kept factored reads): the rounding (1e-8) must not move the merge. Keeping the null directions moved
    the zoo's LoRA merges by a quarter of their norm."""
    theta0, T = _low_rank_tower((1, 2, 0))
    theta0, exact = theta0.float(), T.float()
    rounded = (theta0 + exact) - theta0  # [K, P]
    assert 0 < (rounded - exact).abs().max() < 1e-6
    params = LOW_RANK[name][0]
    from_file, factored = (apply(name, theta0, t, params, spec=SPEC) - theta0 for t in (rounded, exact))
    assert (from_file - factored).norm() < 1e-4 * factored.norm()


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("cart", {"rank_share": 0.0}, "rank_share: value 0.0 outside"),
        ("cart", {"rank_share": 1.5}, "rank_share: value 1.5 outside"),
        ("iso_cts", {"share": 0.0}, "share: value 0.0 outside"),
        ("tsv_m", {"alpha": -1.0}, "alpha: value -1.0 outside"),
        ("iso_c", {"alpha": 9.0}, "alpha: value 9.0 outside"),
        ("tsv_m", {"rank": 3}, "tsv_m.rank: is not a parameter"),
    ],
)
def test_bad_settings_are_refused(tower, name, params, match):
    theta0, T = tower
    with pytest.raises(ParameterError, match=match):
        apply(name, theta0, T, params, spec=SPEC)


def test_a_per_layer_method_needs_the_spec(tower):
    theta0, T = tower
    with pytest.raises(ParameterError, match="iso_c.spec: needs the ParamSpec"):
        apply("iso_c", theta0, T)


def test_what_each_low_rank_method_keeps_per_layer(tower):
    _, T = tower
    tsv = METHODS["tsv_m"].ranks(T, SPEC, {})
    from engine.params import network_order

    matrices = SPEC.matrices()
    assert [r.layer for r in tsv] == [matrices[i] for i in network_order(matrices)]  # positional_embedding first
    assert {(r.layer, r.rank) for r in tsv} >= {("positional_embedding", 1), ("proj", 2)}  # ⌊p / K⌋
    assert all(0 < r.energy < 1 for r in tsv)
    full = METHODS["cart"].ranks(T, SPEC, {"rank_share": 1.0})
    assert {r.layer for r in full} == CART_SET and all(r.energy == pytest.approx(1.0) for r in full)
    common = METHODS["iso_cts"].ranks(T, SPEC, {"share": 0.5})
    assert all(r.rank < r.full_rank or r.full_rank <= K for r in common)
    assert all(r.rank == r.full_rank for r in METHODS["iso_c"].ranks(T, SPEC, {}))


def test_the_keep_panel_counts_a_low_rank_layers_directions():
    """Tasks of rank 1, 2 and 0: TSV-M keeps at most 2 per task (its share ⌊8/3⌋ = 2 on in_proj), Iso-C the 3 the
    summed matrix has of 8, Iso-CTS 3 of the 5 common ones its share asks."""
    _, T = _low_rank_tower((1, 2, 0))
    name = "transformer.resblocks.0.attn.in_proj_weight"
    tsv = {r.layer: r for r in METHODS["tsv_m"].ranks(T, SPEC, {})}
    iso = {r.layer: r for r in METHODS["iso_c"].ranks(T, SPEC, {})}
    cts = {r.layer: r for r in METHODS["iso_cts"].ranks(T, SPEC, {"share": 0.8})}  # 5 common directions asked
    assert (tsv[name].rank, tsv[name].full_rank, iso[name].rank, iso[name].full_rank) == (2, 8, 3, 8)
    assert (cts[name].rank, cts[name].energy) == (3, pytest.approx(1.0))
    assert tsv["positional_embedding"].rank == 1 and tsv[name].energy == pytest.approx(1.0)


@pytest.mark.parametrize("name, scale", [("tsv_m", "alpha"), ("iso_c", "alpha"), ("iso_cts", "alpha"), ("cart", "lam")])
def test_a_scale_move_re_composes_from_the_cached_parts(tiny_collection_dir, tmp_path, name, scale):
    from engine.cache.memory import ComputeCache
    from engine.workspace import Workspace

    cache = ComputeCache()
    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path)
    ws = Workspace.from_collection(ws.collection, cache_dir=tmp_path, cache=cache)
    m = ws.matrix
    first = ws.merge(ws.task_names, name, {scale: 0.5})
    computed = cache.stats().misses
    moved = ws.merge(ws.task_names, name, {scale: 1.25})
    assert cache.stats().misses == computed  # the move computed no new parts
    torch.testing.assert_close(moved, apply(name, m.theta0, m.T, {scale: 1.25}, spec=m.spec), rtol=0, atol=0)
    torch.testing.assert_close(first, apply(name, m.theta0, m.T, {scale: 0.5}, spec=m.spec), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(12, 7), (7, 12)])
def test_top_singular_triplets_of_a_rank_deficient_matrix(shape):
    """Iso-CTS takes the top directions of task matrices with their common part removed: many zero singular
    values, where LAPACK's SVD can fail to converge on large towers. The Gram route gives the same triplets."""
    from engine.merge.subspace import top_singular

    torch.manual_seed(1)
    x = torch.randn(2, shape[0], 3, dtype=torch.float64) @ torch.randn(2, 3, shape[1], dtype=torch.float64)  # rank 3
    u, s, vh = top_singular(x, 2)
    ref_u, ref_s, ref_vh = torch.linalg.svd(x, full_matrices=False)
    torch.testing.assert_close(s, ref_s[..., :2])
    torch.testing.assert_close(
        u @ torch.diag_embed(s) @ vh, ref_u[..., :2] @ torch.diag_embed(ref_s[..., :2]) @ ref_vh[..., :2, :]
    )
    assert u.shape == (2, shape[0], 2) and vh.shape == (2, 2, shape[1])


@pytest.mark.parametrize(
    "name, param, first, second",
    [("cart", "rank_share", 0.08, 0.3), ("iso_cts", "share", 0.8, 0.5), ("wudi", "steps", 20.0, 40.0)],
)
def test_a_rank_change_recomputes_only_what_depends_on_it(tiny_collection_dir, tmp_path, name, param, first, second):
    """The factorizations a method's rank (share, step count) does not change stay cached: the second setting
    computes its own parts and nothing else, and equals the method computed from scratch."""
    from engine.cache.memory import ComputeCache
    from engine.workspace import Workspace

    cache = ComputeCache()
    opened = Workspace.open(tiny_collection_dir, cache_dir=tmp_path)
    ws = Workspace.from_collection(opened.collection, cache_dir=tmp_path, cache=cache)
    m, tasks = ws.matrix, ws.task_names
    ws.merge(tasks, name, {param: first})
    before = cache.stats()
    moved = ws.merge(tasks, name, {param: second})
    after = cache.stats()
    from engine.merge.subspace import attention_and_mlp

    factored = attention_and_mlp(m.spec) if name == "cart" else m.spec.matrices()
    assert after.misses - before.misses == 1  # the new setting's parts only
    assert after.hits - before.hits == len(m.spec.by_shape(factored))  # each shape group's factors, read
    torch.testing.assert_close(moved, apply(name, m.theta0, m.T, {param: second}, spec=m.spec), rtol=1e-6, atol=1e-7)
    if name == "iso_cts":  # Iso-C factors the same summed matrices: it reads them too
        ws.merge(tasks, "iso_c", {})
        assert cache.stats().misses - after.misses == 1


def test_a_large_models_factorized_parts_are_a_job_and_kept_in_the_data_home(
    tiny_collection_dir, tmp_path, monkeypatch
):
    """From LARGE_MODEL_PARAMS on (lowered here to the tiny tower's size), a subspace merge's first
    factorization is a job's work and its parts outlive the process; small models merge inline."""
    import engine.merge.session
    from engine.cache.memory import ComputeCache
    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path)
    tasks = ws.task_names
    assert not ws.merges.needs_job(tasks, "tsv_m", {}) and not ws.merges.needs_job(tasks, "task_arithmetic", {})
    monkeypatch.setattr(engine.merge.session, "LARGE_MODEL_PARAMS", ws.matrix.spec.numel)
    assert ws.merges.needs_job(tasks, "tsv_m", {}) and not ws.merges.needs_job(tasks, "task_arithmetic", {})
    merged = ws.merge(tasks, "tsv_m", {"alpha": 0.8})
    fresh = Workspace.from_collection(ws.collection, cache_dir=tmp_path, cache=ComputeCache())
    assert fresh.merges.parts_ready(tasks, "tsv_m", {}) and not fresh.merges.needs_job(tasks, "tsv_m", {"alpha": 2.0})
    assert torch.equal(fresh.merge(tasks, "tsv_m", {"alpha": 0.8}), merged)
    assert fresh.cache.stats().misses == 1  # the parts, read from the data home: no factorization was looked up


@pytest.mark.parametrize("name", ["tsv_m", "iso_c", "iso_cts", "cart"])
def test_factoring_a_few_layers_at_a_time_merges_as_whole_shape_groups_do(tower, monkeypatch, name):
    """A large pool's layers of one shape are stacked a few at a time (`STACK_BYTES`), never all at once, and the
    other tensors' mean is gathered a block of columns at a time (`OTHERS_BLOCK_ENTRIES`); one layer per stack and
    a few columns per block give the merge the whole groups give (the two blocks' layers share their shapes)."""
    import engine.merge.subspace as subspace

    theta0, T = tower
    whole = apply(name, theta0, T, {}, spec=SPEC)
    stacks = []
    layers = subspace.layer_stacks
    monkeypatch.setattr(subspace, "STACK_BYTES", 1)  # one layer per stack
    monkeypatch.setattr(subspace, "OTHERS_BLOCK_ENTRIES", 7 * T.shape[0])  # 7 columns per block
    monkeypatch.setattr(
        subspace, "layer_stacks", lambda *a: [stacks.append(names) or (names, tau) for names, tau in layers(*a)]
    )
    one_by_one = apply(name, theta0, T, {}, spec=SPEC)
    assert stacks and all(len(names) == 1 for names in stacks)
    torch.testing.assert_close(one_by_one, whole, rtol=1e-12, atol=1e-12)
