"""Name → merge method: the registry built by finding every method module of a package.

`methods_in(package)` imports each module of `package` (pkgutil; modules named with a leading underscore hold
shared parts and are skipped) and reads the frozen `MergeMethod` it exports as `METHOD`, named like its module;
they are listed by their declared `order`, then by name. `METHODS` is that of engine/merge/methods/, read-only
(a MappingProxyType): nothing registers at run time, and a test builds the registry of its own package instead.
`apply` and `scale_parts` call a method's declared functions with its resolved parameters.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from engine.errors import ParameterError, UnknownMethodError
from engine.merge.declaration import MergeMethod, ParamValue, check_importance, check_keep, read_rows
from engine.merge.subspace import Memo
from engine.merge.wudi import StepProgress
from engine.params import ParamSpec

METHODS_PACKAGE = "engine.merge.methods"


def methods_in(package: str = METHODS_PACKAGE) -> Mapping[str, MergeMethod]:
    """Every method declared in `package` (a module each, exporting `METHOD`), in declared order."""
    root = importlib.import_module(package)
    found = [_declared(f"{package}.{info.name}") for info in pkgutil.iter_modules(root.__path__)]
    found = sorted((m for m in found if m is not None), key=lambda m: (m.order, m.name))
    return MappingProxyType({m.name: m for m in found})


def _declared(module_name: str) -> MergeMethod | None:
    """The `METHOD` of one module; None for a module of shared parts (a leading underscore)."""
    if module_name.rpartition(".")[2].startswith("_"):
        return None
    method = getattr(importlib.import_module(module_name), "METHOD", None)
    if not isinstance(method, MergeMethod):
        raise ParameterError(
            module_name,
            "is a method module without a MergeMethod named METHOD",
            fix="declare METHOD = MergeMethod(...), or prefix the module's name with _ if it holds shared parts",
        )
    if method.name != module_name.rpartition(".")[2]:
        raise ParameterError(module_name, f"declares method {method.name!r}", fix="name the module after its method")
    return method


METHODS: Mapping[str, MergeMethod] = methods_in()


def get_method(name: str | MergeMethod, methods: Mapping[str, MergeMethod] = METHODS) -> MergeMethod:
    """The method of that name in `methods` (default: the registry); a `MergeMethod` given is returned as it is."""
    if isinstance(name, MergeMethod):
        return name
    try:
        return methods[name]
    except KeyError:
        raise UnknownMethodError(
            name, "is not a registered merge method", fix=f"use one of {', '.join(sorted(methods))}"
        ) from None


def apply(
    name: str | MergeMethod,
    theta0: torch.Tensor,
    T: torch.Tensor,
    params: Mapping[str, ParamValue] | None = None,
    *,
    out: torch.Tensor | None = None,
    importance: torch.Tensor | None = None,
    spec: ParamSpec | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Merge with method `name`: θ₀ [P], T [K, P] → θ [P] (new, or `out`; inputs untouched).

    `importance` (uint8 [K, P]) is required by, and only passed to, methods that declare a kind;
    `spec` likewise for per-layer methods (which read T's rows as matrices). `keep`, only for a masking
    method, is its mask `method.kept(T, params)` computed before (a cache's): the merge then skips
    computing it (and needs no importance).
    """
    method = get_method(name)
    resolved = method.resolve(params or {}, num_tasks=T.shape[0])
    return apply_resolved(method, theta0, T, resolved, out=out, importance=importance, spec=spec, keep=keep)


def apply_resolved(
    method: MergeMethod,
    theta0: torch.Tensor,
    T: torch.Tensor,
    resolved: Mapping[str, Any],
    *,
    out: torch.Tensor | None = None,
    importance: torch.Tensor | None = None,
    spec: ParamSpec | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """`apply` with the parameters `method.resolve` gave already (a merge session's plan): resolved once."""
    resolved = dict(resolved)
    if method.per_layer:
        if spec is None or spec.numel != T.shape[1]:
            raise ParameterError(
                f"{method.name}.spec",
                "needs the ParamSpec of T's columns (it merges layer by layer)",
                fix="pass spec=, or merge through a Workspace",
            )
        resolved["spec"] = spec
    with read_rows(method, T) as rows:
        return method.fn(theta0, rows, out=out, **resolved, **_mask_inputs(method, T, importance, keep))


def _mask_inputs(
    method: MergeMethod, T: torch.Tensor, importance: torch.Tensor | None, keep: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The `keep=` mask when given (checked), else the `importance=` codes a method that selects by them needs."""
    if keep is not None:
        check_keep(method, keep, T)
        return {"keep": keep}
    if method.importance is None:
        return {}
    check_importance(method.name, importance, T)
    return {"importance": importance}


def scale_parts(
    name: str | MergeMethod,
    theta0: torch.Tensor,
    T: torch.Tensor,
    params: Mapping[str, ParamValue] | None = None,
    *,
    spec: ParamSpec | None = None,
    progress: StepProgress | None = None,
    memo: Memo | None = None,
    importance: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(base, direction) [P] of a method with `scale_parts`: the merge at its cheap scale s is base + s·direction
    (for a per-task s, with every task at s). An iterative method reports each step to `progress` (which may
    raise to cancel); others ignore it. A per-layer method keeps the factorizations its parameters do not
    change in `memo` when given. `importance` and `keep` are as for `apply`."""
    method = get_method(name)
    resolved = method.resolve(params or {}, num_tasks=T.shape[0])
    return scale_parts_resolved(
        method, theta0, T, resolved, spec=spec, progress=progress, memo=memo, importance=importance, keep=keep
    )


def scale_parts_resolved(
    method: MergeMethod,
    theta0: torch.Tensor,
    T: torch.Tensor,
    resolved: Mapping[str, Any],
    *,
    spec: ParamSpec | None = None,
    progress: StepProgress | None = None,
    memo: Memo | None = None,
    importance: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`scale_parts` with the parameters `method.resolve` gave already (its cheap ones are ignored)."""
    if method.scale_parts is None:
        raise ParameterError(method.name, "has no separable final scale", fix="merge it with apply()")
    resolved = {n: v for n, v in resolved.items() if n not in method.cheap}
    if method.per_layer:
        resolved["spec"] = spec
        if memo is not None:
            resolved["memo"] = memo
    if method.iterative and progress is not None:
        resolved["progress"] = progress
    with read_rows(method, T) as rows:
        return method.scale_parts(theta0, rows, **resolved, **_mask_inputs(method, T, importance, keep))
