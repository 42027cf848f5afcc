"""A least-recently-used cache of computed values with one memory budget, safe to share between threads.

The dashboard serves every browser session from one process, and its workspaces are shared by all of
them: one `ComputeCache` per process (the dashboard passes the same one to every workspace it opens)
holds the results that are expensive to recompute, such as an evaluation of a setting, a mask or an
importance map, up to `budget_bytes` in all. Past the budget the least recently used entries go;
a value larger than the whole budget is returned but not kept.
Two threads asking for the same missing key compute it once: the second waits for the first.
Callers build keys that identify their inputs, checkpoints' sha256 included (the Workspace's
`fingerprint`), so two workspaces of the same checkpoints share entries and a changed file misses.
The budget is `cache_budget_mb` in `$MERGELAB_HOME/config.json` (engine/home.py), default 2048 MB.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

V = TypeVar("V")
DEFAULT_BUDGET_BYTES = 2048 << 20


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    budget_bytes: int
    hits: int
    misses: int
    evictions: int
    computed: Mapping[str, int] = dataclasses.field(default_factory=dict)  # misses by kind of result (`kind_of`)

    def line(self) -> str:
        """One line for a person: what was computed, by kind, and how often a result was served again."""
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.computed.items())) or "nothing yet"
        return f"computed: {kinds}; served again from memory: {self.hits}"


class ComputeCache:
    """`get_or_compute(key, compute)`: the cached value of `key`, or `compute()` stored under it."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        if budget_bytes < 0:
            raise ValueError(f"cache budget must be ≥ 0 bytes, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()  # key → (value, bytes), oldest first
        self._pending: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self._bytes = self._hits = self._misses = self._evictions = 0
        self._computed: dict[str, int] = {}  # misses by kind_of(key): how much work the sessions caused

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        while True:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self._hits += 1
                    return self._entries[key][0]
                waiting = self._pending.get(key)
                if waiting is None:
                    self._pending[key] = threading.Event()
                    self._misses += 1
                    kind = kind_of(key)
                    self._computed[kind] = self._computed.get(kind, 0) + 1
                    break
            waiting.wait()  # another thread computes it; then look again (it may have failed or been evicted)
        try:
            value = compute()
            self._store(key, value)
            return value
        finally:
            with self._lock:
                self._pending.pop(key).set()

    def _store(self, key: Hashable, value: Any) -> None:
        size = size_of(value)
        with self._lock:
            if size > self.budget_bytes:
                return
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.budget_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
                self._evictions += 1

    def get(self, key: Hashable) -> Any | None:
        """The cached value of `key` (counted as a hit), or None when it is not kept: a caller that can use a
        value when it is there, and would rather not compute or keep it otherwise."""
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return self._entries[key][0]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                len(self._entries),
                self._bytes,
                self.budget_bytes,
                self._hits,
                self._misses,
                self._evictions,
                dict(self._computed),
            )


def kind_of(key: Hashable) -> str:
    """The kind of result a key names: callers build keys as (fingerprint, kind, ...), e.g. "compare" (one merge
    and one evaluation of a setting), "zero_shot", "scale_parts"; other keys count as "other"."""
    return key[1] if isinstance(key, tuple) and len(key) > 1 and isinstance(key[1], str) else "other"


def size_of(value: Any, *, _seen: set[int] | None = None) -> int:
    """Bytes a value holds: its tensors' storage (each storage once), plus a small amount per Python object."""
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return sys.getsizeof(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [getattr(value, f.name) for f in dataclasses.fields(value)]
    elif isinstance(value, Mapping):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        items = []  # other objects: counted shallowly (results are tensors, numbers and their containers)
    return sys.getsizeof(value) + sum(size_of(item, _seen=seen) for item in items)
