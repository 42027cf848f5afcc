import pytest
import torch

from engine.eval.evaluate import evaluate
from engine.merge.forgetting import ForgettingCurve, negate, negation_curve
from engine.workspace import Workspace


def test_chosen_alpha_follows_the_protocol():
    curve = ForgettingCurve(
        "t",
        ("a", "b"),
        "val",
        (0.0, 0.5, 1.0, 1.5, 2.0),
        target_accuracy=(0.9, 0.5, 0.2, 0.1, 0.1),
        control_accuracy=(0.8, 0.79, 0.77, 0.70, 0.6),
    )
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


def test_sta_forgetting_masks_reduce_to_task_arithmetic_and_respect_the_controls(tiny_collection_dir, tmp_path):
    from engine.merge.forgetting import forgetting_vector
    from engine.sta.codes import decode
    from engine.sta.importance import normalize_per_tensor

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path)
    m = ws.matrix
    tau = m.T[1]
    everything = forgetting_vector(ws, "brightness", method="sta", threshold=0.0, margin=0.0)
    torch.testing.assert_close(everything, tau)
    G = decode(ws.importance.codes("grad0"))  # [K, P]
    own = normalize_per_tensor(tau.abs() * G[1], m.spec)
    others = [normalize_per_tensor(tau.abs() * G[k], m.spec) for k in (0, 2)]
    expected_keep = (own >= 0.05) & (own >= 1.5 * others[0]) & (own >= 1.5 * others[1])
    got = forgetting_vector(ws, "brightness", method="sta", threshold=0.05, margin=1.5)
    torch.testing.assert_close(got, tau * expected_keep)
    assert 0 < int(expected_keep.sum()) < tau.numel()
    only_colour = forgetting_vector(ws, "brightness", method="sta", threshold=0.05, margin=1.5, controls=["colour"])
    assert torch.count_nonzero(only_colour) >= torch.count_nonzero(got)  # fewer controls, fewer vetoes
    theta_variant = forgetting_vector(ws, "brightness", method="sta_theta", threshold=0.05, margin=1.5)
    assert not torch.equal(theta_variant, got)


def test_sta_negation_curve_and_outcome(tiny_collection_dir, tmp_path):
    from engine.merge.forgetting import forgetting_outcome

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path)
    curve = negation_curve(ws, "colour", method="sta", threshold=0.1, margin=1.0, alphas=(0.0, 1.0, 2.0))
    assert (curve.method, curve.threshold, curve.margin) == ("sta", 0.1, 1.0)
    outcome = forgetting_outcome(ws, curve, split="test")
    expected = evaluate(
        negate(ws, "colour", curve.chosen_alpha, method="sta", threshold=0.1, margin=1.0), ws.suite, "test"
    ).accuracy
    assert outcome.target_accuracy == expected["colour"]
    assert outcome.control_accuracy == pytest.approx((expected["brightness"] + expected["texture"]) / 2)
    assert outcome.chance == pytest.approx(1 / len(ws.suite.tasks["colour"].class_names))


def test_unknown_forgetting_method(tiny_collection_dir, tmp_path):
    from engine.errors import UnknownMethodError

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path)
    with pytest.raises(UnknownMethodError, match="ties: is not a forgetting method"):
        negate(ws, "colour", 1.0, method="ties")


def test_a_curve_is_read_at_the_sweep_point_nearest_alpha():
    from engine.merge.forgetting import ForgettingCurve

    curve = ForgettingCurve("t", ("c",), "val", (0.0, 0.05, 0.1), (0.9, 0.5, 0.2), (0.8, 0.79, 0.7))
    assert curve.nearest_index(0.05000000000000001) == 1 and curve.nearest_index(0.09) == 2
    assert curve.nearest_index(-1.0) == 0 and curve.pretrained_target == 0.9
