"""Which parameters to compute per-sample statistics for, and every layer that uses each of them.

A parameter may be used by several layers (tied weights: an input embedding reused as the LM
head); its per-sample gradient is the sum over all of them, so every using layer becomes a capture
target. A layer may also own parameters that live in a child module it never calls
(nn.MultiheadAttention's ``out_proj``): its rule claims them by dotted name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import mha, rules  # noqa: F401  (register the built-in layer rules)
from .registry import find_rule, supported_types


@dataclass
class Target:
    """One layer to capture, and which of its parameters (by local name) are selected."""

    module: nn.Module
    module_name: str
    rule: object
    params: dict[str, str] = field(default_factory=dict)  # local name -> selected parameter's name


@dataclass
class SelectedParam:
    name: str  # the name results are keyed by (the one the user gave, else the model's first name for it)
    param: nn.Parameter
    uses: list[tuple[Target, str]] = field(default_factory=list)  # (layer, local name) per use


@dataclass
class Selection:
    targets: list[Target]
    params: dict[str, SelectedParam]  # in selection order

    def parameters(self) -> list[nn.Parameter]:
        return [p.param for p in self.params.values()]

    def names(self) -> list[str]:
        return list(self.params)


def _get_param(module: nn.Module, dotted: str):
    owner_path, _, local = dotted.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    return owner, local, getattr(owner, local, None)


def _uses(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """id(parameter) -> every (module name, module, local name) that uses it."""
    uses: dict[int, list] = {}
    seen_modules: set[int] = set()
    for mod_name, module in model.named_modules(remove_duplicate=False):
        if id(module) in seen_modules:  # one module registered under two names is one use
            continue
        seen_modules.add(id(module))
        for local, p in module.named_parameters(recurse=False):
            uses.setdefault(id(p), []).append((mod_name, module, local))
    # Rules that claim a child's parameters (e.g. MultiheadAttention.out_proj.weight) replace the child.
    for mod_name, module in model.named_modules():
        rule = find_rule(module)
        for dotted in (rule.param_names(module) if rule is not None else []):
            if "." not in dotted:
                continue
            child, local, p = _get_param(module, dotted)
            if isinstance(p, torch.Tensor) and id(p) in uses:
                kept = [u for u in uses[id(p)] if not (u[1] is child and u[2] == local)]
                uses[id(p)] = kept + [(mod_name, module, dotted)]
    return uses


def _describe(mod_name: str, module: nn.Module) -> str:
    return f"{type(module).__name__} ({mod_name or 'the model'})"


def _chosen(model: nn.Module, params) -> list[tuple[nn.Parameter, str | None]]:
    """(parameter, the name the user gave or None) for each selected item."""
    if params is None:
        return [(p, None) for p in model.parameters() if p.requires_grad]
    if isinstance(params, (str, nn.Module, torch.Tensor)):
        params = [params]
    named = dict(model.named_parameters(remove_duplicate=False))  # aliases of tied weights too
    modules = {id(m) for m in model.modules()}
    by_id = {id(p) for p in model.parameters()}
    chosen = []
    for item in params:
        if isinstance(item, str):
            if item not in named:
                raise KeyError(f"the model has no parameter named {item!r}")
            chosen.append((named[item], item))
        elif isinstance(item, nn.Module):
            if id(item) not in modules:
                raise ValueError(f"module {type(item).__name__} is not a submodule of the model "
                                 f"{type(model).__name__}; select layers of the model being scored")
            rule = find_rule(item)
            if rule is not None:
                own = [p for n in rule.param_names(item) if isinstance(p := _get_param(item, n)[2], torch.Tensor)]
            else:
                own = list(item.parameters(recurse=False))
            if not own:
                raise ValueError(f"module {type(item).__name__} has no parameters of its own to select")
            chosen.extend((p, None) for p in own)
        elif isinstance(item, torch.Tensor):
            if id(item) not in by_id:
                raise ValueError(f"a tensor of shape {tuple(item.shape)} is not a parameter of the model; select "
                                 "the model's parameters, their names, or its modules")
            chosen.append((item, None))
        else:
            raise TypeError(f"cannot select {type(item).__name__}: give parameter names, parameters or modules")
    return chosen


def select_targets(model: nn.Module, params=None) -> Selection:
    """Resolve ``params`` (None = every trainable parameter; or names, parameters or modules)."""
    uses = _uses(model)
    first_name = {}
    for name, p in model.named_parameters():
        first_name.setdefault(id(p), name)
    selected: dict[int, SelectedParam] = {}
    for p, given in _chosen(model, params):
        if id(p) not in selected:
            selected[id(p)] = SelectedParam(given or first_name[id(p)], p)
    if not selected:
        raise ValueError("no parameters selected")
    targets: dict[int, Target] = {}
    for sp in selected.values():
        for mod_name, module, local in uses[id(sp.param)]:
            rule = find_rule(module)
            if rule is None or local not in rule.param_names(module):
                shared = f" (it is shared with {len(uses[id(sp.param)]) - 1} other use(s))" if len(uses[id(sp.param)]) > 1 else ""
                raise NotImplementedError(
                    f"parameter {sp.name!r}{shared} is used by {_describe(mod_name, module)} as {local!r}, for which "
                    f"there is no per-sample rule. Supported layers: {', '.join(supported_types())}")
            target = targets.setdefault(id(module), Target(module, mod_name, rule))
            target.params[local] = sp.name
            sp.uses.append((target, local))
    return Selection(list(targets.values()), {sp.name: sp for sp in selected.values()})


def check_samples_independent(model: nn.Module) -> None:
    """Per-sample gradients assume samples do not interact; BatchNorm in train mode breaks that."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise RuntimeError(
                f"BatchNorm {name!r} is in train mode, so samples in a batch interact and per-sample gradients are "
                "undefined; call model.eval() (or module.eval() on the BatchNorm layers)"
            )
