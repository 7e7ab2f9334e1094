"""The files of one saved stage, written so that a process killed at any moment leaves either the
previous stage or the new one, never a mixture.

``<kind>.json`` is the stage: settings, fingerprints, small values, and the name of its tensor
file ``<kind>-<token>.safetensors``. A write puts the tensor file in place first (temp file, fsync,
rename), then replaces the JSON the same way (the commit), then removes the tensor files the old
JSON named. A reader follows the JSON to its tensor file and checks the token stored inside it.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

import torch

FORMAT = 2  # 2: SHA-256 tensor digests in the model fingerprint (1 used BLAKE2b)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors sharing memory)."""
    out = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"stage tensor {name!r} must be a tensor, got {type(t).__name__}")
        out[name] = t.detach().to("cpu", copy=True).contiguous()
    return out


def write_stage_files(directory, kind: str, tensors: dict[str, torch.Tensor], header: dict) -> Path:
    """Writes stage ``kind`` into ``directory`` (created if needed); returns the JSON's path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    tensor_file = f"{kind}-{token}.safetensors"
    plain = _plain(tensors)
    _atomic_write(directory / tensor_file, lambda tmp: save_file(plain, tmp, metadata={"token": token}))
    header = {**header, "format": FORMAT, "kind": kind, "tensor_file": tensor_file, "token": token}
    text = json.dumps(header, indent=1, sort_keys=True) + "\n"
    json_path = directory / f"{kind}.json"
    _atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
    for old in directory.glob(f"{kind}-*.safetensors"):
        if old.name != tensor_file:
            old.unlink(missing_ok=True)
    return json_path


def stage_exists(directory, kind: str) -> bool:
    return (Path(directory) / f"{kind}.json").is_file()


def read_stage_files(directory, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(header, tensors)`` of stage ``kind`` in ``directory``; errors name the file at fault."""
    from safetensors import safe_open

    json_path = Path(directory) / f"{kind}.json"
    try:
        header = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved stage {kind!r} in {directory} ({json_path.name} is missing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{json_path} is not a readable stage file ({exc})") from None
    if not isinstance(header, dict) or header.get("kind") != kind or "tensor_file" not in header:
        raise ValueError(f"{json_path} is not a saved {kind!r} stage of imu_fast")
    if header.get("format") != FORMAT:
        raise ValueError(f"{json_path} has stage format {header.get('format')!r}; this version of imu_fast reads "
                         f"format {FORMAT}")
    tensor_path = json_path.parent / header["tensor_file"]
    try:
        with safe_open(str(tensor_path), framework="pt") as f:
            token = (f.metadata() or {}).get("token")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except FileNotFoundError:
        raise FileNotFoundError(f"{json_path} names the tensor file {tensor_path.name}, which is missing") from None
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{tensor_path} is not a readable safetensors file ({exc})") from None
    if token != header.get("token"):
        raise ValueError(f"{tensor_path} does not belong to {json_path} (token {token!r}, expected "
                         f"{header.get('token')!r})")
    return header, tensors
