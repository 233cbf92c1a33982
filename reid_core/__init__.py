"""reid_core: person re-identification with a Siamese timm network.

The public API, what the app, train.py and notebooks stand on:
- inference: `ReID` (load / embed / compare / compare_parts / gallery), `Comparison`, `resolve_weights`;
- galleries: `Gallery` (one SQLite file), `AddReport`, `Match`, `GalleryError`, `ranking_ap`, `RERANK_POOL`;
- inputs: `read_image` / `load_image`, `ImageError`, `Limits`, `person_warning`, `parse_identity`; a server's
  shares: `ServerLimits`;
- pictures: `parts_picture`, `framed`; files: `atomic_write` (temp file, then rename);
- data and models: `load_dataset`, `Record`, `ReIDData`, `create_model` / `load_model` / `save_model`,
  `ModelConfig`, `SiameseReID`, `WeightsError`, `DatasetError`;
- adaptation to new cameras: `AdaptConfig`, `AdaptReport` (`ReID.adapted`, `ReID.bn_adapted`);
- training and evaluation: `Trainer`, `TrainConfig` (imported on first use), `market_rank`, `verification`.
`plots` (Plotly figures) is the one submodule the app imports besides this. See DESIGN.md for the modules.
"""

from .adapt import THRESHOLDS_INHERITED, AdaptConfig, AdaptReport
from .api import Comparison, ReID
from .datasets import DatasetError, Record, ReIDData, load_dataset, parse_identity
from .files import atomic_write
from .gallery import Gallery, GalleryError, Match
from .images import ImageError, load_image
from .index import RERANK_POOL
from .ingest import AddReport
from .limits import Limits, ServerLimits
from .metrics import market_rank, ranking_ap, verification
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
from .pictures import framed, parts_picture
from .screen import person_warning
from .uploads import read_image

__all__ = ["RERANK_POOL", "THRESHOLDS_INHERITED", "WEIGHTS_HELP", "AdaptConfig", "AdaptReport", "AddReport",
 "Comparison", "DatasetError", "Gallery",
           "GalleryError", "ImageError", "Limits", "Match", "ModelConfig", "Record", "ReID", "ReIDData",
           "ServerLimits", "SiameseReID", "TrainConfig", "Trainer", "WeightsError", "atomic_write",
           "create_model", "framed",
           "load_dataset", "load_image", "load_model", "market_rank", "parse_identity", "person_warning",
           "parts_picture", "ranking_ap", "read_image", "resolve_weights", "save_model", "setting_flags",
           "verification"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Trainer/TrainConfig on first use: the app and the inference API never need the training loop."""
    if name in ("Trainer", "TrainConfig"):
        from . import trainer

        return getattr(trainer, name)
    if name == "setting_flags":  # a dataclass's settings as argparse flags (train.py's parser)
        from .cli import setting_flags

        return setting_flags
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
