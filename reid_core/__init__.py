"""reid_core: person re-identification with a Siamese timm network.

Public API: `ReID` (load/embed/compare), `load_dataset`, `create_model`/`load_model`/`save_model`,
`Trainer`/`TrainConfig`, `market_rank`/`verification`.
"""

from .api import Comparison, ReID
from .data import ImageError, load_image
from .datasets import DatasetError, Record, ReIDData, load_dataset
from .metrics import market_rank, verification
from .model import ModelConfig, SiameseReID, WeightsError, create_model, load_model, save_model

__all__ = ["Comparison", "DatasetError", "ImageError", "ModelConfig", "Record", "ReID", "ReIDData",
           "SiameseReID", "TrainConfig", "Trainer", "WeightsError", "create_model", "load_dataset",
           "load_image", "load_model", "market_rank", "save_model", "verification"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Trainer/TrainConfig on first use: `python -m reid_core.evaluate` must not pre-import its own module."""
    if name in ("Trainer", "TrainConfig"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
