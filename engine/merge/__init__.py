"""Merge methods: pure functions (θ₀ [P], T [K, P], params) → merged θ [P], registered by name."""

from engine.merge.registry import METHODS, MergeMethod, Param, apply, get_method

__all__ = ["METHODS", "MergeMethod", "Param", "apply", "get_method"]
