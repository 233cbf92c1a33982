"""reid_core: person re-identification with a Siamese timm network.

The public API, what the app, train.py and notebooks stand on:
- inference: `ReID` (load / embed / compare / similarity_map / gallery), `Comparison`, `resolve_weights`;
- galleries: `Gallery` (one SQLite file), `Galleries` (private per session, or shared), `AddReport`, `Match`,
  `GalleryError`, `ranking_ap`, `RERANK_POOL`;
- inputs: `read_image` / `load_image`, `ImageError`, `Limits`, `person_warning`, `parse_identity`;
- pictures: `agreement_picture`, `framed`; files: `atomic_write` (temp file, then rename);
- data and models: `load_dataset`, `Record`, `ReIDData`, `create_model` / `load_model` / `save_model`,
  `ModelConfig`, `SiameseReID`, `WeightsError`, `DatasetError`;
- training and evaluation: `Trainer`, `TrainConfig` (imported on first use), `market_rank`, `verification`.
`plots` (Plotly figures) is the one submodule the app imports besides this. See DESIGN.md for the modules.
"""

from .api import Comparison, ReID
from .datasets import DatasetError, Record, ReIDData, load_dataset, parse_identity
from .files import atomic_write
from .gallery import AddReport, Galleries, Gallery, GalleryError, Match, ranking_ap
from .images import ImageError, load_image
from .index import RERANK_POOL
from .limits import Limits
from .metrics import market_rank, verification
from .model import (
    WEIGHTS_HELP,
    ModelConfig,
    SiameseReID,
    WeightsError,
    create_model,
    load_model,
    resolve_weights,
    save_model,
)
from .pictures import agreement_picture, framed
from .screen import person_warning
from .uploads import read_image

__all__ = ["RERANK_POOL", "WEIGHTS_HELP", "AddReport", "Comparison", "DatasetError", "Galleries", "Gallery",
           "GalleryError", "ImageError", "Limits", "Match", "ModelConfig", "Record", "ReID", "ReIDData",
           "SiameseReID", "TrainConfig", "Trainer", "WeightsError", "agreement_picture", "atomic_write",
           "create_model", "framed",
           "load_dataset", "load_image", "load_model", "market_rank", "parse_identity", "person_warning",
           "ranking_ap", "read_image", "resolve_weights", "save_model", "verification"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Trainer/TrainConfig on first use: the app and the inference API never need the training loop."""
    if name in ("Trainer", "TrainConfig"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
