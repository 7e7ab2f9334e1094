"""The per-layer rule registry: which rule knows the per-sample gradient of which layer type.

Rules are found through the class hierarchy (so subclasses of nn.Linear work), then by
predicates for layer types of other libraries that we must not import (e.g. GPT-2's Conv1D).
Rules register themselves in rules.py and mha.py, which selection.py imports explicitly.
"""

from __future__ import annotations

from typing import Callable, Protocol

from torch import nn


class LayerRule(Protocol):
    name: str

    def param_names(self, module: nn.Module) -> list[str]:
        """Parameters of ``module`` this rule gives per-sample gradients for (dotted for a child's)."""

    def install(self, module: nn.Module, tap) -> Callable[[], None]:
        """Makes every call of ``module`` hand its pieces to ``tap(piece, x, y, batch_axis=0)``, which
        records input ``x`` and returns ``y`` tapped for its gradient; returns the undo function."""

    def terms(self, module: nn.Module, calls: dict, wanted: list[str]) -> dict:
        """One term per wanted parameter from every call's recorded input and output gradient
        (``calls``: piece -> list of Call)."""


_BY_TYPE: dict[type, LayerRule] = {}
_BY_PREDICATE: list[tuple[Callable[[nn.Module], bool], LayerRule]] = []


def register(*types: type):
    def wrap(cls):
        rule = cls()
        for t in types:
            _BY_TYPE[t] = rule
        return cls

    return wrap


def register_if(predicate: Callable[[nn.Module], bool]):
    def wrap(cls):
        _BY_PREDICATE.append((predicate, cls()))
        return cls

    return wrap


def find_rule(module: nn.Module) -> LayerRule | None:
    for cls in type(module).__mro__:
        if cls in _BY_TYPE:
            return _BY_TYPE[cls]
    for predicate, rule in _BY_PREDICATE:
        if predicate(module):
            return rule
    return None


def forward_is_the_rules(module: nn.Module) -> bool:
    """True if ``module`` computes its output with the forward its rule was written for: the
    registered class's own (False for a subclass that overrides it), or, for a rule matched by
    predicate, one the rule vouches for with ``fixed_forward = True``."""
    for cls in type(module).__mro__:
        if cls in _BY_TYPE:
            return type(module).forward is cls.forward
    rule = find_rule(module)
    return bool(getattr(rule, "fixed_forward", False))


def supported_types() -> list[str]:
    names = sorted({t.__name__ for t in _BY_TYPE})
    return names + [rule.name for _, rule in _BY_PREDICATE]
