"""Saved, fingerprinted stages: expensive results (Fisher diagonals, mean gradients, influence
scores, weights, sketches, run checkpoints) written as safetensors plus a JSON of the settings and
of fingerprints of the model and the forget set, and reloaded only when all of them match."""

from .files import read_stage_files, stage_exists, write_stage_files
from .fingerprint import forget_fingerprint, function_name, model_fingerprint
from .store import Stage, StageMismatchError, load_stage, save_stage

__all__ = [
    "Stage",
    "StageMismatchError",
    "forget_fingerprint",
    "function_name",
    "load_stage",
    "model_fingerprint",
    "read_stage_files",
    "save_stage",
    "stage_exists",
    "write_stage_files",
]
