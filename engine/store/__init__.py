"""The task store: θ₀ and task vectors read by row indices, column blocks and layers, whatever the backing."""

from engine.store.protocol import Subset, TaskStore, column_blocks, row_indices, subset
from engine.store.rows import DenseRow, RowStore, TaskRow

__all__ = ["DenseRow", "RowStore", "Subset", "TaskRow", "TaskStore", "column_blocks", "row_indices", "subset"]
