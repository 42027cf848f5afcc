"""The memory plan: which backing a pool opens with, from P, K, the memory available, the cgroup's limit, the
cache budget, the processes opening pools at once and the free disk; what it says; how it is overridden."""

import json

import pytest
import torch

from engine.cli import main
from engine.errors import ParameterError, SchemaError
from engine.home import DataHome
from engine.io.checkpoints import load_checkpoint
from engine.merge import apply
from engine.merge.registry import scale_parts
from engine.params import flatten
from engine.pool.collection import load_collection, task_matrix
from engine.store.plan import GIB, MemoryFacts, in_memory_bytes, plan_store
from engine.workspace import Workspace

VIT_L14, VIT_B32 = 303_966_208, 87_849_216  # image-tower parameters
GB = 1 << 30


def _plan(num_tasks, numel, available, **kwargs):
    return plan_store(num_tasks=num_tasks, numel=numel, facts=MemoryFacts(available), cache_budget=2 * GB, **kwargs)


def test_twenty_vit_l14_tasks_open_out_of_core_on_this_machines_24_gib():
    plan = _plan(20, VIT_L14, 24 * GB, architecture="ViT-L/14")
    assert plan.backing == "built" and not plan.asked
    assert plan.summary() == "20 × ViT-L/14: 22.6 GiB as float32; opening out of core (24.0 GiB free)"


def test_a_pool_that_fits_comfortably_opens_in_memory_and_one_that_does_not_goes_out_of_core():
    assert _plan(8, VIT_B32, 24 * GB).backing == "memory"  # 3.8 GB + 2 GB of cache budget in 24
    assert _plan(16, VIT_B32, 24 * GB).backing == "memory"  # 6.7 GB + 2 GB
    assert _plan(16, VIT_B32, 12 * GB).backing == "built"  # 8.7 GB > 0.6 × 12
    just = in_memory_bytes(8, VIT_B32) + 2 * GB
    assert _plan(8, VIT_B32, int(just / 0.6) + 1).backing == "memory"
    assert _plan(8, VIT_B32, int(just / 0.6) - 4096).backing == "built"


def test_the_cgroup_limit_the_cache_budget_and_concurrent_jobs_shrink_the_room():
    roomy = MemoryFacts(64 * GB)
    limited = MemoryFacts(64 * GB, cgroup_limit=6 * GB, cgroup_usage=GB)
    assert limited.room == 5 * GB and MemoryFacts(4 * GB, cgroup_limit=10 * GB).room == 4 * GB
    common = dict(num_tasks=8, numel=VIT_B32, cache_budget=0)  # 3.6 GiB in memory
    assert plan_store(facts=roomy, **common).backing == "memory"
    assert plan_store(facts=limited, **common).backing == "built"  # 3.6 GiB > 0.6 × 5 GiB
    assert plan_store(facts=roomy, jobs=16, **common).backing == "built"  # 4 GiB each
    assert plan_store(facts=MemoryFacts(12 * GB), **common).backing == "memory"
    assert plan_store(facts=MemoryFacts(12 * GB), **{**common, "cache_budget": 4 * GB}).backing == "built"


def test_a_disk_with_room_for_bfloat16_only_picks_the_bfloat16_store():
    float32_file = 4 * VIT_L14 * 21
    assert _plan(20, VIT_L14, 24 * GB, disk_free=float32_file).backing == "built"
    assert _plan(20, VIT_L14, 24 * GB, disk_free=float32_file - 1).backing == "built-bf16"
    assert "as bfloat16 (11.3 GiB)" in _plan(20, VIT_L14, 24 * GB, disk_free=float32_file - 1).summary()
    assert _plan(20, VIT_L14, 24 * GB, disk_free=GB).backing == "built"  # neither fits: its build says so


def test_a_pool_on_a_gpu_opens_in_memory_unless_asked():
    plan = _plan(20, VIT_L14, 24 * GB, device="cuda:0")
    assert plan.backing == "memory" and plan.summary().endswith("opening in memory on cuda:0 (24.0 GiB free)")
    assert _plan(20, VIT_L14, 24 * GB, device="cuda:0", choice="built").backing == "built"


def test_an_explicit_choice_wins_and_a_bad_one_is_named():
    plan = _plan(20, VIT_L14, 24 * GB, choice="memory", architecture="ViT-L/14")
    assert plan.backing == "memory" and plan.asked and plan.summary().endswith("opening in memory (as asked)")
    assert _plan(2, 1000, 24 * GB, choice="built-bf16").backing == "built-bf16"
    with pytest.raises(ParameterError, match="'disk'"):
        _plan(2, 1000, 24 * GB, choice="disk")


