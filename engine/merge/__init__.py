"""Merge methods: pure functions (θ₀ [P], T [K, P], params) → merged θ [P], one declared module each in
engine/merge/methods/, found by the registry."""

from engine.merge.declaration import CompareGrid, MergeMethod, Param, ParamValue
from engine.merge.registry import METHODS, apply, get_method, methods_in

__all__ = ["METHODS", "CompareGrid", "MergeMethod", "Param", "ParamValue", "apply", "get_method", "methods_in"]
