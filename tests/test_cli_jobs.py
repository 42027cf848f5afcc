"""The page jobs from the command line: each command runs the job its page submits, with the same arguments
(one declaration, engine/jobs/forms.py) and the same result; Ctrl-C leaves a partial run-log row and no
checkpoint; bad flags and specs are named."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from engine import cli_jobs
from engine.cli import main
from engine.home import ASSETS_DIR, DataHome
from engine.jobs.forms import FORMS
from engine.jobs.runner import JobContext
from engine.jobs.spec import JOB_KINDS, JobSpec
from engine.pool.collection import load_collection
from engine.runs.log import RunLog
from engine.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
ZOO = ASSETS_DIR / "zoo"
PAIR = ("digits", "faces")
ON_THE_ZOO = ["--collection", str(ZOO), "--tasks", *PAIR, "--device", "cpu"]
# (command, flags, the page's widget values for the same job): small step counts, two of the zoo's tasks
CASES = {
    "finetune": (["--task", "faces", "--steps", "3", "--batch", "16"], {"task": "faces", "steps": 3, "batch": 16}),
    "learn": (
        ["--epochs", "1", "--patience", "1", "--iterations", "1"],
        {"epochs": 1, "patience": 1, "iterations": 1},
    ),
    "taujp": ([], {}),
    "importance": (["--kind", "grad0"], {"kind": "grad0"}),
    "compare": (["--methods", "task_arithmetic"], {"methods": ["task_arithmetic"]}),
    "landscape": (["--a", "faces", "--b", "digits", "--step", "0.25"], {"a": "faces", "b": "digits", "step": 0.25}),
    "parts": (["--method", "wudi", "--param", "steps=5"], {"method": "wudi", "param": {"steps": 5.0}}),
}


@pytest.fixture(scope="module")
def page_workspace(tmp_path_factory) -> Workspace:
    """The page's workspace of the same two tasks, with a cache of its own (nothing the command computed)."""
    cache = tmp_path_factory.mktemp("page-cache")
    return Workspace.from_collection(load_collection(ZOO), cache_dir=cache, device="cpu", tasks=PAIR)


def _command(argv: list[str], capsys) -> dict:
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def _page_job(command: str, values: dict, ws: Workspace, out: Path):
    """What the page submits for these widget values, run by calling the job function itself."""
    form = FORMS[command]
    args = form.arguments(values, tasks=ws.task_names, home=DataHome(out))
    ctx = JobContext(lambda **_: None, threading.Event())
    return args, JOB_KINDS[form.kind].fn(ctx, workspace=ws, **JOB_KINDS[form.kind].arguments(args))


@pytest.mark.parametrize("command", CASES)
def test_the_command_gives_the_page_job_s_result(command, page_workspace, data_home, tmp_path, capsys, monkeypatch):
    flags, values = CASES[command]
    # the same bits need the same torch thread count: the command's job runs with this process's
    monkeypatch.setenv("MERGELAB_JOB_THREADS", str(torch.get_num_threads()))
    spec = JobSpec.from_json(json.dumps(_command([command, *ON_THE_ZOO, *flags, "--print-spec"], capsys)))
    document = _command([command, *ON_THE_ZOO, *flags], capsys)
    args, result = _page_job(command, values, page_workspace, tmp_path / "page-home")
    cli_home, page_home = str(data_home), str(tmp_path / "page-home")
    as_stored = json.loads(json.dumps(args))  # a job's arguments are JSON: tuples are lists there
    assert json.loads(json.dumps(spec.args).replace(cli_home, page_home)) == as_stored, "the same job arguments"
    assert spec.workspace.tasks == PAIR and document["status"] == "done"
    expected, got = json.loads(json.dumps(result.to_json())), dict(document["outcome"])
    for key in ("path", "checkpoint", "artifact"):  # where each wrote its file: same bytes, other names
        if key in expected:
            mine, theirs = Path(expected.pop(key)), Path(got.pop(key))
            if key != "checkpoint":
                assert mine.read_bytes() == theirs.read_bytes() and theirs.is_relative_to(data_home)
    for timing in ("seconds",):  # how long it took: not part of the result
        expected.pop(timing, None), got.pop(timing, None)
    assert got == expected  # curves included
    (run,) = RunLog(data_home / "runs" / "runs.sqlite3").runs(job_id=document["job"])
    assert run.id == document["run"] and run.status == "done"
    written = json.loads(Path(document["outcome_file"]).read_text())
    assert written["outcome"] == document["outcome"]
    assert JobSpec.from_json(json.dumps(written["spec"])) == spec


