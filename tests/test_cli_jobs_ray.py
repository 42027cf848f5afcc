"""`compare` and `landscape` with `--ray`: their trials on a real local Ray cluster of 2 worker processes (one
cluster for the module, started as `--ray local` starts it), the same outcome as in process."""

from __future__ import annotations

import json

import pytest
import ray

from engine.cli import main
from engine.home import ASSETS_DIR
from engine.runs.log import RunLog
from engine.search.ray_trials import connect

# one local Ray cluster at a time (make test runs two workers); minutes of cluster work: not in make test-fast
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

ON_THE_ZOO = ["--collection", str(ASSETS_DIR / "zoo"), "--tasks", "digits", "faces", "--device", "cpu"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MERGELAB_HOME", str(tmp_path_factory.mktemp("ray-home")))
        connect("local", num_cpus=2)
    yield
    ray.shutdown()


def _outcome(argv: list[str], capsys) -> dict:
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.mark.parametrize(
    "command, flags",
    [
        ("compare", ["--methods", "task_arithmetic"]),
        ("landscape", ["--a", "digits", "--b", "faces", "--step", "0.25"]),
    ],
)
def test_trials_on_ray_give_the_in_process_outcome(command, flags, cluster, data_home, capsys):
    here = _outcome([command, *ON_THE_ZOO, *flags], capsys)
    on_ray = _outcome([command, *ON_THE_ZOO, *flags, "--ray", "local", "--workers", "2"], capsys)
    assert on_ray["outcome"] == here["outcome"] and on_ray["status"] == "done"
    recorded = RunLog(data_home / "runs" / "runs.sqlite3").job(on_ray["job"]).spec
    assert recorded["args"]["ray"] == "local" and recorded["args"]["workers"] == 2  # the spec reruns on Ray


def test_the_ray_flag_goes_into_the_spec_and_only_for_jobs_of_trials(capsys):
    spec = _outcome(["compare", *ON_THE_ZOO, "--ray", "10.255.255.1:6379", "--print-spec"], capsys)
    assert spec["args"]["ray"] == "10.255.255.1:6379" and spec["args"]["workers"] is None
    with pytest.raises(SystemExit):
        main(["finetune", *ON_THE_ZOO, "--ray", "local"])
    assert "unrecognized arguments: --ray local" in capsys.readouterr().err
