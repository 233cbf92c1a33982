"""reid_core: person re-identification with a Siamese timm network.

The public API, what the app, train.py and notebooks stand on:
- inference: `ReID` (load / embed / compare / compare_parts / gallery), `Comparison`, `resolve_weights`;
- galleries: `Gallery` (one SQLite file), `AddReport`, `Match`, `GalleryError`, `ranking_ap`, `RERANK_POOL`, `MAX_K`;
- inputs: `read_image` / `load_image`, `ImageError`, `Limits`, `person_warning`, `parse_identity`; a server's
  shares: `ServerLimits`;
- pictures: `parts_picture`, `framed`; files: `atomic_write` (temp file, then rename); a long job's progress
  reported (and stopped) elsewhere than stderr: `listening`;
- data and models: `load_dataset`, `Record`, `ReIDData`, `create_model` / `load_model` / `save_model`,
  `ModelConfig`, `SiameseReID`, `WeightsError`, `DatasetError`;
- adaptation to new cameras: `AdaptConfig`, `AdaptReport` (`ReID.adapted`, `ReID.self_trained`,
  `ReID.bn_adapted`), `AdaptationRecord` (what an adapted model's file says of it, typed);
- training and evaluation: `Trainer`, `TrainConfig` (imported on first use), `market_rank`, `verification`;
- footage (imported on first use, reid_core.video): `Footage`, `FootageConfig`, `IndexReport`, `TrackletGallery`,
  `TrackletMatch`, `Person`, `Detector`, `load_detector`, `VideoError`, `VideoLimits`, `probe_video`.
`figures.plots` (Plotly figures) is the one submodule the app imports besides this. See DESIGN.md for the modules.
"""

import importlib

from .adapt.config import AdaptConfig, AdaptReport
from .adapt.recipe import THRESHOLDS_INHERITED
from .adaptation_record import AdaptationRecord
from .api import Comparison, ReID
from .base.files import atomic_write
from .base.progress import listening
from .data.datasets import DatasetError, Record, ReIDData, load_dataset, parse_identity
from .data.images import ImageError, load_image
from .data.limits import Limits, ServerLimits
from .data.person_check import person_warning
from .data.uploads import read_image
from .evaluation.metrics import market_rank, ranking_ap, verification
from .figures.crop_pictures import framed, parts_picture
from .model.errors import WeightsError
from .model.network import ModelConfig, SiameseReID, create_model, load_model, save_model
from .model.weights import WEIGHTS_HELP, resolve_weights
from .search.gallery import Gallery, GalleryError, Match
from .search.index import MAX_K, RERANK_POOL
from .search.ingest import AddReport

VIDEO = {"Footage": "footage", "FootageConfig": "config", "IndexReport": "footage", "TrackletGallery": "store",
         "TrackletMatch": "store", "Person": "store", "Detector": "detector", "load_detector": "detector",
         "VideoError": "frames", "VideoLimits": "frames", "probe_video": "frames"}

__all__ = ["MAX_K", "RERANK_POOL", "THRESHOLDS_INHERITED", "WEIGHTS_HELP", "AdaptConfig", "AdaptationRecord",
           "AdaptReport", "AddReport",
 "Comparison", "DatasetError", "Gallery",
           "GalleryError", "ImageError", "Limits", "Match", "ModelConfig", "Record", "ReID", "ReIDData",
           "ServerLimits", "SiameseReID", "TrainConfig", "Trainer", "WeightsError", "atomic_write",
           "create_model", "framed",
           "listening", "load_dataset", "load_image", "load_model", "market_rank", "parse_identity", "person_warning",
           "parts_picture", "ranking_ap", "read_image", "resolve_weights", "save_model", "setting_flags",
           "verification",
           "Footage", "FootageConfig", "IndexReport", "TrackletGallery", "TrackletMatch", "Person", "Detector",
           "load_detector", "VideoError", "VideoLimits", "probe_video"]  # VIDEO's: loaded on first use
__version__ = "0.1.0"


def __getattr__(name: str):
    """Trainer/TrainConfig and the footage pipeline (VIDEO) on first use: the app's other tabs and the inference
    API never need the training loop, OpenCV or a detector."""
    if name in VIDEO:
        module = importlib.import_module(f".video.{VIDEO[name]}", __name__)
        return getattr(module, "probe" if name == "probe_video" else name)
    if name == "Trainer":
        from .train.trainer import Trainer

        return Trainer
    if name == "TrainConfig":
        from .train.config import TrainConfig

        return TrainConfig
    if name == "setting_flags":  # a dataclass's settings as argparse flags (train.py's parser)
        from .cli import setting_flags

        return setting_flags
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