def test_a_job_command_opens_the_pool_as_config_json_says(data_home, capsys):
    """ "store": "built" in the data home's config.json: the job reads the pool from the float32 store built there."""
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"store": "built"}))
    assert _command(["compare", *ON_THE_ZOO, "--methods", "task_arithmetic"], capsys)["status"] == "done"
    assert len(list((data_home / "cache" / "stores").glob("*.float32.taskstore"))) == 1


def test_a_fine_tune_from_the_command_is_in_the_dashboard_s_checkpoint_lists(data_home, capsys):
    document = _command(["finetune", *ON_THE_ZOO, "--task", "digits", "--steps", "2", "--batch", "8"], capsys)
    collection = load_collection(ZOO).with_finetunes(DataHome.from_env().finetunes)
    assert document["outcome"]["checkpoint"] in collection.variants("digits")


def test_a_spec_from_the_run_log_runs_again_with_the_same_outcome(data_home, tmp_path, capsys):
    first = _command(["compare", *ON_THE_ZOO, "--methods", "ties"], capsys)
    recorded = RunLog(data_home / "runs" / "runs.sqlite3").job(first["job"]).spec  # what the jobs table keeps
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(recorded))
    again = _command(["job", str(path)], capsys)
    assert again["outcome"] == first["outcome"] and again["job"] != first["job"] and again["run"] != first["run"]
    assert _command(["job", "--job-id", str(first["job"]), "--print-spec"], capsys) == recorded  # by its number
    third = _command(["job", "--job-id", str(first["job"])], capsys)
    assert third["outcome"] == first["outcome"]


@pytest.mark.parametrize(
    "argv, named",
    [
        (["job"], "job: needs a spec file or --job-id"),
        (["job", "--job-id", "99"], "job #99: is not in the run log"),
        (["job", "missing.json"], "missing.json: cannot be read"),
    ],
)
def test_a_job_without_a_spec_is_named(argv, named, capsys):
    assert main(argv) == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("command", CASES)
def test_ctrl_c_cancels_the_job_and_logs_what_it_reached(command, tiny_collection_dir, data_home, monkeypatch, capsys):
    """Ctrl-C (KeyboardInterrupt in the command's wait) after the job's first step: a partial run-log row,
    its outputs printed and written beside it, exit 130. The job holds at its first step until the cancel has
    been asked for: a short job (taujp on three tiny tasks) otherwise finished before the cancel arrived (exit 0)."""
    flags = {
        "finetune": ["--task", "colour", "--steps", "400", "--batch", "8"],
        "learn": ["--epochs", "30", "--patience", "30"],
        "importance": ["--kind", "grad0"],
        "compare": ["--methods", "task_arithmetic", "ties", "dare"],
        "landscape": ["--step", "0.1"],
        "parts": ["--param", "steps=1000"],
    }.get(command, [])
    interrupted = []

    def ctrl_c_after_a_step(status) -> None:
        if status.step >= 1 and not interrupted:
            interrupted.append(status.step)
            raise KeyboardInterrupt
        time.sleep(0.01)

    report = JobContext.report

    def report_then_hold(ctx: JobContext, step: int, *args, **kwargs) -> None:
        report(ctx, step, *args, **kwargs)
        deadline = time.monotonic() + 120  # a ceiling: the command's next look at the job is 10 ms away
        while step >= 1 and not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)

    monkeypatch.setattr(cli_jobs, "_pause", ctrl_c_after_a_step)
    monkeypatch.setattr(JobContext, "report", report_then_hold)
    code = main([command, "--collection", str(tiny_collection_dir), "--device", "cpu", *flags])
    out = capsys.readouterr()
    if not interrupted:  # the job was done before the command looked again
        pytest.fail(f"{command} finished before its first step was seen: make it longer\n{out.err}")
    assert code == 130, out.err
    document = json.loads(out.out)
    (run,) = RunLog(data_home / "runs" / "runs.sqlite3").runs(job_id=document["job"])
    assert document["status"] == "cancelled" and run.status == "cancelled" and run.partial
    assert document["outcome"] == dict(run.outputs)
    assert json.loads(Path(document["outcome_file"]).read_text())["outcome"] == document["outcome"]


def test_sigint_leaves_a_partial_row_and_no_checkpoint(tmp_path):
    """The real thing, once: a command in its own process, SIGINT while it fine-tunes."""
    home = tmp_path / "home"
    env = {**os.environ, "MERGELAB_HOME": str(home), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "engine", "finetune", *ON_THE_ZOO, "--task", "digits", "--steps", "5000"]
    process = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 120
        while not _running_step(home):
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the fine-tune never reported a step"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-2000:]
    document = json.loads(out)
    (run,) = RunLog(home / "runs" / "runs.sqlite3").runs(job_id=document["job"])
    assert run.status == "cancelled" and run.outputs["partial"] and run.outputs["step"] >= 1
    assert run.outputs["reached"]["loss"], "the curve so far is kept"
    assert not [p for p in (home / "checkpoints").rglob("*") if p.is_file()], "no checkpoint, not even a part"


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C's default disposition, as a shell gives a command. An ignored SIGINT is
    inherited across exec, and Python then never raises KeyboardInterrupt: a test process that some library left
    ignoring SIGINT (seen in full suites, on the worker that ran this module) made the command wait out its 5000
    steps."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _running_step(home: Path) -> bool:
    path = home / "runs" / "runs.sqlite3"
    return path.exists() and any(j.state == "running" and j.step >= 1 for j in RunLog(path).jobs())


