"""Training ANI ensembles: the paper's loss (Eq. 1), all members together, warm starts, resume."""

from potforge.train.config import TrainConfig
from potforge.train.frames import FrameSet, dataset_elements, load_split
from potforge.train.loss import frame_losses, predict_with_grad
from potforge.train.metrics import ensemble_metrics
from potforge.train.trainer import TrainResult, build_model, fit_self_energies, train_ensemble, warm_start

__all__ = [
    "FrameSet",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "dataset_elements",
    "ensemble_metrics",
    "fit_self_energies",
    "frame_losses",
    "load_split",
    "predict_with_grad",
    "train_ensemble",
    "warm_start",
]
