"""The model cut in two for self-training on a CPU: the frozen trunk, whose maps of each crop and its mirror image
are computed once and cached (fp16, memory-mapped when large), and the last stages that train; embeddings from the
cache."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..base.progress import progress_bar
from ..data.datasets import Record
from ..model.network import SiameseReID
from .config import AdaptConfig
from .targets import pixel_batches

CACHE_IN_MEMORY = 2 << 30  # bytes of trunk maps kept in memory; a larger cache is a memory-mapped temp file


def backbone_parts(backbone: nn.Module) -> tuple[list[nn.Module], int]:
    """forward_features as a list of modules run in order, and the index of the first stage in it. timm's ResNet
    (conv1 ... layer4) and EfficientNet family (conv_stem, bn1, blocks..., conv_head, bn2); other backbones
    are refused in one line."""
    if all(hasattr(backbone, f"layer{i}") for i in range(1, 5)):
        return [backbone.conv1, backbone.bn1, backbone.act1, backbone.maxpool, backbone.layer1, backbone.layer2,
                backbone.layer3, backbone.layer4], 4
    if hasattr(backbone, "blocks") and hasattr(backbone, "conv_head"):
        return [backbone.conv_stem, backbone.bn1, *backbone.blocks, backbone.conv_head, backbone.bn2], 2
    raise ValueError(f"self-training supports timm ResNet and EfficientNet backbones, not "
                     f"{type(backbone).__name__}; use --method bn")


class Split(nn.Module):
    """The model cut in two: a frozen `trunk` (pixels -> an intermediate map) and a trainable `top` (that map ->
    the post-BN embedding), with top(trunk(x)) == model(x)["emb"]."""

    def __init__(self, model: SiameseReID, train_stages: int):
        super().__init__()
        parts, first_stage = backbone_parts(model.backbone)
        stages = len(parts) - first_stage - (2 if parts[-1] is getattr(model.backbone, "bn2", None) else 0)
        if not 1 <= train_stages <= stages:
            raise ValueError(f"train_stages must be 1..{stages} for {model.cfg.backbone}, not {train_stages}")
        cut = first_stage + stages - train_stages
        self.model = model
        self.trunk, self.top = nn.Sequential(*parts[:cut]), nn.Sequential(*parts[cut:])

    @torch.no_grad()
    def trunk_map(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = x.to(m.pixel_mean.device).contiguous(memory_format=torch.channels_last)  # 2x faster on a CPU
        return self.trunk((x.float() - m.pixel_mean) / m.pixel_std)

    def forward(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.model
        feat = self.top(f.contiguous(memory_format=torch.channels_last)).float().mean(dim=(2, 3))
        if m.proj is not None:
            feat = m.proj(feat)
        return {"feat": feat, "emb": m.bnneck(feat)}

    def trainable(self) -> list[nn.Parameter]:
        m = self.model
        return [*self.top.parameters(), m.bnneck.weight, *(m.proj.parameters() if m.proj is not None else [])]

    def train_mode(self) -> None:
        """Only the trained part learns BatchNorm statistics; the trunk keeps the adapted ones."""
        self.model.eval()
        self.top.train()
        self.model.bnneck.train()


@torch.no_grad()
def embed_maps(split: Split, cache: torch.Tensor, batch_size: int = 256, desc: str = "embed",
               progress: bool = False) -> np.ndarray:
    """Unit embeddings from cached trunk maps (2, N, ...), the crop's and its mirror image's averaged (eval mode)."""
    split.model.eval()
    device = split.model.pixel_mean.device
    n = cache.shape[1]
    out = np.empty((n, 0), np.float32)
    bar = progress_bar(total=n, desc=desc, unit="crop", disable=not progress)
    for s in range(0, n, batch_size):
        e = sum(split(cache[m, s:s + batch_size].to(device).float())["emb"] for m in (0, 1))
        e = F.normalize(e, dim=1).cpu().numpy()
        out = np.empty((n, e.shape[1]), np.float32) if not out.shape[1] else out
        out[s:s + len(e)] = e
        bar.update(len(e))
    bar.close()
    return out


def trunk_cache(split: Split, records: Sequence[Record], size: tuple[int, int]) -> tuple[tuple[int, ...], int]:
    """The shape of the trunk-map cache of `records` (2, N, C, h, w) and its bytes (fp16), from one dummy crop
    (in eval mode, so no BatchNorm statistic moves)."""
    was = split.model.training
    split.model.eval()
    with torch.no_grad():
        shape = tuple(split.trunk_map(torch.zeros(1, 3, *size, dtype=torch.uint8)).shape[1:])
    split.model.train(was)
    full = (2, len(records), *shape)
    return full, 2 * int(np.prod(full))


def check_cache_room(nbytes: int) -> None:
    """A cache too large for memory goes to a temporary file: refuse before any work if the disk has no room."""
    import shutil

    free = shutil.disk_usage(tempfile.gettempdir()).free
    if nbytes > CACHE_IN_MEMORY and free < nbytes * 1.1:
        raise ValueError(f"self-training caches {nbytes / 2**30:.1f} GiB of trunk maps in {tempfile.gettempdir()}, "
                         f"which has {free / 2**30:.1f} GiB free; free some, set TMPDIR, or use --max-images")


def empty_cache(shape: tuple[int, ...]) -> torch.Tensor:
    """fp16 trunk maps: in memory up to CACHE_IN_MEMORY bytes, else a memory-mapped temporary file (unlinked at
    once: the space is freed when the tensor goes, and the OS pages it as memory allows)."""
    if 2 * int(np.prod(shape)) <= CACHE_IN_MEMORY:
        return torch.empty(shape, dtype=torch.float16)
    with tempfile.NamedTemporaryFile(prefix="reid-trunk-maps-", suffix=".f16") as f:
        arr = np.memmap(f.name, np.float16, "w+", shape=shape)
    return torch.from_numpy(arr)


def fill_cache(split: Split, records: Sequence[Record], cfg: AdaptConfig, progress: bool,
               ) -> tuple[torch.Tensor, list[int]]:
    """Each crop's and its mirror image's trunk map (2, N, C, h, w) fp16, and which crops were readable."""
    size = (split.model.cfg.height, split.model.cfg.width)
    shape, _ = trunk_cache(split, records, size)
    cache, kept, n = empty_cache(shape), [], 0
    for x in pixel_batches(records, size, cfg.batch_size, "trunk maps", progress, kept):
        cache[0, n:n + len(x)] = split.trunk_map(x).half()
        cache[1, n:n + len(x)] = split.trunk_map(x.flip(3)).half()
        n += len(x)
    if not n:
        raise ValueError("self-training needs readable target crops")
    return cache[:, :n], kept
