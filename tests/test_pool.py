"""Pool conversion: a pool of foreign checkpoints written once as a native collection gives the same task
matrix and the same merge accuracies, loads weights-only (every file has a sidecar), and appears whole or
not at all; and the `pool show|convert|export-hf` commands end to end."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.cli import main
from engine.errors import CheckpointError, OutputExistsError
from engine.io.checkpoints import load_checkpoint, open_checkpoint
from engine.pool.collection import load_collection, task_matrix
from engine.pool.convert import convert_pool
from engine.runs.log import RunLog
from engine.workspace import Workspace
from tests.builders import TINY_ARCH
from tests.foreign import FORMATS, tiny_source, write_hf_vision, write_image_folders, write_pool

TASKS = {"colour": ("red", "green", "blue"), "shape": ("round", "square")}
NAME = {"tangent": "linearized"}  # the checkpoint name a discovered pool gives each format (else "standard")
FORMAT_READ = {
    "open_clip": "open_clip",
    "open_clip_pt": "torch",
    "task_vectors": "task_vectors",
    "hf": "hf_clip",
    "tangent": "tangent_linearized",
}


@pytest.fixture(scope="module")
def source():
    return tiny_source(TINY_ARCH, TASKS, seed=11)


def _pool(root: Path, fmt: str, source) -> Path:
    write_pool(
        root,
        fmt,
        architecture=TINY_ARCH,
        pretrained=source["pretrained"],
        finetuned=source["finetuned"],
        heads=source["heads"],
    )
    write_image_folders(root, TASKS)
    return root


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_converted_pool_has_the_same_task_matrix_and_loads_weights_only(tmp_path, source, fmt):
    original = load_collection(_pool(tmp_path / fmt, fmt, source))
    name = NAME.get(fmt, "standard")
    seen = []
    out = convert_pool(original, tmp_path / "native", on_checkpoint=lambda *a: seen.append(a))
    assert seen == [(1, 3, "pretrained"), (2, 3, f"colour/{name}"), (3, 3, f"shape/{name}")]
    converted = load_collection(out)
    assert converted.task_names == original.task_names and _leftovers(tmp_path, "native") == []
    modes = {f.relative_to(out).as_posix(): f.stat().st_mode & 0o777 for f in out.rglob("*") if f.is_file()}
    assert set(modes.values()) == {0o644}, modes  # heads too: a shared lab folder can read every file
    before, after = task_matrix(original, variant=name), task_matrix(converted, variant=name)
    assert torch.equal(before.theta0, after.theta0) and torch.equal(before.T, after.T)

    pretrained = converted.pretrained_lazy()
    assert pretrained.verify and pretrained.format == "mergelab"
    assert pretrained.meta.tower == original.pretrained_lazy().meta.tower  # both towers kept when present
    assert pretrained.meta.source == f"{original.pretrained_lazy().format}: {original.pretrained_lazy().path}"
    for task in TASKS:
        lazy = open_checkpoint(converted.path(converted.manifest.tasks[task].checkpoints[name]))
        meta = lazy.meta
        assert lazy.verify and meta.tower == "visual" and meta.task == task
        assert meta.variant == ("linearized" if fmt == "tangent" else "standard")
        assert meta.architecture == TINY_ARCH and meta.class_names == tuple(
            sorted(TASKS[task])
        )  # class folders, sorted
        assert meta.parent_sha256 == pretrained.meta.tensors_sha256
        assert meta.source == f"{FORMAT_READ[fmt]}: {original.finetuned_lazy(task, name).path}"
        assert all(t.dtype == torch.float32 for t in lazy.tensors.values())
        entry = converted.manifest.tasks[task]
        assert not Path(entry.data).is_absolute()  # both folders lie in tmp_path: a relative link
        assert converted.path(entry.data) == original.path(original.manifest.tasks[task].data)
        if fmt in ("task_vectors", "tangent"):
            head = load_file(str(converted.path(entry.head)))["head"]
            assert torch.equal(head, source["heads"][task])
        else:
            assert entry.head is None  # heads come from the pretrained text tower


@pytest.mark.parametrize("fmt", ["task_vectors", "tangent"])
def test_a_converted_pool_merges_to_the_same_accuracies(tmp_path, source, fmt):
    original = load_collection(_pool(tmp_path / fmt, fmt, source))
    converted = load_collection(convert_pool(original, tmp_path / "native"))
    name = NAME.get(fmt, "standard")
    results = []
    for collection in (original, converted):
        ws = Workspace.from_collection(collection, cache_dir=tmp_path / "cache", variant=name)
        assert ws.linearized == (fmt == "tangent")
        results.append(ws.compare(tuple(TASKS), "task_arithmetic", {"lam": 0.5}, split="test"))
    before, after = results
    assert after.merged.accuracy == before.merged.accuracy and after.merged.correct == before.merged.correct
    assert after.zero_shot == before.zero_shot and after.finetuned == before.finetuned


def test_converting_onto_an_existing_folder_is_refused(tmp_path, source):
    original = load_collection(_pool(tmp_path / "tv", "task_vectors", source))
    out = tmp_path / "native"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    listing = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputExistsError, match=r"native: already exists.*Fix: choose another output folder"):
        convert_pool(original, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_a_failure_midway_leaves_no_output_and_no_temporary_folder(tmp_path, source):
    root = _pool(tmp_path / "tv", "task_vectors", source)
    data = (root / "shape" / "finetuned.pt").read_bytes()
    (root / "shape" / "finetuned.pt").write_bytes(data[: len(data) - 300])  # after pretrained and colour
    seen = []
    with pytest.raises(CheckpointError, match=r"finetuned\.pt"):
        convert_pool(load_collection(root), tmp_path / "native", on_checkpoint=lambda *a: seen.append(a))
    assert seen[-1][2] == "colour/standard"  # it did fail midway
    assert not (tmp_path / "native").exists() and _leftovers(tmp_path, "native") == []


def test_a_tangent_checkpoint_linearized_around_another_model_is_refused(tmp_path, source):
    root = _pool(tmp_path / "tangent", "tangent", source)
    other = {k: v + 1 for k, v in source["pretrained"].items()}
    write_pool(
        tmp_path / "other",
        "task_vectors",
        architecture=TINY_ARCH,
        pretrained=other,
        finetuned=source["finetuned"],
        heads=source["heads"],
    )
    (root / "zeroshot.pt").write_bytes((tmp_path / "other" / "zeroshot.pt").read_bytes())
    with pytest.raises(CheckpointError, match="was linearized around another pretrained model"):
        convert_pool(load_collection(root), tmp_path / "native")
    assert not (tmp_path / "native").exists() and _leftovers(tmp_path, "native") == []


@pytest.fixture
def allow_tmp(tmp_path, data_home):
    """The CLI only reads and writes under allowed roots: list the test's folder."""
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tmp_path)]}))


