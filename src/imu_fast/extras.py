"""Optional dependencies, imported where they are used, with an error that names the extra to install.

The core install (``pip install imu-fast``) brings torch, numpy, tqdm and safetensors. The rest
sits behind extras: ``eval`` (scikit-learn: the digits data set and the MIA attack), ``studies``
(scikit-learn and matplotlib: the benchmark studies' metrics and plots) and ``hf`` (transformers:
Hugging Face models on the command line and in the studies).
"""

from __future__ import annotations

import importlib

EXTRAS = {"eval": "scikit-learn", "studies": "scikit-learn and matplotlib", "hf": "transformers and accelerate"}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, purpose: str):
    """``import module``, or a ``MissingExtra`` saying that ``purpose`` needs ``pip install "imu-fast[extra]"``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{purpose} needs {module.split('.')[0]} ({EXTRAS[extra]}), which is not installed: "
                           f'pip install "imu-fast[{extra}]"') from exc
