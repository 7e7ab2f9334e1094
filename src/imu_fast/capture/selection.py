"""Which parameters to compute per-sample statistics for, grouped by the module that owns them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import rules  # noqa: F401  (registers the built-in layer rules)
from .registry import find_rule, supported_types


@dataclass
class Target:
    module: nn.Module
    module_name: str
    rule: object
    params: dict[str, str]  # local parameter name -> full parameter name


def _owners(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """id(parameter) -> every (module name, module, local name) that holds it."""
    owners: dict[int, list] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for local, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((mod_name, module, local))
    return owners


def _single_owner(places: list[tuple[str, nn.Module, str]]) -> tuple[str, nn.Module, str]:
    if len({id(m) for _, m, _ in places}) > 1:
        # g_i would be the sum of two layers' terms, whose norms and squares do not add up.
        names = sorted({f"{n}.{loc}" if n else loc for n, _, loc in places})
        raise NotImplementedError(f"a parameter shared by several modules ({names}, e.g. tied embeddings) "
                                  "is not supported; select other parameters")
    return places[0]


def select_targets(model: nn.Module, params=None) -> list[Target]:
    """Resolve ``params`` (None = every trainable parameter; or names, parameters or modules)."""
    owners = _owners(model)
    by_id = {id(p): p for p in model.parameters()}
    if params is None:
        chosen = [p for p in model.parameters() if p.requires_grad]
    else:
        if isinstance(params, (str, nn.Module, torch.Tensor)):
            params = [params]
        named = dict(model.named_parameters())
        chosen = []
        for item in params:
            if isinstance(item, str):
                if item not in named:
                    raise KeyError(f"the model has no parameter named {item!r}")
                chosen.append(named[item])
            elif isinstance(item, nn.Module):
                own = list(item.parameters(recurse=False))
                if not own:
                    raise ValueError(f"module {type(item).__name__} has no parameters of its own to select")
                chosen.extend(own)
            elif isinstance(item, torch.Tensor) and id(item) in by_id:
                chosen.append(item)
            else:
                raise TypeError(f"cannot select {type(item).__name__}: give parameter names, parameters or modules")
    if not chosen:
        raise ValueError("no parameters selected")
    targets: dict[int, Target] = {}
    for p in chosen:
        mod_name, module, local = _single_owner(owners[id(p)])
        rule = find_rule(module)
        full = f"{mod_name}.{local}" if mod_name else local
        if rule is None or local not in rule.param_names(module):
            raise NotImplementedError(
                f"parameter {full!r} belongs to {type(module).__name__} ({mod_name or 'the model'}), which has no "
                f"per-sample rule. Supported layers: {', '.join(supported_types())}"
            )
        target = targets.setdefault(id(module), Target(module, mod_name, rule, {}))
        target.params[local] = full
    return list(targets.values())


def check_samples_independent(model: nn.Module) -> None:
    """Per-sample gradients assume samples do not interact; BatchNorm in train mode breaks that."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise RuntimeError(
                f"BatchNorm {name!r} is in train mode, so samples in a batch interact and per-sample gradients are "
                "undefined; call model.eval() (or module.eval() on the BatchNorm layers)"
            )