def test_cli_pool_show_convert_and_export_hf(tmp_path, source, capsys, allow_tmp):
    root = _pool(tmp_path / "tangent", "tangent", source)
    assert main(["pool", "show", str(root)]) == 0
    table = capsys.readouterr().out
    assert "2 tasks, 2 fine-tuned checkpoints" in table
    assert any(
        line.split()[:2] == ["colour/linearized", "tangent_linearized"] and "linearized" in line.split()[2:]
        for line in table.splitlines()
    )
    assert any(
        line.split()[:6] == ["pretrained", "task_vectors", TINY_ARCH, "true", "visual", "pretrained"]
        for line in table.splitlines()
    )

    out = tmp_path / "native"
    assert main(["pool", "convert", str(root), str(out)]) == 0, capsys.readouterr().err
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["pool", "show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["checkpoints"]
    assert [(r["checkpoint"], r["format"], r["variant"]) for r in shown] == [
        ("pretrained", "mergelab", "pretrained"),
        ("colour/linearized", "mergelab", "linearized"),
        ("shape/linearized", "mergelab", "linearized"),
    ]
    assert shown[1]["file"] == "finetuned/colour.linearized.safetensors"
    assert main(["pool", "convert", str(root), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err

    assert main(["pool", "export-hf", str(out / "pretrained.safetensors"), str(tmp_path / "hf")]) == 0
    exported, converted = load_checkpoint(tmp_path / "hf"), load_checkpoint(out / "pretrained.safetensors")
    assert set(exported.state) == set(converted.state)
    assert all(torch.equal(exported.state[k], v) for k, v in converted.state.items())
    assert main(["pool", "export-hf", str(root / "colourVal" / "linear_finetuned.pt"), str(tmp_path / "hf2")]) == 0
    assert "not the linearized model" in capsys.readouterr().err
    back = load_checkpoint(tmp_path / "hf2")
    assert all(torch.equal(back.state[k], v) for k, v in source["finetuned"]["colour"].items())
    assert main(["pool", "export-hf", str(out / "pretrained.safetensors"), str(tmp_path / "hf")]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_cli_pool_paths_are_the_shell_users_own(tmp_path, source, capsys, monkeypatch):
    """From the shell nothing is confined to the dashboard's allowed roots (no allow_tmp here) and relative
    paths resolve against the current directory; an existing output is still refused, never overwritten."""
    _pool(tmp_path / "tv", "task_vectors", source)
    monkeypatch.chdir(tmp_path)
    assert main(["pool", "convert", "tv", "converted"]) == 0, capsys.readouterr().err
    assert (tmp_path / "converted" / "collection.json").is_file()
    assert main(["pool", "show", "converted"]) == 0
    assert str(tmp_path / "converted") in capsys.readouterr().out
    assert main(["pool", "convert", "tv", "converted"]) == 2
    assert "converted" in capsys.readouterr().err


@pytest.mark.parametrize("prefixed", [True, False], ids=["vision_model-keys", "unprefixed-keys"])
def test_cli_export_hf_of_a_vision_only_fine_tune(tmp_path, source, capsys, allow_tmp, prefixed):
    """A Hugging Face CLIPVisionModel fine-tune has no projection: on its own it is refused with what is missing
    and why it matters; export-hf writes what it holds (a CLIPVisionModel folder) and says so. With the
    projection (CLIPVisionModelWithProjection) the export holds it too. Both round-trip exactly."""
    tower = source["finetuned"]["colour"]
    bare = write_hf_vision(tmp_path / "bare", tower, TINY_ARCH, projection=False, prefixed=prefixed)
    with pytest.raises(CheckpointError, match=r"bare: has no image projection .*visual_projection\.weight.*heads"):
        load_checkpoint(bare)
    assert main(["pool", "export-hf", str(bare), str(tmp_path / "bare-out")]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert "has no image projection" in captured.err and "without projection" in captured.out
    config = json.loads((tmp_path / "bare-out" / "config.json").read_text())
    assert config["architectures"] == ["CLIPVisionModel"] and "projection_dim" not in config
    written = load_file(str(tmp_path / "bare-out" / "model.safetensors"))
    assert "visual_projection.weight" not in written and "vision_model.post_layernorm.weight" in written
    back = load_checkpoint(tmp_path / "bare-out", projection_optional=True)
    assert set(back.state) == set(tower) - {"proj"}
    assert all(torch.equal(back.state[k], tower[k]) for k in back.state)

    full = write_hf_vision(tmp_path / "full", tower, TINY_ARCH, projection=True, prefixed=prefixed)
    assert main(["pool", "export-hf", str(full), str(tmp_path / "full-out")]) == 0, capsys.readouterr().err
    assert "no image projection" not in capsys.readouterr().err
    config = json.loads((tmp_path / "full-out" / "config.json").read_text())
    assert config["architectures"] == ["CLIPVisionModelWithProjection"]
    back = load_checkpoint(tmp_path / "full-out")
    assert set(back.state) == set(tower) and all(torch.equal(back.state[k], v) for k, v in tower.items())


def _pool_with_unreadable_entries(folder: Path, source) -> Path:
    """A task-vectors pool of colour and shape whose shape, EuroSAT, DTD and SVHN folders cannot be read (a
    renamed checkpoint, sharded weights, an empty file, a config without weights), beside a notes folder."""
    root = _pool(folder, "task_vectors", source)
    (root / "shape" / "finetuned.pt").rename(root / "shape" / "checkpoint_10.pt")
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("not a task")
    (root / "EuroSAT").mkdir()
    (root / "EuroSAT" / "config.json").write_text("{}")
    (root / "EuroSAT" / "model.safetensors.index.json").write_text("{}")
    (root / "DTD").mkdir()
    (root / "DTD" / "finetuned.pt").write_bytes(b"")
    (root / "SVHN").mkdir()
    (root / "SVHN" / "config.json").write_text("{}")
    return root


def test_a_discovered_pool_refuses_the_entries_it_cannot_read_unless_told(
    tmp_path, source, capsys, allow_tmp, data_home
):
    """A task folder without a readable fine-tune used to vanish from the pool, and from every merge of "the
    pool", without a word. Opened for a user, the pool is now refused, naming each entry and why; with
    `--skip-unreadable` the command goes on without them, each listed as a warning, in the printed JSON and in
    the run log; a recipe naming a left-out task says why it is missing; `pool show` lists them."""
    root = _pool_with_unreadable_entries(tmp_path / "tv", source)
    collection = load_collection(root)  # the library lists what it left out; open_for_user decides
    assert collection.task_names == ("colour",)
    reasons = {s.entry: s.reason for s in collection.skipped}
    assert set(reasons) == {"shape/", "EuroSAT/", "DTD/finetuned.pt", "SVHN/"}
    assert {s.task for s in collection.skipped} == {"shape", "EuroSAT", "DTD", "SVHN"}
    assert "checkpoint_10.pt but none of finetuned.pt" in reasons["shape/"]
    assert "sharded weights (model.safetensors.index.json)" in reasons["EuroSAT/"]
    assert "empty file" in reasons["DTD/finetuned.pt"]
    assert "config.json but none of model.safetensors" in reasons["SVHN/"]
    assert all("(skipped). Fix: " in str(s) for s in collection.skipped)

    for command in (["merge", "--out", "m"], ["eval", "--tasks", "colour"]):
        assert main([*command, "--collection", str(root)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {root}: tasks DTD, EuroSAT, SVHN, shape would be left out: "), err
        assert "DTD/finetuned.pt is an empty file" in err and "--skip-unreadable" in err

    assert main(["merge", "--collection", str(root), "--out", "m", "--eval", "test", "--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    assert sum(line.startswith("warning: ") for line in captured.err.splitlines()) == 4
    printed = json.loads(captured.out[captured.out.index("{") :])
    assert list(printed["tasks"]) == ["colour"] and printed["skipped"] == [str(s) for s in collection.skipped]
    (run,) = RunLog(data_home / "runs" / "runs.sqlite3").runs()
    assert run.inputs["skipped"] == printed["skipped"]

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"collection: {root}\n")
    assert main(["sweep", str(recipe), "--grid", "lam=0.5,1", "--skip-unreadable"]) == 0
    swept = json.loads(capsys.readouterr().out)
    assert swept["skipped"] == printed["skipped"]  # as the sweep's run-log row has them

    recipe.write_text(f"collection: {root}\ntasks: [colour, shape]\n")
    assert main(["run", str(recipe), "--skip-unreadable"]) == 2
    assert "'shape': is not a task of" in (err := capsys.readouterr().err) and "left out: shape/ holds" in err

    assert main(["pool", "show", str(root)]) == 0
    captured = capsys.readouterr()
    assert "1 tasks" in captured.out
    assert sum(line.startswith("warning: ") for line in captured.err.splitlines()) == 4
    assert "warning: shape/: holds checkpoint_10.pt" in captured.err
    assert main(["pool", "show", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == [str(s) for s in collection.skipped]


def test_the_pool_page_refuses_the_skipped_folders_until_confirmed(tmp_path, source, data_home):
    """The dashboard opens the pool only after its user confirms going on without the entries it names."""
    from streamlit.testing.v1 import AppTest

    from tests.test_views import APP, _open

    root = _pool(data_home / "pools" / "tv", "task_vectors", source)
    (root / "shape" / "finetuned.pt").rename(root / "shape" / "checkpoint_10.pt")
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["collection"] = str(root)
    _open(at, "views/zoo.py")
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"{root}: tasks shape would be left out: shape/ holds checkpoint_10.pt"
        " but none of finetuned.pt, nonlinear_finetuned.pt, linear_finetuned.pt, model.pt (the name says which file"
        " is the fine-tune). Fix: put the fine-tune there as finetuned.pt (or a Hugging Face folder with its"
        " weights), or name it in pool.yaml; or go on without them, explicitly: --skip-unreadable on the command"
        " line, 'Open without them' on the dashboard"
    ]
    next(b for b in at.button if b.label == "Open without them").click().run()  # the explicit confirmation
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(w.value.startswith("shape/: holds checkpoint_10.pt") for w in at.warning)


def test_an_empty_finetunes_folder_adds_nothing_and_leaves_the_pretrained_unopened(
    tiny_collection_dir, tmp_path, monkeypatch
):
    """A new data home holds no fine-tunes: the sidebar's checkpoint list must not build the pretrained
    model's architecture (the first open_clip import) just to find none."""
    from engine.pool.collection import Collection

    collection = load_collection(tiny_collection_dir)

    def opened(self):
        raise AssertionError("the pretrained model was opened")

    monkeypatch.setattr(Collection, "pretrained_lazy", opened)
    (tmp_path / "finetunes" / "0123456789abcdef" / "colour").mkdir(parents=True)  # folders, no checkpoint
    assert collection.with_finetunes(tmp_path / "finetunes") is collection
    assert collection.with_finetunes(tmp_path / "missing") is collection
