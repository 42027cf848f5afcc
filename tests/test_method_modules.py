"""Methods as modules: a method module dropped into a package is found by the registry built from that package,
and reaches the `methods` command's listing, the Compare grid and the incremental-merge guarantees with no other
file edited; a package's modules are checked when its registry is built."""

import re
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from engine.cli import main, method_lines
from engine.errors import ParameterError
from engine.jobs.compare import DEFAULT_GRIDS, compare_grids
from engine.merge import METHODS, get_method, methods_in
from engine.merge.registry import METHODS_PACKAGE
from engine.pool.collection import load_collection
from tests.test_incremental_merge import _workspace, guarantees

ROOT = Path(__file__).resolve().parents[1]
THROWAWAY = '''
"""A throwaway method, written here in full: each task vector's top-d magnitudes, scaled per task."""
from engine.merge.declaration import CompareGrid, MergeMethod, Param
from engine.merge.sparsify import magnitude_mask

DENSITY = Param("density", 0.5, 0.1, 1.0, 0.1, "fraction d kept per task", symbol="d")
LAM = Param("lam", 0.5, 0.0, 2.0, 0.1, "scaling λ of each kept task vector", per_task=True, symbol="λ")


def kept(T, params, importance=None):
    return magnitude_mask(T, float(params["density"]))  # bool [K, P]


def merge(theta0, T, *, density, lam, out=None, keep=None):
    mask = kept(T, {"density": density}) if keep is None else keep
    merged = theta0 + (lam[:, None] * T * mask).sum(dim=0)  # [P]
    return merged if out is None else out.copy_(merged)


def parts(theta0, T, *, density, keep=None):
    mask = kept(T, {"density": density}) if keep is None else keep
    return theta0, (T * mask).sum(dim=0)  # θ = θ₀ + λ·direction while every λₜ is λ


METHOD = MergeMethod(
    "halved", "Halved", "https://example.org/halved", (DENSITY, LAM), merge,
    formula="θ = θ₀ + Σₜ λₜ top_d(τₜ)", selection="magnitude", cheap=("lam",), keep_mask=kept,
    scale_parts=parts, grid=CompareGrid.over(density=(0.3, 0.6), lam=(0.5, 1.0)), order=15,
)
'''


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of engine/merge/methods/ as a package of its own name on sys.path (removed afterwards)."""
    name = f"dropin_{uuid.uuid4().hex[:12]}"
    source = ROOT / "engine" / "merge" / "methods"
    shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_the_registry_lists_the_method_modules_in_their_declared_order():
    assert list(METHODS) == [
        "task_arithmetic", "ties", "consensus_ta", "consensus_ties", "dare", "dare_ties", "magnitude", "sta",
        "sta_theta", "tsv_m", "iso_c", "iso_cts", "cart", "wudi", "knots_ties", "knots_dare_ties", "knots_ta",
        "core_tsv", "core_ties", "core_iso_c", "tall_masks", "emr",
    ]  # fmt: skip
    assert dict(methods_in(METHODS_PACKAGE)) == dict(METHODS)
    assert set(DEFAULT_GRIDS) == set(METHODS)  # every method here declares a grid: none drops out of Compare


def test_a_dropped_in_module_is_registered_listed_compared_and_held_to_the_guarantees(
    package, tiny_collection_dir, tmp_path, capsys
):
    (package / "halved.py").write_text(THROWAWAY, encoding="utf-8")
    registry = methods_in(package.name)
    method = registry["halved"]
    assert list(registry) == ["task_arithmetic", "halved", *list(METHODS)[1:]]  # order 15: after 10, before 20
    assert "halved" not in METHODS and get_method("halved", registry) is method  # the default registry is untouched
    lines = method_lines(registry)
    assert "halved: Halved (https://example.org/halved)" in lines
    assert "  lam = 0.5 in [0.0, 2.0], per task or global: scaling λ of each kept task vector" in lines
    assert compare_grids(registry)["halved"] == {"density": (0.3, 0.6), "lam": (0.5, 1.0)}
    checks = guarantees(method)
    assert len(checks) == 4  # a scale move, an expensive change, per-task λ, equal per-task λ
    for check in checks:
        check(_workspace(load_collection(tiny_collection_dir), tmp_path / "cache"), method)


def test_a_method_without_a_grid_says_why_and_stays_out_of_compare(package):
    source = THROWAWAY.replace(
        "grid=CompareGrid.over(density=(0.3, 0.6), lam=(0.5, 1.0))", 'grid=CompareGrid.none("a demonstration")'
    )
    (package / "halved.py").write_text(source, encoding="utf-8")
    registry = methods_in(package.name)
    assert registry["halved"].grid.reason == "a demonstration" and "halved" not in compare_grids(registry)


def test_the_methods_command_prints_the_registry(capsys):
    assert main(["methods"]) == 0
    assert capsys.readouterr().out.splitlines() == method_lines(METHODS)


@pytest.mark.parametrize(
    "module, source, message",
    [
        ("notes", "TEXT = 'no method here'\n", "is a method module without a MergeMethod named METHOD"),
        ("other", THROWAWAY, "declares method 'halved'"),
    ],
)
def test_a_module_that_declares_no_method_of_its_name_is_an_error(package, module, source, message):
    (package / f"{module}.py").write_text(source, encoding="utf-8")
    with pytest.raises(ParameterError, match=re.escape(f"{package.name}.{module}: {message}")):
        methods_in(package.name)


def test_a_module_of_shared_parts_is_skipped(package):
    (package / "_helpers.py").write_text("TEXT = 'shared'\n", encoding="utf-8")
    assert list(methods_in(package.name)) == list(METHODS)
