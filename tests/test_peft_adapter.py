"""LoRA adapters in PEFT's format: written by the real `peft` on a `transformers` CLIP vision model exported from a
tiny tower, read by mergelab as θ₀ + s·B·A, and checked against PEFT's own `merge_and_unload()` (float32)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.errors import CheckpointError
from engine.io.checkpoints import open_checkpoint, save_checkpoint
from engine.io.formats.hf_clip import hf_to_open_clip
from engine.io.formats.hf_export import export_hf_folder
from engine.io.formats.lazy import materialize
from engine.io.formats.peft_adapter import read_adapter
from tests.builders import TINY_ARCH
from tests.foreign import tiny_source

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
GATE = "base_model.model.encoder.layers.0.mlp.gate"  # a module CLIP has not


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny tower as a mergelab checkpoint and as a Hugging Face folder (`pool export-hf`'s code path)."""
    root = tmp_path_factory.mktemp("base")
    source = tiny_source(TINY_ARCH, {"colour": ("red", "green")}, seed=3)
    saved = save_checkpoint(
        root / "tower.safetensors", source["visual"], architecture=TINY_ARCH, quick_gelu=True, variant="pretrained"
    )
    return saved, export_hf_folder(saved, root / "hf")


def _peft_adapter(hf_folder, out, *, model_class="CLIPVisionModel", seed=0, **config):
    """Save a LoRA adapter made by PEFT itself with random non-zero B; returns PEFT's merged weights (HF names)."""
    torch.manual_seed(seed)
    model = getattr(transformers, model_class).from_pretrained(hf_folder)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(init_lora_weights=False, **config))
    wrapped.save_pretrained(out)
    return {k: v.detach().clone() for k, v in wrapped.merge_and_unload().state_dict().items()}


def _read(adapter, saved):
    lender = open_checkpoint(saved.path)
    return materialize(open_checkpoint(adapter, task="colour", fill_from=lambda: lender).tensors)


class _Eager:
    """A tensor in memory behind the lazy interface hf_to_open_clip takes (fused with torch.cat below)."""

    def __init__(self, tensor):
        self.tensor, self.shape, self.dtype = tensor, tuple(tensor.shape), tensor.dtype


def _fused(parts):
    return torch.cat([p.tensor for p in parts])


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_merge_and_unload_equals_theta0_plus_delta(tmp_path, base, rslora):
    saved, hf = base
    merged = _peft_adapter(
        hf, tmp_path / "ad", r=4, lora_alpha=8, use_rslora=rslora, target_modules=TARGETS,
        rank_pattern={"layers.0.self_attn.k_proj": 2}, alpha_pattern={"out_proj": 3},
    )  # fmt: skip
    expected = {k: v.tensor if isinstance(v, _Eager) else _fused(v.parts) for k, v in _hf_tower(merged).items()}
    got = _read(tmp_path / "ad", saved)
    assert set(got) == set(saved.state)
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-6, rtol=1e-5), name
    changed = {k for k in got if not torch.equal(got[k], saved.state[k])}
    assert changed == {"transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.out_proj.weight"}
    adapter = read_adapter(tmp_path / "ad")
    k_part = next(p for p in adapter.parts["transformer.resblocks.0.attn.in_proj_weight"] if p.rank == 2)
    assert k_part.row == 16 and math.isclose(k_part.scale, 8 / (math.sqrt(2) if rslora else 2))
    out = adapter.parts["transformer.resblocks.0.attn.out_proj.weight"][0]
    assert math.isclose(out.scale, 3 / (2 if rslora else 4))


def _hf_tower(hf_state):
    tower = hf_to_open_clip({k: _Eager(v) for k, v in hf_state.items()})
    return {k.removeprefix("visual."): v for k, v in tower.items() if k.startswith("visual.")}


def test_qkv_land_in_their_slices_of_the_fused_in_proj(tmp_path, base):
    saved, hf = base
    for i, target in enumerate(("q_proj", "k_proj", "v_proj")):
        _peft_adapter(hf, tmp_path / target, r=2, lora_alpha=2, target_modules=[target], seed=i)
        got = _read(tmp_path / target, saved)["transformer.resblocks.0.attn.in_proj_weight"]
        delta = (got - saved.state["transformer.resblocks.0.attn.in_proj_weight"]).abs().sum(dim=1)  # [3W]
        assert (delta.view(3, 16).sum(dim=1) > 0).tolist() == [j == i for j in range(3)]


