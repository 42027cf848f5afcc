"""The built out-of-core store: equal to the in-memory matrix (float32 exactly, bfloat16 as T rounded once),
every method on its float32 mapping merges to the recorded bits, and it is built once, atomically, after a
free-disk check, rebuilt when stale or damaged, and releases its pages after each block."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.cli import method_lines
from engine.errors import DiskFullError, ParameterError
from engine.merge.declaration import rows_as_read
from engine.merge.registry import METHODS
from engine.params import ParamSpec, TaskMatrix
from engine.pool.collection import built_task_store, lazy_task_store, load_collection, task_matrix
from engine.store import TaskStore, column_blocks
from engine.store.built import BuiltStore, stale_or_damaged, store_header
from engine.store.plan import MemoryFacts
from tests.store_doubles import SYNTHETIC_SPEC, open_synthetic, synthetic_row
from tests.test_merge_hashes import FIXTURE, ZOO, cases, fingerprint, merged

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"pretrained": "p0", "tasks": ["a", "b", "c"]}


@pytest.fixture(scope="module")
def zoo():
    collection = load_collection(ZOO)
    return collection, task_matrix(collection)


@pytest.fixture(scope="module")
def stores(zoo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    built = {dtype: built_task_store(zoo[0], folder, dtype=dtype) for dtype in ("float32", "bfloat16")}
    return {**built, "lazy": lazy_task_store(zoo[0])}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "lazy"])
def test_a_built_or_lazy_store_reads_the_in_memory_matrix(zoo, stores, dtype):
    """ "lazy" reads the checkpoints themselves (float32, exact): mergekit's way, the other out-of-core option."""
    _, matrix = zoo
    store = stores[dtype]
    assert isinstance(store, TaskStore) and store.task_names == matrix.task_names
    assert torch.equal(store.theta0, matrix.theta0)  # θ₀ stays float32
    expected = matrix.T.to(torch.bfloat16).float() if dtype == "bfloat16" else matrix.T  # bf16: rounded once
    for rows in [(0, 1, 2, 3, 4, 5, 6, 7), (6, 1, 4), (2,)]:
        walked = torch.cat([store.block(rows, c) for c in column_blocks(matrix.spec.numel, 50_000)], dim=1)
        assert walked.dtype == torch.float32 and torch.equal(walked, expected[list(rows)])
    for name in matrix.spec.matrices()[:5]:
        assert torch.equal(store.layer((5, 0), name), matrix.spec.matrix_view(expected, name)[[5, 0]])


def test_every_method_on_the_float32_mapping_merges_to_the_recorded_bits(zoo, stores):
    import json

    recorded = json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]
    mapped = stores["float32"].matrix()
    assert mapped.T.data_ptr() == stores["float32"].rows.data_ptr()  # the mapping itself, not a copy
    for case, method, params, rows in cases():
        if case.endswith("/default"):
            assert fingerprint(merged(zoo[0], mapped, method, params, rows))["sha256"] == recorded[case]["sha256"]


def test_every_method_merges_a_bfloat16_mapping_as_its_values_widened(zoo, stores):
    """Iterates the registry: every method merges the bf16 store's own mapping to the bits of the same merge of
    those values widened to float32 in memory. Those that declare `streams` read the mapping chunk by chunk or
    layer by layer (float32 arithmetic); the others get it widened whole for the call, or refuse it, naming
    what it would take, when that does not fit the machine's memory."""
    collection, matrix = zoo
    mapped = stores["bfloat16"].matrix()
    assert mapped.T.dtype == torch.bfloat16 and mapped.T.data_ptr() == stores["bfloat16"].rows.data_ptr()
    widened = TaskMatrix(matrix.theta0, mapped.T.float(), matrix.spec, matrix.task_names)  # [K, P] float32
    readers = []
    for case, method, params, rows in cases():
        if case.endswith("/default"):
            readers += [method] if METHODS[method].streams else []
            got = merged(collection, mapped, method, params, rows)
            assert torch.equal(got, merged(collection, widened, method, params, rows)), method
    assert {"task_arithmetic", "ties", "tsv_m", "iso_c"} <= set(readers) < set(METHODS)
    listed = [line for line in method_lines(METHODS) if not line.startswith(" ")]  # what the refusal points to
    assert {line.split(":")[0] for line in listed if "[streams: reads bfloat16 and LoRA stores]" in line} == set(
        readers
    )
    small = MemoryFacts(mem_available=mapped.T.numel() * 4)  # less than T widened needs beside everything else
    assert rows_as_read(METHODS["ties"], mapped.T, facts=small) is mapped.T
    with pytest.raises(ParameterError, match=r"method wudi.*needs 0\.\d GiB.*--store built"):
        rows_as_read(METHODS["wudi"], mapped.T, facts=small)


