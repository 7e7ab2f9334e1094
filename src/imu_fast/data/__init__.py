"""Data sets that ship with the package's dependencies, so demos and tests never download anything."""

from .digits import DigitsSplit, forget_retain_split, load_digits_split

__all__ = ["DigitsSplit", "forget_retain_split", "load_digits_split"]
