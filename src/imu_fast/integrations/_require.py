"""Importing a host framework on demand, with an error that says what to install."""

from __future__ import annotations

import importlib


def require(module: str, install: str, what: str):
    """``importlib.import_module(module)``, or an ImportError naming ``install`` (a pip command)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs {module.split('.')[0]!r}, which is not importable here ({exc}); "
                          f"install it with: {install}") from exc
