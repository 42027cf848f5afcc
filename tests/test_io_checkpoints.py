import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import CheckpointError, PathNotAllowedError, SchemaError
from engine.home import DataHome
from engine.io.checkpoints import load_checkpoint, read_sidecar, save_checkpoint, sidecar_path, tensors_sha256
from engine.models import create_visual
from tests.builders import TINY_ARCH


@pytest.fixture()
def visual_state():
    torch.manual_seed(3)
    return create_visual(TINY_ARCH).state_dict()


def _save(path: Path, state, **meta):
    return save_checkpoint(path, state, architecture=TINY_ARCH, task="colour", variant="standard", **meta)


def test_round_trip_keeps_tensors_and_metadata(tmp_path, visual_state):
    saved = _save(tmp_path / "a.safetensors", visual_state, class_names=("red", "blue"))
    loaded = load_checkpoint(tmp_path / "a.safetensors", architecture=TINY_ARCH)
    assert loaded.meta == saved.meta and loaded.meta.class_names == ("red", "blue")
    assert all(torch.equal(loaded.state[k], v) for k, v in visual_state.items())
    assert loaded.sha256 == tensors_sha256(visual_state)


def test_fp16_storage(tmp_path, visual_state):
    _save(tmp_path / "h.safetensors", visual_state, dtype=torch.float16)
    loaded = load_checkpoint(tmp_path / "h.safetensors")
    assert all(v.dtype == torch.float16 for v in loaded.state.values())


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_checkpoint_of_another_architecture(tmp_path, visual_state):
    _save(tmp_path / "a.safetensors", visual_state)
    with pytest.raises(CheckpointError, match="is a mergelab-test-tiny checkpoint, expected ViT-B-32"):
        load_checkpoint(tmp_path / "a.safetensors", architecture="ViT-B-32")
    # A sidecar that claims another architecture than the tensors have.
    side = sidecar_path(tmp_path / "a.safetensors")
    side.write_text(side.read_text().replace(TINY_ARCH, "ViT-B-32"))
    with pytest.raises(CheckpointError, match="does not fit architecture ViT-B-32.*wrong shape"):
        load_checkpoint(tmp_path / "a.safetensors")


def test_truncated_safetensors(tmp_path, visual_state):
    path = tmp_path / "t.safetensors"
    _save(path, visual_state)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"t\.safetensors: cannot be read, likely truncated.*Fix: copy"):
        load_checkpoint(path)


def test_nan_weights_are_refused_on_save_and_on_load(tmp_path, visual_state):
    bad = dict(visual_state, proj=torch.full_like(visual_state["proj"], float("nan")))
    with pytest.raises(CheckpointError, match="'proj' contains NaN"):
        _save(tmp_path / "n.safetensors", bad)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file
    good = _save(tmp_path / "n.safetensors", visual_state)
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "n.safetensors"))
    side = json.loads(sidecar_path(good.path).read_text())
    side["tensors_sha256"] = tensors_sha256(bad)
    sidecar_path(good.path).write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="n.safetensors: tensor 'proj' contains NaN"):
        load_checkpoint(good.path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("architecture"), "architecture: Field required"),
        (lambda d: d.update(schema_version=7), "schema_version"),
        (lambda d: d.update(variant="frozen"), "variant"),
        (lambda d: d.update(colour="red"), "colour: Extra inputs are not permitted"),
    ],
)
def test_sidecar_that_fails_its_schema(tmp_path, visual_state, edit, message):
    saved = _save(tmp_path / "s.safetensors", visual_state)
    side = json.loads(sidecar_path(saved.path).read_text())
    edit(side)
    sidecar_path(saved.path).write_text(json.dumps(side))
    with pytest.raises(SchemaError, match=rf"s\.json: .*{message}"):
        load_checkpoint(saved.path)


def test_missing_sidecar_and_changed_tensors(tmp_path, visual_state):
    saved = _save(tmp_path / "c.safetensors", visual_state)
    save_file({k: (v + 1).contiguous() for k, v in visual_state.items()}, str(saved.path))
    with pytest.raises(CheckpointError, match="do not match the sidecar's tensors_sha256"):
        load_checkpoint(saved.path)
    sidecar_path(saved.path).unlink()  # without its sidecar, the file is a foreign open_clip checkpoint
    foreign = load_checkpoint(saved.path)
    assert foreign.meta.architecture == TINY_ARCH and foreign.meta.source.startswith("open_clip")
    assert all(torch.equal(foreign.state[k], v + 1) for k, v in visual_state.items())
    with pytest.raises(SchemaError, match="c.json: missing JSON sidecar"):
        read_sidecar(saved.path)


def test_torch_files_load_with_weights_only(tmp_path, visual_state):
    saved = _save(tmp_path / "ref" / "w.safetensors", visual_state)
    pt = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in visual_state.items()}}, pt)
    shutil.copy(sidecar_path(saved.path), sidecar_path(pt))
    loaded = load_checkpoint(pt)
    assert all(torch.equal(loaded.state[k], v) for k, v in visual_state.items())


class Payload:
    """Unpickling this would construct an arbitrary object."""


def test_pickled_objects_are_refused(tmp_path, visual_state):
    saved = _save(tmp_path / "ref" / "p.safetensors", visual_state)
    pt = tmp_path / "p.pt"
    torch.save({"model": Payload(), **visual_state}, pt)
    shutil.copy(sidecar_path(saved.path), sidecar_path(pt))
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(pt)


def test_all_or_nothing_when_a_companion_cannot_be_written(tmp_path, visual_state):
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "x").write_text("keeps the folder non-empty")
    with pytest.raises(OSError):
        _save(tmp_path / "m.safetensors", visual_state, companions={tmp_path / "blocker": "{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_paths_outside_the_allowed_roots(tmp_path, data_home):
    home = DataHome.from_env().ensure()
    assert home.resolve_user_path("checkpoints/a.safetensors") == data_home / "checkpoints" / "a.safetensors"
    with pytest.raises(PathNotAllowedError, match="outside the allowed roots.*allowed_roots"):
        home.resolve_user_path("/etc/passwd")
    with pytest.raises(PathNotAllowedError):
        home.resolve_user_path("../../escape.safetensors")
    home.config_file.write_text(json.dumps({"allowed_roots": [str(tmp_path / "mine")]}))
    assert home.resolve_user_path(tmp_path / "mine" / "b.pt") == (tmp_path / "mine" / "b.pt").resolve()
    home.config_file.write_text("{not json")
    with pytest.raises(SchemaError, match="config.json"):
        home.resolve_user_path("/etc/passwd")


def test_written_files_are_readable_by_others(tmp_path, visual_state):
    """safetensors' save_file replaces its file with a 0600 one; the atomic writer sets 0644 before the move."""
    from engine.io.tensor_store import TensorStore

    saved = _save(tmp_path / "shared.safetensors", visual_state)
    stored = TensorStore(tmp_path / "store").put("key", {"x": torch.zeros(3)})
    for path in (saved.path, sidecar_path(saved.path), stored):
        assert path.stat().st_mode & 0o777 == 0o644, path