def test_both_hf_namings_and_prefix_free_vision_transformers(tmp_path, base):
    """transformers 5 saves CLIPVisionModel without `vision_model.`; CLIPVisionModelWithProjection and older saves
    keep it; FusionBench's adapters on the bare CLIPVisionTransformer have none. All read the same."""
    saved, hf = base
    flat = _peft_adapter(hf, tmp_path / "flat", r=2, lora_alpha=4, target_modules=TARGETS)
    keys = load_file(tmp_path / "flat" / "adapter_model.safetensors")
    prefixed = {k.replace("base_model.model.", "base_model.model.vision_model."): v for k, v in keys.items()}
    (tmp_path / "old").mkdir()
    save_file(prefixed, str(tmp_path / "old" / "adapter_model.safetensors"))
    (tmp_path / "old" / "adapter_config.json").write_text((tmp_path / "flat" / "adapter_config.json").read_text())
    a, b = _read(tmp_path / "flat", saved), _read(tmp_path / "old", saved)
    assert all(torch.equal(a[k], b[k]) for k in a)
    out_proj = "transformer.resblocks.0.attn.out_proj.weight"
    assert torch.allclose(a[out_proj], _hf_tower(flat)[out_proj].tensor, atol=1e-6)


def test_open_clip_attention_adapters_read_as_s_b_a_and_warn(tmp_path, base):
    """PEFT wraps open_clip's nn.MultiheadAttention: one pair over the fused in_proj, one on out_proj."""
    saved, _ = base
    from engine.models import create_visual

    torch.manual_seed(5)
    tower = create_visual(TINY_ARCH, quick_gelu=True)
    tower.load_state_dict(saved.state)
    wrapped = peft.get_peft_model(
        tower, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["attn"], init_lora_weights=False)
    )
    wrapped.save_pretrained(tmp_path / "oc")
    factors = {
        k.removeprefix("base_model.model."): v
        for k, v in load_file(tmp_path / "oc" / "adapter_model.safetensors").items()
    }
    with pytest.warns(UserWarning, match="applies its out_proj update twice"):
        got = _read(tmp_path / "oc", saved)
    for name, module in (("attn.in_proj_weight", "attn"), ("attn.out_proj.weight", "attn.base_layer.out_proj")):
        block = "transformer.resblocks.0."
        delta = 2.0 * factors[f"{block}{module}.lora_B.weight"] @ factors[f"{block}{module}.lora_A.weight"]
        assert torch.allclose(got[block + name], saved.state[block + name] + delta, atol=1e-6)


def _edited(tmp_path, hf, name, *, config=None, tensors=None):
    """A PEFT adapter saved by PEFT, then its config or tensors edited as a damaged or foreign one would be."""
    folder = tmp_path / name
    _peft_adapter(hf, folder, r=2, lora_alpha=4, target_modules=TARGETS)
    if config is not None:
        document = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**document, **config}))
    if tensors is not None:
        save_file(tensors(load_file(folder / "adapter_model.safetensors")), str(folder / "adapter_model.safetensors"))
    return folder


def test_bad_adapters_are_refused_naming_the_file_and_the_fix(tmp_path, base):
    saved, hf = base
    cases = {
        "unknown type": ({"peft_type": "IA3"}, None, r"adapter_config.json: is a PEFT IA3 adapter"),
        "dora": ({"use_dora": True}, None, r"is a DoRA adapter"),
        "rank pattern": ({"rank_pattern": {"layers.7.mlp.fc1": 8}}, None, r"rank_pattern names no module"),
        "missing target": ({"target_modules": [*TARGETS, "fc1"]}, None, r"target module 'fc1' has no lora_A"),
        "rank": ({"r": 3}, None, r"the config says rank 3"),
        "unplaced": (None, lambda t: {**t, f"{GATE}.lora_A.weight": torch.ones(2, 16),
                                      f"{GATE}.lora_B.weight": torch.ones(16, 2)},
                     r"keys mergelab cannot place on a CLIP image tower: \['encoder.layers.0.mlp.gate'\]"),
        "text tower": (None, lambda t: {k.replace(".model.", ".model.text_model."): v for k, v in t.items()},
                       r"adapts the text tower or a projection"),
        "other base": (None, lambda t: {k: torch.ones(v.shape[0], 24) if "lora_A" in k else v for k, v in t.items()},
                       r"is an adapter for another base model than tower.safetensors"),
    }  # fmt: skip
    for name, (config, tensors, message) in cases.items():
        folder = _edited(tmp_path, hf, name.replace(" ", "_"), config=config, tensors=tensors)
        with pytest.raises(CheckpointError, match=message) as error:
            _read(folder, saved)
        assert error.value.fix and str(folder) in str(error.value), name


