"""The task store's backings read the same rows, blocks and layers as the in-memory TaskMatrix; a subset of
tasks is a list of indices, never a copy; a factored row densifies only what a read asks for."""

import pytest
import torch

from engine.errors import ParameterError, ShapeError
from engine.params import ParamSpec, TaskMatrix
from engine.store import DenseRow, RowStore, Subset, TaskStore, column_blocks, row_indices, subset
from tests.store_doubles import FactoredRow

SPEC = ParamSpec(
    names=("a.bias", "a.weight", "b.weight", "c.scale", "d.weight"),
    shapes=((6,), (6, 5), (7, 4), (3,), (4, 9)),
)
TASKS = ("t0", "t1", "t2", "t3", "t4")
READS = [  # (rows, cols): consecutive, reversed, non-consecutive, repeated; inside and across tensors
    ((0, 1, 2, 3, 4), slice(0, SPEC.numel)),
    ((1, 2), slice(3, 40)),
    ((4, 0, 2), slice(5, 6)),
    ((3,), slice(36, SPEC.numel)),
    ((2, 2, 1), slice(10, 75)),
    ((), slice(0, 10)),
]


def _factored_rows() -> list[FactoredRow]:
    generator = torch.Generator().manual_seed(30)
    return [FactoredRow.random(SPEC, rank=2, generator=generator) for _ in TASKS]


def backings() -> dict[str, tuple[TaskMatrix, TaskStore]]:
    """name → (the in-memory reference, the backing under test) over the same task vectors."""
    generator = torch.Generator().manual_seed(0)
    theta0 = torch.randn(SPEC.numel, generator=generator)  # [P]
    T = torch.randn(len(TASKS), SPEC.numel, generator=generator)  # [K, P]
    matrix = TaskMatrix(theta0, T, SPEC, TASKS)
    factored = _factored_rows()
    densified = TaskMatrix(theta0, torch.stack([row.full() for row in factored]), SPEC, TASKS)
    mixed = [DenseRow(T[k]) if k % 2 else factored[k] for k in range(len(TASKS))]
    mixed_reference = TaskMatrix(
        theta0, torch.stack([T[k] if k % 2 else factored[k].full() for k in range(5)]), SPEC, TASKS
    )
    return {
        "task_matrix": (matrix, matrix),
        "dense_rows": (matrix, RowStore(theta0, SPEC, TASKS, tuple(DenseRow(row) for row in T))),
        "factored_rows": (densified, RowStore(theta0, SPEC, TASKS, tuple(factored))),
        "mixed_rows": (mixed_reference, RowStore(theta0, SPEC, TASKS, tuple(mixed))),
        "subset_of_all": (matrix, Subset(matrix, tuple(range(len(TASKS))))),
    }


@pytest.mark.parametrize("name", sorted(backings()))
def test_every_backing_reads_the_blocks_and_layers_of_the_in_memory_matrix(name):
    reference, store = backings()[name]
    assert isinstance(store, TaskStore)
    assert store.task_names == TASKS and torch.equal(store.theta0, reference.theta0)
    for rows, cols in READS:
        expected = reference.T[list(rows), cols]  # [k, c]
        assert torch.equal(store.block(rows, cols), expected), (rows, cols)
        out = torch.full_like(expected, float("nan"))
        assert store.block(rows, cols, out=out).data_ptr() == out.data_ptr() and torch.equal(out, expected)
    for matrix in SPEC.matrices():
        expected = SPEC.matrix_view(reference.T, matrix)[[3, 1]]  # [2, out, in]
        assert torch.equal(store.layer((3, 1), matrix), expected)
        out = torch.empty_like(expected)
        assert store.layer((3, 1), matrix, out=out).data_ptr() == out.data_ptr() and torch.equal(out, expected)


@pytest.mark.parametrize("name", sorted(backings()))
def test_walking_the_column_blocks_gives_the_whole_matrix(name):
    reference, store = backings()[name]
    rows = (4, 1, 3)
    walked = torch.cat([store.block(rows, cols) for cols in column_blocks(SPEC.numel, 17)], dim=1)
    assert torch.equal(walked, reference.T[list(rows)])


def test_a_subset_is_indices_over_the_parent_and_reads_it_without_copies():
    matrix, _ = backings()["task_matrix"]
    chosen = subset(matrix, ["t3", "t1", "t4"])
    assert chosen.rows == (3, 1, 4) and chosen.task_names == ("t3", "t1", "t4")
    assert chosen.parent is matrix and chosen.theta0 is matrix.theta0  # no vector copied, θ₀ shared
    nested = subset(chosen, ["t1", "t4"])
    assert nested.rows == (1, 2) and torch.equal(nested.block((0, 1), slice(0, 20)), matrix.T[[1, 4], :20])
    inner = subset(matrix, ["t1", "t2", "t3"])
    view = inner.block((0, 1, 2), slice(4, 30))  # consecutive parent rows: a view of T itself
    assert view.untyped_storage().data_ptr() == matrix.T.untyped_storage().data_ptr()
    layer = inner.layer((1, 2), "b.weight")
    assert layer.untyped_storage().data_ptr() == matrix.T.untyped_storage().data_ptr()
    assert row_indices(matrix, ["t4", "t0"]) == (4, 0)


def test_the_in_memory_backing_copies_only_the_block_of_scattered_rows():
    matrix, _ = backings()["task_matrix"]
    block = matrix.block((4, 0), slice(2, 9))
    assert block.shape == (2, 7) and block.untyped_storage().nbytes() == 2 * 7 * 4


def test_a_factored_row_densifies_only_the_matrix_rows_a_read_touches():
    factored = _factored_rows()
    store = RowStore(torch.zeros(SPEC.numel), SPEC, TASKS, tuple(factored))
    store.layer((2,), "b.weight")
    assert factored[2].densified == [7 * 4]  # that layer, nothing else
    factored[0].densified.clear()
    start = SPEC.slice_of("d.weight").start + 10
    store.block((0,), slice(start, start + 3))  # inside one row of d.weight [4, 9]
    assert factored[0].densified == [9]


def test_bad_reads_name_what_is_wrong():
    _, store = backings()["dense_rows"]
    with pytest.raises(ParameterError, match="row 5"):
        store.block((0, 5), slice(0, 3))
    with pytest.raises(ParameterError, match="step 1"):
        store.block((0,), slice(0, 9, 2))
    with pytest.raises(ShapeError, match="a.bias"):
        store.layer((0,), "a.bias")
    with pytest.raises(ShapeError, match="float32"):
        store.block((0,), slice(0, 3), out=torch.empty(1, 3, dtype=torch.float64))
    with pytest.raises(KeyError, match="zz"):
        subset(store, ["zz"])
    with pytest.raises(ParameterError, match="row 7"):
        Subset(store, (7,))
