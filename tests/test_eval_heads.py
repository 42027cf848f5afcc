import pytest
import torch

from engine.errors import CheckpointError
from engine.eval.heads import build_head, cached_head, load_clip
from engine.io.checkpoints import load_checkpoint
from engine.pool.collection import load_collection


def test_head_rows_are_scaled_unit_vectors(tiny_collection_dir):
    pretrained = load_collection(tiny_collection_dir).pretrained()
    clip = load_clip(pretrained)
    head = build_head(clip, pretrained.meta.architecture, ["red", "green", "blue"], ["a {} photo", "{}"])
    assert head.shape == (3, 16)
    scale = clip.logit_scale.exp().clamp(max=100.0)
    torch.testing.assert_close(head.norm(dim=-1), scale.expand(3))


def test_heads_are_cached_by_checkpoint_hash(tiny_collection_dir, tmp_path):
    pretrained = load_collection(tiny_collection_dir).pretrained()
    first = cached_head(pretrained, ["a", "b"], ["{}"], cache_dir=tmp_path)
    files = list((tmp_path / "heads").glob("*.safetensors"))
    assert len(files) == 1
    again = cached_head(pretrained, ["a", "b"], ["{}"], cache_dir=tmp_path)
    assert torch.equal(first, again)
    cached_head(pretrained, ["a", "c"], ["{}"], cache_dir=tmp_path)
    assert len(list((tmp_path / "heads").glob("*.safetensors"))) == 2


def test_heads_need_a_text_tower(tiny_collection_dir, tmp_path):
    visual_only = load_checkpoint(tiny_collection_dir / "finetuned" / "colour.standard.safetensors")
    with pytest.raises(CheckpointError, match="holds only an image tower"):
        cached_head(visual_only, ["a", "b"], ["{}"], cache_dir=tmp_path)