@pytest.mark.parametrize(
    "argv, named",
    [
        (["finetune", "--task", "nope"], "finetune --task: 'nope' is not one of"),
        (["finetune", "--steps", "0"], "steps: invalid fine-tuning setting 0"),
        (["landscape", "--a", "digits", "--b", "digits"], "landscape --a/--b: are both 'digits'"),
        (["learn", "--variant", "nope=standard"], "--variant: 'nope=standard' names no task"),
        (["compare", "--tasks", "digits", "nope"], "nope"),
        (["taujp", "--variant", "nope"], "digits/nope: no such fine-tuned checkpoint"),
        (["parts", "--param", "steps"], "parts --param: 'steps' is not NAME=NUMBER"),
        (["parts", "--param", "lam=0.3"], "parts --param lam: is no parameter of wudi"),
        (["parts", "--param", "steps=5000"], "wudi.steps: value 5000.0 outside"),
    ],
)
def test_a_bad_flag_is_named(argv, named, capsys):
    assert main([*argv, "--collection", str(ZOO), "--device", "cpu"]) == 2
    assert named in capsys.readouterr().err


def test_a_flag_outside_its_choices_is_named_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--mode", "fast"])
    assert exit_.value.code == 2 and "argument --mode: invalid choice: 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda s: "{not json", "is not a job spec (JSONDecodeError"),
        (lambda s: json.dumps({**s, "version": 9}), "no or another version"),
        (lambda s: json.dumps({**s, "kind": "train"}), "kind 'train' is unknown"),
        (lambda s: json.dumps({**s, "args": {**s["args"], "speed": 2}}), "args.speed is no argument of a finetune"),
        (
            lambda s: json.dumps({**s, "args": {**s["args"], "config": {**s["args"]["config"], "steps": 0}}}),
            "steps: invalid fine-tuning setting",
        ),
        (lambda s: json.dumps({k: v for k, v in s.items() if k != "workspace"}), "KeyError: 'workspace'"),
    ],
)
def test_a_bad_spec_is_named_with_its_file(change, named, tmp_path, capsys):
    spec = _command(["finetune", *ON_THE_ZOO, "--print-spec"], capsys)
    path = tmp_path / "spec.json"
    path.write_text(change(spec))
    assert main(["job", str(path)]) == 2
    err = capsys.readouterr().err
    assert named in err and str(path) in err


def test_a_spec_on_changed_checkpoints_is_refused(tmp_path, capsys):
    spec = _command(["taujp", *ON_THE_ZOO, "--print-spec"], capsys)
    spec["workspace"]["checkpoints_sha256"][0][1] = "0" * 64
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert main(["job", str(path)]) == 1
    assert "holds other checkpoints than the job was asked to run on" in capsys.readouterr().err


def test_every_form_is_a_job_kind_and_every_field_a_flag(capsys):
    for form in FORMS.values():
        assert form.kind in JOB_KINDS
        with pytest.raises(SystemExit):
            main([form.command, "--help"])
        shown = capsys.readouterr().out
        assert all(field.flag in shown for field in form.fields), form.command


def test_flags_reach_the_spec_as_the_page_s_widgets_would_put_them(capsys):
    spec = _command(["learn", *ON_THE_ZOO, "--no-dv-basi", "--start", "task_arithmetic", "--print-spec"], capsys)
    assert spec["args"]["config"] is None and spec["args"]["start"] == "task_arithmetic"
    assert spec["name"] == FORMS["learn"].title(
        {"start": "task_arithmetic", "dv_basi": False, "objective": "supervised"}
    )
    spec = _command(
        ["taujp", *ON_THE_ZOO, "--variant", "tau_jp", "--variant", "faces=standard", "--print-spec"], capsys
    )
    collection = load_collection(ZOO)
    assert spec["workspace"]["choice"] == [["digits", "tau_jp"]]
    assert spec["workspace"]["checkpoints_sha256"] == [
        ["digits", collection.finetuned_sha256("digits", "tau_jp")],
        ["faces", collection.finetuned_sha256("faces", "standard")],
    ]
