"""Lightning checkpoints without pickle: every tensor in ``state.safetensors``, the rest in JSON.

:class:`SafetensorsCheckpointIO` is a Lightning ``CheckpointIO`` plugin. A checkpoint is a
folder:

* ``state.safetensors`` -- every tensor of Lightning's checkpoint dict (module state dict,
  optimizer moments, ...), keyed by its path in the dict;
* ``tree.json`` -- the same dict with each tensor replaced by ``{"__tensor__": key}``; tuples,
  int-keyed dicts, floats (``inf``/``nan`` included) and ``torch.Size`` are tagged so they come
  back with their types. Anything else (a pickled object, a class, a lambda) is refused with a
  ``TypeError``: nothing is ever pickled or unpickled.

Written to ``<folder>.tmp`` and renamed, so a kill -9 during a save leaves the previous
checkpoint intact and no half-written one under the final name. Lightning's resume logic
(global step, loop progress, optimizer and scheduler states, callback states) works unchanged:
``trainer.fit(..., ckpt_path=<folder>)`` reads through the plugin.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

TREE = "tree.json"
STATE = "state.safetensors"


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = path or "root"
        t = obj.detach().cpu()
        if t.dtype == torch.bool:  # safetensors stores bool, keep the tag anyway for clarity
            pass
        tensors[key] = t.contiguous().clone() if not t.is_contiguous() or t.storage_offset() else t
        return {"__tensor__": key}
    if isinstance(obj, torch.Size):
        return {"__size__": list(obj)}
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") and k.endswith("__") for k in obj):
            return {k: _encode(v, f"{path}.{k}" if path else k, tensors) for k, v in obj.items()}
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"checkpoint key {k!r} at {path!r} is not a str/int/float/bool")
            items.append([k, _encode(v, f"{path}.{k}" if path else str(k), tensors)])
        return {"__items__": items}
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return _encode(obj.item(), path, tensors)
    raise TypeError(f"refusing to store {type(obj).__name__} at {path!r} in a checkpoint (no pickle)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj and len(obj) == 1:
            return tensors[obj["__tensor__"]]
        if "__size__" in obj and len(obj) == 1:
            return torch.Size(obj["__size__"])
        if "__float__" in obj and len(obj) == 1:
            return float(obj["__float__"])
        if "__tuple__" in obj and len(obj) == 1:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj and len(obj) == 1:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


def save_tree(checkpoint: dict, folder: str | os.PathLike) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(checkpoint, "", tensors)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # shared storage (tied weights, views) must be separate tensors in safetensors
    seen: dict[int, str] = {}
    for k, t in list(tensors.items()):
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen and ptr != -1:
            tensors[k] = t.clone()
        seen[ptr] = k
    save_file(tensors, str(tmp / STATE))
    (tmp / TREE).write_text(json.dumps(tree, allow_nan=False))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_tree(folder: str | os.PathLike, map_location: Any = None) -> dict:
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / TREE).exists():
        raise FileNotFoundError(f"{folder} is not a safetensors checkpoint folder (no {TREE})")
    device = "cpu" if map_location is None or callable(map_location) or isinstance(map_location, dict) \
        else str(map_location)
    tensors = load_file(str(folder / STATE), device=device)
    return _decode(json.loads((folder / TREE).read_text()), tensors)


class SafetensorsCheckpointIO(CheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        save_tree(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return load_tree(path, map_location)

    def remove_checkpoint(self, path) -> None:
        shutil.rmtree(path, ignore_errors=True)