def test_modules_to_save_replace_tower_weights_and_carry_a_head(tmp_path, base):
    saved, hf = base
    folder = _edited(
        tmp_path,
        hf,
        "saved",
        config={"modules_to_save": ["post_layernorm", "classifier"]},
        tensors=lambda t: {
            **t,
            "base_model.model.post_layernorm.weight": torch.full((16,), 2.0),
            "base_model.model.post_layernorm.bias": torch.zeros(16),
            "base_model.model.classifier.weight": torch.eye(2, 16),
        },
    )
    got = _read(folder, saved)
    assert torch.equal(got["ln_post.weight"], torch.full((16,), 2.0))
    adapter = read_adapter(folder)
    assert torch.equal(adapter.head["weight"].read(), torch.eye(2, 16)) and adapter.rank == 2
    assert open_checkpoint(folder, fill_from=lambda: open_checkpoint(saved.path)).meta.training["lora"]["rank"] == 2
    with pytest.raises(CheckpointError, match="needs the base model it adapts"):
        open_checkpoint(folder)
    whole_q = _edited(
        tmp_path,
        hf,
        "whole_q",
        config={"modules_to_save": ["q_proj"]},
        tensors=lambda t: {**t, "base_model.model.encoder.layers.0.self_attn.q_proj.weight": torch.eye(16)},
    )
    with pytest.raises(CheckpointError, match=r"cannot place .*self_attn.q_proj.weight"):
        _read(whole_q, saved)  # a whole q_proj copy has no open_clip tensor of its own: refused, never a head


