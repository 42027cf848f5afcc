import pytest
import torch

from engine.forgetting import ForgettingCurve, negate, negation_curve
from engine.workspace import Workspace


def test_chosen_alpha_follows_the_protocol():
    curve = ForgettingCurve("t", ("a", "b"), "val", (0.0, 0.5, 1.0, 1.5, 2.0),
                            target_accuracy=(0.9, 0.5, 0.2, 0.1, 0.1), control_accuracy=(0.8, 0.79, 0.77, 0.70, 0.6))
    assert curve.pretrained_control == 0.8
    assert curve.chosen_alpha == 1.0  # 1.5 would forget more but control 0.70 < 0.95 × 0.8
    tie = ForgettingCurve("t", ("a",), "val", (0.0, 1.0, 2.0), (0.9, 0.1, 0.1), (0.8, 0.8, 0.8))
    assert tie.chosen_alpha == 1.0


def test_negation_curve_on_the_tiny_collection(tiny_collection_dir, tmp_path):
    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path)
    m = ws.matrix
    torch.testing.assert_close(negate(ws, "brightness", 0.7), m.theta0 - 0.7 * m.T[1])
    curve = negation_curve(ws, "brightness", alphas=(0.0, 1.0), split="test")
    assert curve.controls == ("colour", "texture")
    assert curve.target_accuracy[0] == pytest.approx(ws.zero_shot("test")["brightness"])
    assert curve.chosen_alpha in (0.0, 1.0)