def test_reopening_reads_no_checkpoint_and_a_changed_source_rebuilds(tmp_path):
    target, log = tmp_path / "s.float32.taskstore", tmp_path / "log"
    first = open_synthetic(target, sources=SOURCES, log=log)
    assert log.read_text().split() == ["0", "1", "2"]
    again = open_synthetic(target, sources=SOURCES, log=log)
    assert log.read_text().split() == ["0", "1", "2"]  # opened, not built
    assert torch.equal(again.block((1,), slice(0, 100)), first.block((1,), slice(0, 100)))
    changed = {**SOURCES, "tasks": ["a", "b", "c2"]}
    stale = stale_or_damaged(target, store_header(SYNTHETIC_SPEC, again.task_names, changed, "float32"))
    assert stale == "stale: its sources differ"
    open_synthetic(target, sources=changed, log=log)
    assert log.read_text().split() == ["0", "1", "2"] * 2  # stale: built again, under the same name
    assert [p.name for p in tmp_path.glob("*.taskstore")] == ["s.float32.taskstore"]


@pytest.mark.parametrize("damage", ["truncated", "garbage header", "not json"])
def test_a_damaged_store_is_rebuilt(tmp_path, damage):
    target, log = tmp_path / "s.float32.taskstore", tmp_path / "log"
    open_synthetic(target, sources=SOURCES)
    data = target.read_bytes()
    broken = {
        "truncated": data[: len(data) - 4096],
        "garbage header": b"XXXXXXXX" + data[8:],
        "not json": data[:16] + b"{" * 20 + data[36:],
    }[damage]
    target.write_bytes(broken)
    store = open_synthetic(target, sources=SOURCES, log=log)
    assert log.read_text().split() == ["0", "1", "2"]
    assert torch.equal(store.block((2,), slice(0, SYNTHETIC_SPEC.numel))[0], synthetic_row(2))


def _opener(target: Path, log: Path, *, delay: float = 0.0, fault: str = "") -> subprocess.Popen:
    code = (
        "import sys; from tests.store_doubles import open_synthetic;"
        f"s = open_synthetic({str(target)!r}, sources={SOURCES!r}, log={str(log)!r}, delay={delay});"
        "print(float(s.block(range(3), slice(0, s.spec.numel)).double().sum()))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MERGELAB_FAULT": fault}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def test_a_killed_build_leaves_nothing_under_the_final_name(tmp_path):
    target, log = tmp_path / "s.float32.taskstore", tmp_path / "log"
    killed = _opener(target, log, fault="store.mid_build")
    assert killed.wait(timeout=120) == -signal.SIGKILL
    assert log.read_text().split() == ["0"] and not target.exists()
    assert [p.name for p in tmp_path.glob(".s.float32.taskstore.*.part")]  # its half-written sibling
    store = open_synthetic(target, sources=SOURCES)
    assert torch.equal(store.block((0,), slice(0, 50))[0], synthetic_row(0)[:50])
    assert not list(tmp_path.glob("*.part"))  # swept: its writer is dead


def test_two_processes_opening_at_once_build_once(tmp_path):
    target, log = tmp_path / "s.float32.taskstore", tmp_path / "log"
    openers = [_opener(target, log, delay=1.0) for _ in range(2)]  # a 3 s build: the second arrives during it
    sums = [opener.communicate(timeout=120)[0] for opener in openers]
    assert [o.returncode for o in openers] == [0, 0]
    assert log.read_text().split() == ["0", "1", "2"]  # one build of three rows
    assert sums[0] == sums[1] and float(sums[0]) == pytest.approx(
        float(sum(synthetic_row(k).double().sum() for k in range(3)))
    )


def test_a_store_that_does_not_fit_on_disk_says_what_it_needs_before_writing(tmp_path):
    huge = ParamSpec(names=("w",), shapes=((1 << 20, 1 << 20),))  # 2^40 parameters: 4.4 TB of float32
    target = tmp_path / "huge.float32.taskstore"
    with pytest.raises(DiskFullError, match=r"needs \d+\.\d GB on .*MERGELAB_HOME"):
        open_synthetic(target, sources=SOURCES, spec=huge)
    assert not target.exists() and not list(tmp_path.glob("*.part"))


def _rss_file_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssFile:")))


def test_reading_block_by_block_keeps_the_mapping_out_of_the_resident_set(tmp_path):
    spec = ParamSpec(names=("w",), shapes=((4096, 2048),))  # 8 Mi parameters: 32 MiB per row
    store: BuiltStore = open_synthetic(tmp_path / "big.float32.taskstore", sources=SOURCES, spec=spec, tasks=2)
    rss = _rss_file_kib()
    buffer = torch.empty(2, 1 << 20)
    for cols in column_blocks(spec.numel, 1 << 20):
        store.block((0, 1), cols, out=buffer[:, : cols.stop - cols.start])
    released = _rss_file_kib() - rss
    for r in range(2):  # the same walk without releasing: the whole file becomes resident
        for cols in column_blocks(spec.numel, 1 << 20):
            buffer[0].copy_(store.rows[r, cols])
    kept = _rss_file_kib() - rss
    assert kept > 32 * 1024 and released < 8 * 1024, (released, kept)  # KiB: 64 MiB walked