def test_memory_facts_are_read_from_meminfo_and_the_cgroup(tmp_path):
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:  32000000 kB\nMemAvailable:   20000000 kB\n")
    (proc / "self" / "cgroup").write_text("0::/jobs/a\n")
    (cgroups / "jobs" / "a").mkdir(parents=True)
    (cgroups / "jobs" / "a" / "memory.max").write_text("8589934592\n")
    (cgroups / "jobs" / "a" / "memory.current").write_text("1073741824\n")
    facts = MemoryFacts.read(proc=proc, cgroup_root=cgroups)
    assert facts == MemoryFacts(20_000_000 * 1024, 8 * GB, GB) and facts.room == 7 * GB
    (cgroups / "jobs" / "a" / "memory.max").write_text("max\n")
    assert MemoryFacts.read(proc=proc, cgroup_root=cgroups).cgroup_limit is None
    (proc / "self" / "cgroup").write_text("4:memory:/v1\n0::/\n")  # cgroup v1's memory hierarchy
    (cgroups / "memory" / "v1").mkdir(parents=True)
    (cgroups / "memory" / "v1" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    (cgroups / "memory" / "v1" / "memory.usage_in_bytes").write_text("1000\n")
    assert MemoryFacts.read(proc=proc, cgroup_root=cgroups) == MemoryFacts(20_000_000 * 1024, None, 1000)
    here = MemoryFacts.read()
    assert here.mem_available > 0 and here.room > 0 and here.room / GIB < 1 << 20


def test_config_json_names_the_store(data_home):
    home = DataHome(data_home)
    assert home.store_choice() == "auto"
    data_home.mkdir(parents=True)
    home.config_file.write_text(json.dumps({"store": "built-bf16"}))
    assert home.store_choice() == "built-bf16"
    home.config_file.write_text(json.dumps({"store": "ssd"}))
    with pytest.raises(SchemaError, match="store is 'ssd'"):
        home.store_choice()


def test_a_workspace_opened_out_of_core_merges_as_in_memory(tiny_collection_dir, tmp_path):
    collection = load_collection(tiny_collection_dir)
    memory = Workspace.from_collection(collection, cache_dir=tmp_path / "m", store="memory")
    built = Workspace.from_collection(collection, cache_dir=tmp_path / "b", store="built")
    assert memory.store_plan.backing == "memory" and built.store_plan.backing == "built"
    assert len(list((tmp_path / "b" / "stores").glob("*.float32.taskstore"))) == 1
    assert torch.equal(built.matrix.T, memory.matrix.T) and torch.equal(built.matrix.theta0, memory.matrix.theta0)
    for method, params in [("ties", {"lam": 0.8}), ("dare", {"lam": [0.2, 0.5, 0.9]})]:
        assert torch.equal(
            built.merge(built.task_names, method, params), memory.merge(memory.task_names, method, params)
        )
    half = Workspace.from_collection(collection, cache_dir=tmp_path / "h", store="built-bf16")
    assert half.matrix.T.dtype == torch.bfloat16
    assert len(list((tmp_path / "h" / "stores").glob("*.bfloat16.taskstore"))) == 1
    widened = memory.matrix.T.to(torch.bfloat16).float()  # [K, P] what the bf16 store holds, as float32
    base, direction = scale_parts("ties", memory.matrix.theta0, widened)  # what a session caches, λ applied after
    assert torch.equal(half.merge(half.task_names, "ties", {"lam": 0.8}), torch.add(base, direction, alpha=0.8))
    cart = apply("cart", memory.matrix.theta0, widened, {}, spec=memory.matrix.spec)  # widened whole for the call
    assert torch.equal(half.merges.merge(half.task_names, "cart", {}), cart)
    auto = Workspace.from_collection(collection, cache_dir=tmp_path / "a")  # a tiny pool: the plan keeps it in memory
    assert auto.store_plan.backing == "memory" and not auto.store_plan.asked


def test_the_cli_says_how_it_opens_the_pool_and_honours_store(tiny_collection_dir, data_home, capsys):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    args = ["merge", "--collection", str(tiny_collection_dir), "--param", "lam=0.4", "--device", "cpu"]
    assert main([*args, "--out", "mem"]) == 0
    assert "store: 3 × " in capsys.readouterr().err and not (data_home / "cache" / "stores").exists()
    assert main([*args, "--out", "built", "--store", "built"]) == 0
    err = capsys.readouterr().err
    assert "opening out of core (as asked)" in err, err
    assert list((data_home / "cache" / "stores").glob("*.float32.taskstore"))
    tm = task_matrix(load_collection(tiny_collection_dir))
    expected = apply("task_arithmetic", tm.theta0, tm.T, {"lam": 0.4})
    for name in ("mem", "built"):
        assert torch.equal(
            flatten(load_checkpoint(data_home / "exports" / f"{name}.safetensors").state, tm.spec), expected
        )
