"""The one cache: LRU eviction within a byte budget, one computation per key across threads, sizes."""

import json
import threading
import time

import pytest
import torch

from engine.cache.memory import ComputeCache, size_of
from engine.errors import SchemaError
from engine.home import DataHome

MB = 1 << 20


def _block(mb: int) -> torch.Tensor:
    return torch.zeros(mb * MB, dtype=torch.uint8)


def test_filling_past_the_budget_evicts_the_least_recently_used():
    cache = ComputeCache(budget_bytes=3 * MB + 4096)
    for key in "abc":
        cache.get_or_compute(key, lambda: _block(1))
    cache.get_or_compute("a", lambda: pytest.fail("a is cached"))  # a is now the most recent
    cache.get_or_compute("d", lambda: _block(1))  # over budget: b, the least recent, goes
    assert [k in cache for k in "abcd"] == [True, False, True, True]
    stats = cache.stats()
    assert stats.entries == 3 and stats.evictions == 1 and stats.bytes <= stats.budget_bytes
    assert (stats.hits, stats.misses) == (1, 4)


def test_a_value_larger_than_the_budget_is_returned_but_not_kept():
    cache = ComputeCache(budget_bytes=MB)
    cache.get_or_compute("small", lambda: _block(0))
    big = cache.get_or_compute("big", lambda: _block(2))
    assert big.numel() == 2 * MB and "big" not in cache and "small" in cache


def test_two_threads_asking_for_one_key_compute_it_once():
    cache, calls, started = ComputeCache(), [], threading.Barrier(2)

    def slow() -> int:
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return 42

    results = []

    def ask() -> None:
        started.wait()
        results.append(cache.get_or_compute(("merge", 0.3), slow))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42, 42] and len(calls) == 1


def test_the_stats_count_what_was_computed_by_kind_and_what_was_served_again():
    cache = ComputeCache()
    for _ in range(3):  # three sessions, one setting
        cache.get_or_compute(("fingerprint", "compare", ("a", "b"), 0.3), lambda: 1)
    cache.get_or_compute(("fingerprint", "zero_shot", "val"), lambda: 2)
    cache.get_or_compute("a plain key", lambda: 3)
    stats = cache.stats()
    assert stats.computed == {"compare": 1, "zero_shot": 1, "other": 1} and stats.hits == 2
    assert stats.line() == "computed: compare 1, other 1, zero_shot 1; served again from memory: 2"


def test_a_failed_computation_is_not_cached_and_the_waiter_retries():
    cache, started = ComputeCache(), threading.Event()

    def fail() -> int:
        started.set()
        time.sleep(0.2)
        raise RuntimeError("boom")

    errors = []

    def first() -> None:
        try:
            cache.get_or_compute("k", fail)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    started.wait()
    assert cache.get_or_compute("k", lambda: 7) == 7  # waited for the failure, then computed itself
    thread.join()
    assert len(errors) == 1 and cache.get_or_compute("k", lambda: 0) == 7


def test_sizes_count_each_storage_once():
    base = torch.zeros(1000)  # 4000 bytes
    assert size_of(base) == 4000
    views = {"a": base[:10], "b": base[500:], "c": base}
    assert 4000 <= size_of(views) < 4000 + 2000
    assert size_of([torch.zeros(10), torch.zeros(10)]) >= 80


def test_the_budget_comes_from_the_data_home_config(tmp_path):
    home = DataHome(tmp_path)
    assert home.cache_budget_bytes() == 2048 * MB
    home.config_file.write_text(json.dumps({"cache_budget_mb": 64}))
    assert home.cache_budget_bytes() == 64 * MB
    home.config_file.write_text(json.dumps({"cache_budget_mb": "lots"}))
    with pytest.raises(SchemaError, match="cache_budget_mb"):
        home.cache_budget_bytes()
    home.config_file.write_text("[1, 2]")
    with pytest.raises(SchemaError, match="not a JSON object"):
        home.allowed_roots()


def test_workspaces_keep_their_results_in_the_cache_they_are_given(tmp_path):
    from engine.home import ASSETS_DIR
    from engine.pool.collection import load_collection
    from engine.workspace import Workspace

    cache = ComputeCache(budget_bytes=64 * MB)
    collection = load_collection(ASSETS_DIR / "zoo")
    first = Workspace.from_collection(collection, cache_dir=tmp_path, tasks=["digits", "size"], cache=cache)
    second = Workspace.from_collection(collection, cache_dir=tmp_path, tasks=["digits", "size"], cache=cache)
    other = Workspace.from_collection(collection, cache_dir=tmp_path, tasks=["digits"], cache=cache)
    assert first.fingerprint == second.fingerprint != other.fingerprint
    accuracy = first.zero_shot("interactive")
    assert cache.stats().entries == 1
    assert second.zero_shot("interactive") is accuracy  # same checkpoints: the same entry
    other.zero_shot("interactive")
    assert cache.stats().entries == 2
