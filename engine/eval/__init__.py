"""Evaluation: the suite (tower template, images, heads), accuracies, zero-shot heads, the linearized model."""
