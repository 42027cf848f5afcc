"""Foreign checkpoint formats: each tiny file the tests write loads to the source model's exact tensors, or
is refused with a message naming the file and what is wrong."""

import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.errors import CheckpointError, SchemaError
from engine.eval.heads import build_head, load_head_file
from engine.io.checkpoints import load_checkpoint, open_checkpoint, save_checkpoint
from engine.io.formats.hf_export import export_hf_folder
from engine.io.formats.torch_zip import UnsafeCheckpointError
from engine.params import ParamSpec, flatten
from engine.pool.collection import load_collection, task_matrix
from engine.workspace import Workspace
from tests.builders import TINY_ARCH
from tests.foreign import (
    FORMATS,
    as_module,
    tiny_source,
    write_image_folders,
    write_open_clip_training_checkpoint,
    write_pool,
)

TASKS = {"colour": ("red", "green", "blue"), "shape": ("round", "square")}
QUICK_GELU_SAID = {"open_clip": False, "open_clip_pt": False, "task_vectors": True, "hf": True, "tangent": True}


@pytest.fixture(scope="module")
def source():
    return tiny_source(TINY_ARCH, TASKS, seed=7)


def _write(root: Path, fmt: str, source) -> Path:
    return write_pool(
        root,
        fmt,
        architecture=TINY_ARCH,
        pretrained=source["pretrained"],
        finetuned=source["finetuned"],
        heads=source["heads"],
    )