def test_bin_adapters_read_through_the_restricted_unpickler(tmp_path, base):
    saved, hf = base
    folder = _edited(tmp_path, hf, "bin")
    expected = _read(folder, saved)
    torch.save(load_file(folder / "adapter_model.safetensors"), folder / "adapter_model.bin")
    (folder / "adapter_model.safetensors").unlink()
    got = _read(folder, saved)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_pool_mixes_full_and_lora_fine_tunes(tmp_path, data_home, capsys):
    """A discovered pool: a full fine-tune and a PEFT adapter folder with a head. The LoRA task's task vector is its
    densified ΔW (zero outside the adapted weights); `pool show` names it with its rank."""
    from engine.cli import main
    from engine.pool.collection import load_collection, task_matrix
    from tests.foreign import write_image_folders, write_pool

    tasks = {"colour": ("red", "green", "blue"), "shape": ("round", "square")}
    source = tiny_source(TINY_ARCH, tasks, seed=11)
    root = write_pool(
        tmp_path / "pool", "open_clip", architecture=TINY_ARCH, pretrained=source["pretrained"],
        finetuned={"shape": source["finetuned"]["shape"]}, heads=source["heads"],
    )  # fmt: skip
    write_image_folders(root, tasks)
    tower = save_checkpoint(tmp_path / "t.safetensors", source["visual"], architecture=TINY_ARCH, variant="pretrained")
    hf = export_hf_folder(tower, tmp_path / "hf")
    adapter = _edited(
        tmp_path / "made",
        hf,
        "colour",
        config={"modules_to_save": ["classifier"]},
        tensors=lambda t: {**t, "base_model.model.classifier.weight": source["heads"]["colour"]},
    )
    adapter.rename(root / "finetuned" / "colour")
    collection = load_collection(root)
    matrix = task_matrix(collection)
    lora_row = matrix.T[matrix.task_names.index("colour")]
    delta = {k: v - source["visual"][k] for k, v in _read(root / "finetuned" / "colour", tower).items()}
    assert torch.allclose(lora_row, torch.cat([delta[n].reshape(-1) for n in matrix.spec.names]), atol=1e-6)
    adapted = ("transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.out_proj.weight")
    assert all(delta[n].abs().max() == 0 for n in delta if n not in adapted)
    pretrained = collection.pretrained()
    head = collection.head("colour", pretrained, collection.task_data("colour"), cache_dir=tmp_path / "cache")
    assert torch.equal(head, source["heads"]["colour"])
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tmp_path)]}))
    assert main(["pool", "show", str(root)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["colour/standard"].split()[1] == "peft_lora" and rows["colour/standard"].endswith("rank 2")
    assert "rank" not in rows["shape/standard"]


def test_task_arithmetic_of_adapters_exports_an_adapter_peft_loads(tmp_path, base):
    """TA of two adapters (rank 2 and 3, one with rsLoRA) kept factored, written with rank_pattern, loaded by PEFT
    on a transformers CLIPVisionModel: merge_and_unload() equals θ₀ + Σ λₜ ΔWₜ as mergelab reads the adapters."""
    from engine.io.formats.peft_export import export_lora_adapter
    from engine.merge.lora import task_arithmetic_factors

    saved, hf = base
    _peft_adapter(hf, tmp_path / "a", r=2, lora_alpha=4, target_modules=TARGETS, seed=1)
    _peft_adapter(hf, tmp_path / "b", r=3, lora_alpha=3, use_rslora=True, target_modules=["q_proj", "v_proj"], seed=2)
    lams = (0.5, 0.7)
    factors = task_arithmetic_factors([read_adapter(tmp_path / n) for n in "ab"], lams)
    exported = export_lora_adapter(factors, tmp_path / "ta")
    config = json.loads((tmp_path / "ta" / "adapter_config.json").read_text())
    assert exported.rank == 5 and config["rank_pattern"] == {
        f"encoder.layers.0.self_attn.{m}": 2 for m in ("k_proj", "out_proj")
    }
    assert exported.bytes == (tmp_path / "ta" / "adapter_model.safetensors").stat().st_size
    deltas = [{k: v - saved.state[k] for k, v in _read(tmp_path / n, saved).items()} for n in "ab"]
    expected = {k: v + lams[0] * deltas[0][k] + lams[1] * deltas[1][k] for k, v in saved.state.items()}
    model = transformers.CLIPVisionModel.from_pretrained(hf)
    merged = peft.PeftModel.from_pretrained(model, tmp_path / "ta").merge_and_unload().state_dict()
    got = {k: v.tensor if isinstance(v, _Eager) else _fused(v.parts) for k, v in _hf_tower(merged).items()}
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in got)
    assert not torch.equal(
        got["transformer.resblocks.0.attn.in_proj_weight"], saved.state["transformer.resblocks.0.attn.in_proj_weight"]
    )
    back = _read(tmp_path / "ta", saved)
    assert all(torch.allclose(back[k], expected[k], atol=1e-6) for k in expected)


def test_a_knots_merge_exports_an_adapter_peft_loads(tmp_path, base):
    """KnOTS-TIES of two adapters kept factored (λU, merged S V per layer) and written as a PEFT adapter: PEFT's
    merge_and_unload on the transformers model equals mergelab's dense KnOTS-TIES merge."""
    from engine.io.formats.peft_export import export_lora_adapter
    from engine.merge import get_method
    from engine.merge.knots import knots_factors
    from engine.merge.registry import apply
    from engine.params import ParamSpec, flatten

    saved, hf = base
    spec = ParamSpec.from_state_dict(saved.state)
    theta0 = flatten(saved.state, spec)
    for i, name in enumerate("ab"):
        _peft_adapter(hf, tmp_path / name, r=2, lora_alpha=2, target_modules=TARGETS, seed=10 + i)
    T = torch.stack([flatten(_read(tmp_path / n, saved), spec) - theta0 for n in "ab"])  # [2, P]
    merged = apply(get_method("knots_ties"), theta0, T, {}, spec=spec)
    exported = export_lora_adapter(knots_factors(T, spec, lam=0.6, density=0.2, inner="ties"), tmp_path / "knots")
    assert exported.rank == 4  # two rank-2 adapters: the shared basis has rank 4 per layer
    model = transformers.CLIPVisionModel.from_pretrained(hf)
    loaded = peft.PeftModel.from_pretrained(model, tmp_path / "knots").merge_and_unload().state_dict()
    got = {k: v.tensor if isinstance(v, _Eager) else _fused(v.parts) for k, v in _hf_tower(loaded).items()}
    assert torch.allclose(flatten({**saved.state, **got}, spec), merged, atol=1e-5)


def test_lora_training_factors_are_saved_as_an_adapter_peft_loads(tmp_path, base):
    """The LoRA trainer's factors (engine/train/lora.py: q, k, v as row blocks of the fused in_proj, out_proj and
    both MLP Linears, B non-zero as after training) saved in PEFT's format: PEFT's merge_and_unload on the
    transformers model built by `pool export-hf` of the same tower equals θ₀ + s·B·A as the trainer placed it, and so
    does mergelab's own reading of the folder."""
    from engine.io.formats.peft_export import export_lora_adapter
    from engine.params import ParamSpec, flatten, unflatten
    from engine.train.lora import LORA_TARGETS, LoraUpdate

    saved, hf = base
    spec = ParamSpec.from_state_dict(saved.state)
    theta0 = flatten(saved.state, spec, source="tower")  # [P]
    update = LoraUpdate(spec, rank=3, alpha=6.0, targets=tuple(LORA_TARGETS), seed=0)
    with torch.no_grad():
        for up in update.up:
            up.normal_(std=0.1)  # training moves B off zero
        expected = unflatten(update.theta(theta0), spec)
    exported = export_lora_adapter(update.factors(), tmp_path / "trained", notes={"source": "mergelab fine-tune"})
    config = json.loads((tmp_path / "trained" / "adapter_config.json").read_text())
    layers = {n.split(".")[2] for n in spec.names if n.startswith("transformer.resblocks.")}
    assert exported.rank == 3 and config["lora_alpha"] == 3 and len(config["target_modules"]) == 6 * len(layers)
    model = transformers.CLIPVisionModel.from_pretrained(hf)
    merged = peft.PeftModel.from_pretrained(model, tmp_path / "trained").merge_and_unload().state_dict()
    got = {k: v.tensor if isinstance(v, _Eager) else _fused(v.parts) for k, v in _hf_tower(merged).items()}
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in got), "PEFT's merge differs from the trainer's θ"
    read = _read(tmp_path / "trained", saved)
    assert all(torch.allclose(read[k], expected[k], atol=1e-6) for k in expected)
    changed = {k for k in expected if not torch.equal(expected[k], saved.state[k])}
    assert changed == {f"transformer.resblocks.{i}.{w}" for i in layers for w, _ in LORA_TARGETS.values()}


