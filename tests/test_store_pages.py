"""A T mapped from a built store gives its pages back as the kernels stream it (engine/store/pages.py), and
nothing else is ever released: anonymous memory dropped with MADV_DONTNEED would read back as zeros."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.merge import subspace
from engine.merge.registry import apply
from engine.params import ParamSpec
from engine.pool.collection import built_task_store, load_collection
from engine.store.built import BuiltStore
from engine.store.pages import MARGIN, MappedPages, Pages
from tests.store_doubles import open_synthetic
from tests.test_merge_hashes import ZOO, cases, merged

SOURCES = {"pretrained": "p0", "tasks": ["a"]}
WIDE = ParamSpec(names=("w1", "b1", "w2"), shapes=((4096, 512), (512,), (512, 4096)))  # 4.2 Mi parameters


def mapped_kib(store: BuiltStore) -> int:
    """The store mapping's resident KiB in this process (its Rss line in /proc/self/smaps)."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith(store.path.name))
    return int(next(line.split()[1] for line in lines[at:] if line.startswith("Rss:")))


def drop_all(store: BuiltStore) -> None:
    store.mapping.madvise(mmap.MADV_DONTNEED, 0, store.layout.size)


def test_release_leaves_anything_but_a_read_only_file_mapping_alone(tmp_path):
    anonymous = torch.randn(1 << 20)
    from_numpy = torch.from_numpy(np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32))
    path = tmp_path / "rw.bin"
    path.write_bytes(np.arange(1 << 20, dtype=np.float32).tobytes())
    with open(path, "r+b") as handle:
        writable = torch.frombuffer(mmap.mmap(handle.fileno(), 0), dtype=torch.float32)
    for tensor in (anonymous, from_numpy, writable):
        before = tensor.clone()
        assert MappedPages.of(tensor) is None
        Pages.of(tensor).release(tensor)
        assert torch.equal(tensor, before)
    writable[0] = 5.0  # still the file's memory, written through
    assert np.frombuffer(path.read_bytes(), dtype=np.float32, count=1)[0] == 5.0


def test_every_method_leaves_the_mapping_released(tmp_path):
    """Iterates the registry: after any merge of the zoo from its float32 mapping, none of the mapping stays
    resident in this process (the streaming kernels release block by block, the rest with the call)."""
    collection = load_collection(ZOO)
    store = built_task_store(collection, tmp_path, dtype="float32")
    mapped, left = store.matrix(), {}
    for case, method, params, rows in cases():
        if case.endswith("/default"):
            drop_all(store)
            merged(collection, mapped, method, params, rows)
            left[method] = mapped_kib(store)
    assert left and max(left.values()) == 0, left


def _peak_kib_during(run) -> int:
    """The peak resident size reached while `run()` runs, above the resident size before, in KiB: VmHWM is
    reset to the current size first (/proc/self/clear_refs, 5)."""
    Path("/proc/self/clear_refs").write_text("5")

    def field(name: str) -> int:
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line.split()[1] for line in status if line.startswith(name + ":")))

    before = field("VmRSS")
    run()
    return field("VmHWM") - before


@pytest.mark.parametrize(
    "method, params",
    [
        ("task_arithmetic", {}),
        ("ties", {"density": 0.2}),
        ("magnitude", {"density": 0.2}),
        ("dare", {"drop": 0.5}),
        ("dare_ties", {"drop": 0.5}),
    ],
)
def test_a_streaming_merge_never_holds_the_mapping(tmp_path, method, params):
    """A flat merge over a 128 MiB mapping peaks at its output and one row, not at the mapping: read without
    releasing, the whole file would be resident by the end. DARE draws its drop mask block by block beside T's
    (sparsify.DropStream): drawn whole, the mask alone would be K·P bytes, a quarter of the mapping."""
    store = open_synthetic(tmp_path / "wide.float32.taskstore", sources=SOURCES, spec=WIDE, tasks=8)
    mapped = store.matrix()
    drop_all(store)
    out = torch.empty(WIDE.numel)  # [P] touched before the clock: the merge's own output
    out.zero_()
    peak = _peak_kib_during(lambda: apply(method, mapped.theta0, mapped.T, params, out=out))
    mapping_kib = 8 * WIDE.numel * 4 // 1024
    row_kib = WIDE.numel * 4 // 1024  # TIES and magnitude find each task's cut on its row
    assert peak < 2 * row_kib + 2 * MARGIN // 1024 < mapping_kib / 2, (peak, mapping_kib)


def test_per_layer_methods_copy_each_stack_then_release_it(tmp_path, monkeypatch):
    """TSV-M, Iso-C, Iso-CTS and CART read T as stacks of layers (subspace.layer_stacks): once a stack is copied,
    none of the mapping stays resident, however many stacks there are."""
    store = open_synthetic(tmp_path / "wide.float32.taskstore", sources=SOURCES, spec=WIDE, tasks=8)
    mapped = store.matrix()
    monkeypatch.setattr(subspace, "STACK_BYTES", 1)  # one layer per stack
    drop_all(store)
    seen = []
    for names, stacked in subspace.layer_stacks(WIDE, mapped.T, WIDE.matrices()):
        seen.append((names, mapped_kib(store)))
        assert torch.equal(stacked[0], WIDE.matrix_view(mapped.T, names[0]))
        drop_all(store)  # the check itself read the layer again
    assert [n for n, _ in seen] == [("w1",), ("w2",)] and all(kib <= 8 for _, kib in seen), seen