def _write_data(root: Path) -> None:
    write_image_folders(root, TASKS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_the_source_tensors(tmp_path, source, fmt):
    root = _write(tmp_path / fmt, fmt, source)
    with pytest.raises(SchemaError, match="has no dataset for task 'colour'.*Fix: put its images under"):
        load_collection(root)
    _write_data(root)
    collection = load_collection(root)
    assert set(collection.task_names) == set(TASKS)
    pretrained = collection.pretrained()
    assert pretrained.meta.architecture == TINY_ARCH and pretrained.meta.quick_gelu == QUICK_GELU_SAID[fmt]
    for task in TASKS:
        name = "linearized" if fmt == "tangent" else "standard"
        checkpoint = collection.finetuned(task, name)
        assert checkpoint.meta.variant == ("linearized" if fmt == "tangent" else "standard")
        visual = (
            checkpoint.state
            if checkpoint.meta.tower == "visual"
            else {k.removeprefix("visual."): v for k, v in checkpoint.state.items() if k.startswith("visual.")}
        )
        expected = dict(source["finetuned"][task])
        if fmt == "hf":
            expected["proj"] = source["visual"]["proj"]  # a CLIPVisionModel fine-tune borrows the pretrained proj
        assert set(visual) == set(expected)
        assert all(torch.equal(visual[k].float(), expected[k]) for k in expected), task


def test_the_task_matrix_is_the_same_in_every_format(tmp_path, source):
    spec = ParamSpec.from_state_dict(source["visual"])
    theta0 = flatten(source["visual"], spec)
    for fmt in FORMATS:
        reference = torch.stack([flatten(source["finetuned"][t], spec) - theta0 for t in TASKS])  # [K, P]
        if fmt == "hf":  # CLIPVisionModel fine-tunes have no projection: their proj task vector is 0
            reference[:, spec.slice_of("proj")] = 0
        root = _write(tmp_path / fmt, fmt, source)
        _write_data(root)
        collection = load_collection(root)
        variant = "linearized" if fmt == "tangent" else "standard"
        seen = []
        matrix = task_matrix(
            collection,
            tasks=tuple(TASKS),
            variant=variant,
            on_checkpoint=lambda done, total, task: seen.append((done, total, task)),
        )
        assert torch.equal(matrix.theta0, theta0) and torch.equal(matrix.T, reference), fmt
        assert seen == [(1, 2, "colour"), (2, 2, "shape")]


def test_pickled_image_encoder_reads_without_its_classes(tmp_path, source):
    """The loader never imports src.modeling (absent here) and never builds a real module."""
    _write(tmp_path, "task_vectors", source)
    checkpoint = open_checkpoint(tmp_path / "colour" / "finetuned.pt")
    assert checkpoint.meta.source.startswith("task_vectors") and checkpoint.meta.quick_gelu
    assert checkpoint.meta.tower == "visual"  # the text leftovers (no transformer) are not a text tower
    assert "src.modeling" not in __import__("sys").modules


def test_forbidden_globals_are_refused_and_never_run(tmp_path, source):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    torch.save({"visual.proj": source["visual"]["proj"], "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"evil\.pt: names the global '(posix|os)\.system'.*nothing was "
        r"executed",
    ):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()

    class Builtin:
        def __reduce__(self):
            return (eval, ("1",))

    torch.save({"w": Builtin()}, tmp_path / "eval.pt")
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        load_checkpoint(tmp_path / "eval.pt")


def test_legacy_and_damaged_torch_files(tmp_path, source):
    torch.save(source["visual"], tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"legacy\.pt: is not a torch zip checkpoint.*Fix: re-save it"):
        load_checkpoint(tmp_path / "legacy.pt")
    torch.save(source["visual"], tmp_path / "ok.pt")
    with (
        zipfile.ZipFile(tmp_path / "ok.pt") as src,
        zipfile.ZipFile(tmp_path / "squeezed.pt", "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(CheckpointError, match=r"squeezed\.pt: entry .* is compressed"):
        load_checkpoint(tmp_path / "squeezed.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) - 200])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        load_checkpoint(tmp_path / "cut.pt")


def test_hf_export_then_import_round_trips_exactly(tmp_path, source):
    for tower, state in (("clip", source["pretrained"]), ("visual", source["finetuned"]["colour"])):
        saved = save_checkpoint(
            tmp_path / f"{tower}.safetensors",
            state,
            architecture=TINY_ARCH,
            quick_gelu=True,
            tower=tower,
            variant="pretrained" if tower == "clip" else "standard",
        )
        folder = export_hf_folder(saved, tmp_path / f"hf-{tower}")
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == (["CLIPModel"] if tower == "clip" else ["CLIPVisionModelWithProjection"])
        keys = set(__import__("safetensors").safe_open(str(folder / "model.safetensors"), "pt").keys())
        assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in keys
        assert not any("in_proj" in k for k in keys)
        back = load_checkpoint(folder)
        assert back.meta.tower == tower and back.meta.quick_gelu and back.meta.architecture == TINY_ARCH
        assert set(back.state) == set(state) and all(torch.equal(back.state[k], v) for k, v in state.items())


def test_head_files_and_heads_from_a_saved_text_tower(tmp_path, source):
    _write(tmp_path / "tv", "task_vectors", source)
    assert torch.equal(load_head_file(tmp_path / "tv" / "head_colour.pt", num_classes=3), source["heads"]["colour"])
    save_file({"head": source["heads"]["shape"]}, str(tmp_path / "shape.safetensors"))
    assert torch.equal(load_head_file(tmp_path / "shape.safetensors", num_classes=2), source["heads"]["shape"])
    with pytest.raises(CheckpointError, match=r"shape\.safetensors: head has shape \(2, 16\), the task has 5"):
        load_head_file(tmp_path / "shape.safetensors", num_classes=5)
    # A zero-shot head built from the text tower of a saved (HF CLIPModel) pretrained file.
    _write(tmp_path / "hf", "hf", source)
    _write_data(tmp_path / "hf")
    collection = load_collection(tmp_path / "hf")
    pretrained = collection.pretrained()
    data = collection.task_data("colour")
    built = collection.head("colour", pretrained, data, cache_dir=tmp_path / "cache")
    in_memory = build_head(source["clip"], TINY_ARCH, data.class_names, data.templates)
    assert torch.allclose(built, in_memory, atol=1e-6)


def test_task_vectors_pool_without_heads_says_what_to_add(tmp_path, source):
    root = _write(tmp_path, "task_vectors", source)
    _write_data(root)
    (root / "head_shape.pt").unlink()
    collection = load_collection(root)
    with pytest.raises(CheckpointError, match=r"zeroshot\.pt: has no text tower to build the head of task 'shape'"):
        Workspace.from_collection(collection, cache_dir=tmp_path / "cache")


def test_linearized_around_another_model_is_refused(tmp_path, source):
    root = _write(tmp_path, "tangent", source)
    _write_data(root)
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
        task_matrix(load_collection(root), variant="linearized")


def test_unknown_architecture_and_bad_manifests(tmp_path, source):
    odd = dict(source["visual"], proj=torch.zeros(source["visual"]["proj"].shape[0], 7))
    save_file({k: v.contiguous() for k, v in odd.items()}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(CheckpointError, match=r"odd\.safetensors: matches no known architecture .*embedding 7"):
        open_checkpoint(tmp_path / "odd.safetensors")
    (tmp_path / "pool.yaml").write_text("pretrained: a.pt\ntasks:\n  x: {data: d}\n")
    with pytest.raises(SchemaError, match=r"pool\.yaml: invalid pool manifest: tasks\.x: .*checkpoint"):
        load_collection(tmp_path / "pool.yaml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SchemaError, match=r"empty: is not a pool"):
        load_collection(tmp_path / "empty")


def test_pool_manifest_in_yaml(tmp_path, source):
    root = _write(tmp_path, "task_vectors", source)
    _write_data(root)
    (root / "pool.yaml").write_text(
        "name: mine\narchitecture: mergelab-test-tiny\nquick_gelu: true\npretrained: zeroshot.pt\n"
        "data_root: data\ntasks:\n"
        "  colour: {checkpoint: colour/finetuned.pt, head: head_colour.pt, templates: ['a {} thing']}\n"
        "  shape: {checkpoints: {standard: shape/finetuned.pt}, head: head_shape.pt}\n"
    )
    collection = load_collection(root)
    assert collection.manifest.name == "mine" and collection.task_names == ("colour", "shape")
    assert collection.task_data("colour").templates == ("a {} thing",)
    ws = Workspace.from_collection(collection, cache_dir=tmp_path / "cache")
    result = ws.compare(tuple(TASKS), "task_arithmetic", {"lam": 0.5}, split="test")
    assert set(result.merged.accuracy) == set(TASKS) and 0 <= result.mean_merged <= 1


def test_modules_pickled_under_the_real_names_are_not_importable_here():
    """Guard for the test above: the stand-in module exists only while writing."""
    with as_module("src.modeling"):
        assert "src.modeling" in __import__("sys").modules
    assert "src.modeling" not in __import__("sys").modules


def test_native_collections_read_lazily_verify_their_hashes(tiny_collection_dir, tmp_path):
    """θ₀ comes from a full-CLIP pretrained (hash over both towers), T rows from image towers (hash checked
    while reading); a changed tensor is caught on either path."""
    import shutil

    from engine.io.checkpoints import sidecar_path

    collection = load_collection(tiny_collection_dir)
    reference = task_matrix(collection, pretrained=collection.pretrained())
    lazy = task_matrix(collection)
    assert torch.equal(lazy.theta0, reference.theta0) and torch.equal(lazy.T, reference.T)
    copy = shutil.copytree(tiny_collection_dir, tmp_path / "copy")
    for name in ("pretrained.safetensors", "finetuned/colour.standard.safetensors"):
        target = copy / name
        state = load_checkpoint(target).state
        save_file({k: (v + 1).contiguous() for k, v in state.items()}, str(target))
        assert sidecar_path(target).is_file()
        with pytest.raises(CheckpointError, match="do not match the sidecar's tensors_sha256"):
            task_matrix(load_collection(copy))
        shutil.copy(tiny_collection_dir / name, target)


def test_checked_files_are_not_hashed_again_until_they_change(tiny_collection_dir, tmp_path):
    import os
    import shutil
    import time

    root = shutil.copytree(tiny_collection_dir, tmp_path / "copy")
    settled = time.time() - 60
    for file in root.rglob("*"):
        os.utime(file, (settled, settled))
    copy = load_collection(root).with_verified(tmp_path / "v")
    assert copy.finetuned_lazy("colour").verify
    reference = task_matrix(copy)  # hash-checked while read, and remembered
    assert not copy.finetuned_lazy("colour").verify and not copy.pretrained_lazy().verify
    assert torch.equal(task_matrix(copy).T, reference.T)
    target = copy.root / "finetuned" / "colour.standard.safetensors"
    state = load_checkpoint(target).state
    save_file({k: (v + 1).contiguous() for k, v in state.items()}, str(target))  # changed: checked again
    assert copy.finetuned_lazy("colour").verify
    fresh = load_collection(shutil.copytree(tiny_collection_dir, tmp_path / "fresh")).with_verified(tmp_path / "v")
    os.utime(fresh.root / "finetuned" / "colour.standard.safetensors")  # just written: not trusted yet
    task_matrix(fresh)
    assert fresh.finetuned_lazy("colour").verify
    with pytest.raises(CheckpointError, match="do not match the sidecar's tensors_sha256"):
        task_matrix(copy)


def test_hf_folders_with_pytorch_model_bin(tmp_path, source):
    """The hub's openai/clip-vit-* base models ship pytorch_model.bin (a plain state dict), not safetensors."""
    root = _write(tmp_path, "hf", source)
    base = root / "pretrained"
    state = load_file(str(base / "model.safetensors"))
    torch.save(state, base / "pytorch_model.bin")
    (base / "model.safetensors").unlink()
    _write_data(root)
    collection = load_collection(root)
    pretrained = collection.pretrained()
    assert pretrained.meta.tower == "clip" and pretrained.meta.quick_gelu
    assert all(torch.equal(pretrained.state[k], v) for k, v in source["pretrained"].items())


def test_views_inside_their_storage_still_load(tmp_path):
    """The storage-bounds check refuses only views past their storage: slices and transposes of one
    storage, as torch.save writes them, read back exactly."""
    from engine.io.formats.torch_zip import read_torch_zip, state_tensors

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {"rows": base[1:3], "cols": base[:, 2:5], "t": base.T, "last": base[3, 5:]}
    torch.save(views, tmp_path / "views.pt")
    tensors = state_tensors(read_torch_zip(tmp_path / "views.pt"))
    assert all(torch.equal(tensors[k].read(), v) for k, v in views.items())


def test_hf_export_files_are_readable_by_others(tmp_path, source):
    saved = save_checkpoint(
        tmp_path / "m.safetensors", source["visual"], architecture=TINY_ARCH, task="colour", variant="standard"
    )
    folder = export_hf_folder(saved, tmp_path / "hf")
    assert all((folder / n).stat().st_mode & 0o777 == 0o644 for n in ("model.safetensors", "config.json"))


def test_an_open_clip_training_checkpoint_reads_its_state_dict(tmp_path, source):
    """open_clip's epoch_N.pt keeps the optimizer's moments (one exp_avg per weight) and the AMP scaler beside
    the DDP-wrapped state dict: the weights are read, the loop's state is not, with or without a sidecar."""
    path = write_open_clip_training_checkpoint(tmp_path / "epoch_3.pt", TINY_ARCH, source["pretrained"])
    read = load_checkpoint(path)
    assert read.meta.tower == "clip" and read.meta.architecture == TINY_ARCH
    assert set(read.state) == set(source["pretrained"])
    assert all(torch.equal(read.state[k], v) for k, v in source["pretrained"].items())
    save_checkpoint(
        tmp_path / "ref.safetensors", source["pretrained"], architecture=TINY_ARCH, tower="clip", variant="pretrained"
    )
    (tmp_path / "epoch_3.json").write_bytes((tmp_path / "ref.json").read_bytes())
    assert set(load_checkpoint(path).state) == set(source["pretrained"])  # the sidecar'd (native) reader too

    only_visual = {f"visual.{k}": v for k, v in source["finetuned"]["colour"].items()}
    root = tmp_path / "pool"
    (root / "finetuned").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source["pretrained"].items()}, str(root / "pretrained.safetensors"))
    full = {**source["pretrained"], **only_visual}
    write_open_clip_training_checkpoint(root / "finetuned" / "colour.pt", TINY_ARCH, full)
    write_image_folders(root, {"colour": TASKS["colour"]})
    tm = task_matrix(load_collection(root))
    expected = flatten(source["finetuned"]["colour"], tm.spec) - tm.theta0
    assert torch.equal(tm.T[0], expected)


def _with_shape(path: Path, key: str, shape: list[int]) -> None:
    """Rewrite a safetensors header so `key` declares `shape` (same element count, so the file stays consistent:
    what a damaged or hand-edited file looks like to every reader but a shape check)."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    header[key]["shape"] = shape
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + length :])


def test_text_tower_shapes_are_checked_against_the_architecture(tmp_path, source):
    """Heads are built from the pretrained text tower: a wrong or negative shape there is the file's error,
    naming the key and both shapes, not a RuntimeError from load_state_dict."""
    state = dict(source["pretrained"])
    vocab, width = state["token_embedding.weight"].shape
    state["token_embedding.weight"] = torch.zeros(vocab, width + 1)
    save_checkpoint(tmp_path / "wide.safetensors", state, architecture=TINY_ARCH, tower="clip", variant="pretrained")
    with pytest.raises(
        CheckpointError,
        match=rf"wide\.safetensors: text tower does not fit architecture {TINY_ARCH} \(wrong shape: "
        rf"token_embedding\.weight is \[{vocab}, {width + 1}\], expected \[{vocab}, {width}\]\)",
    ):
        load_checkpoint(tmp_path / "wide.safetensors")

    foreign = tmp_path / "negative.safetensors"
    save_file({k: v.contiguous() for k, v in source["pretrained"].items()}, str(foreign))
    rows, cols = source["pretrained"]["text_projection"].shape
    _with_shape(foreign, "text_projection", [-rows, -cols])
    with pytest.raises(CheckpointError, match=r"negative\.safetensors: .*text_projection"):
        open_checkpoint(foreign)

    missing = {k: v.contiguous() for k, v in source["pretrained"].items() if k != "ln_final.bias"}
    save_file(missing, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"text tower does not fit .*missing \['ln_final\.bias'\]"):
        open_checkpoint(tmp_path / "partial.safetensors")


def test_collections_and_pool_manifests_without_tasks_are_refused(tmp_path, source):
    """Evaluation concatenates the tasks' images: `tasks: {}` is the manifest's error, not torch.cat's."""
    save_file({k: v.contiguous() for k, v in source["pretrained"].items()}, str(tmp_path / "pretrained.safetensors"))
    (tmp_path / "collection.json").write_text(
        json.dumps({"schema_version": 1, "name": "none", "pretrained": "pretrained.safetensors", "tasks": {}})
    )
    with pytest.raises(SchemaError, match=r"collection\.json: invalid manifest: .*tasks.*names no task"):
        load_collection(tmp_path)
    (tmp_path / "pool.yaml").write_text("pretrained: pretrained.safetensors\ntasks: {}\n")
    with pytest.raises(SchemaError, match=r"pool\.yaml: invalid pool manifest: tasks: .*names no task"):
        load_collection(tmp_path / "pool.yaml")
