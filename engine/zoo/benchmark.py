"""The zoo's benchmark stage: the benchmark's table (engine/jobs/benchmark.py: TA, TIES, TSV-M, Iso-C, Iso-CTS,
each declared grid on val, the chosen setting on test) on the demo zoo, shipped as its own benchmark.json.

A file of its own, not a part of report.json, so adding it rewrites no other zoo file (manifest.json gains its
sha256). The Benchmark page shows it at once; tests/test_benchmark.py recomputes one row.
"""

from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from engine.data.generated import file_sha256
from engine.eval.benchmark import BENCHMARK_FILE, Benchmark, write_json
from engine.io.atomic import write_text_atomic
from engine.jobs.benchmark import benchmark_job
from engine.jobs.runner import JobContext
from engine.workspace import Workspace

ZOO_NAME = "assets/zoo"  # the collection as the stored settings name it (not this machine's path)


def zoo_benchmark(zoo: Path, **options) -> Benchmark:
    """The table on `zoo` (the job's defaults, or `options`), its collection named as shipped."""
    with tempfile.TemporaryDirectory() as cache:
        ws = Workspace.open(zoo, cache_dir=Path(cache))
        table = benchmark_job(JobContext(lambda **_: None, threading.Event()), workspace=ws, **options)
    return replace(table, settings={**table.settings, "collection": ZOO_NAME})


def benchmark_stage(zoo: Path) -> Benchmark:
    """Compute the table and store it beside the zoo, its sha256 added to manifest.json."""
    zoo = Path(zoo)
    table = zoo_benchmark(zoo)
    write_text_atomic(zoo / BENCHMARK_FILE, write_json(table))
    manifest = json.loads((zoo / "manifest.json").read_text())
    manifest[BENCHMARK_FILE] = file_sha256(zoo / BENCHMARK_FILE)
    write_text_atomic(zoo / "manifest.json", json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return table