def _knots_pt(hf_folder, path, *, seed=0, older=False, **config):
    """A `.pt` as KnOTS' code saves its adapters: torch.save of HFLoRACLIPVisionModel's state dict, a module holding
    `vision_model` (PEFT's get_peft_model over the CLIP vision transformer) and `vision_head` (the projection);
    `older`: the key names of KnOTS' older saves (`lora_model.`, `linear_layer.`). Returns PEFT's merged weights."""
    torch.manual_seed(seed)
    module = torch.nn.Module()
    tower = transformers.CLIPVisionModel.from_pretrained(hf_folder)
    tower = getattr(tower, "vision_model", tower)  # the vision transformer (transformers 5's CLIPVisionModel is it)
    module.vision_model = peft.get_peft_model(tower, peft.LoraConfig(init_lora_weights=False, **config))
    module.vision_head = torch.nn.Linear(16, 8, bias=False)
    state = module.state_dict()
    if older:
        state = {k.replace("vision_model.", "lora_model.", 1).replace("vision_head.", "linear_layer."): v
                 for k, v in state.items()}  # fmt: skip
    torch.save(state, path)
    return {k: v.detach().clone() for k, v in module.vision_model.merge_and_unload().state_dict().items()}


@pytest.mark.parametrize("older", [False, True])
def test_knots_released_pt_adapters_read_as_peft_merges_them(tmp_path, base, older):
    """KnOTS' `<task>_lora-r<r>-alpha<α>-dropout0.1.pt`: the scale α/r from its name (here 2), q/k/v in the fused
    in_proj; every weight equals PEFT's merge_and_unload of the same adapter."""
    saved, hf = base
    path = tmp_path / "eurosat_lora-r2-alpha4-dropout0.1.pt"
    merged = _knots_pt(hf, path, older=older, r=2, lora_alpha=4, target_modules=TARGETS)
    adapter = read_adapter(path)
    assert adapter.rank == 2 and {p.scale for ps in adapter.parts.values() for p in ps} == {2.0}
    got = _read(path, saved)
    want = {k: v.tensor if isinstance(v, _Eager) else _fused(v.parts)
            for k, v in _hf_tower({f"vision_model.{k}": v for k, v in merged.items()}).items()}  # fmt: skip
    assert set(got) - set(want) == {"proj"}  # the vision transformer has no projection: the pool's base gives it
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)


def test_a_knots_pt_named_otherwise_is_read_at_scale_one(tmp_path, base):
    """Without `lora-r<r>-alpha<α>` in its name the file says no α: the bare B·A, as KnOTS' merging code takes it."""
    saved, hf = base
    path = tmp_path / "cars.pt"
    _knots_pt(hf, path, r=2, lora_alpha=2, target_modules=["out_proj"])
    adapter = read_adapter(path)
    assert {p.scale for ps in adapter.parts.values() for p in ps} == {1.0}
    state = torch.load(path)
    key = "vision_model.base_model.model.encoder.layers.0.self_attn.out_proj.lora_{}.default.weight"
    out = "transformer.resblocks.0.attn.out_proj.weight"
    delta = _read(path, saved)[out] - saved.state[out]
    assert torch.allclose(delta, state[key.format("B")] @ state[key.format("A")], atol=1e-6)
