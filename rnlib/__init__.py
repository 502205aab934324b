"""rnlib: do richer neurons store more per parameter than ReLU(Wx + b) at a matched budget?"""

from rnlib.models import build_model, count_params, width_for_budget
from rnlib.neurons import NEURONS
from rnlib.study import Model, Study
from rnlib.tasks import TASKS, make_task
from rnlib.trainer import TrainConfig, train, train_models

__version__ = "0.1.0"
__all__ = [
    "NEURONS",
    "TASKS",
    "Model",
    "Study",
    "TrainConfig",
    "build_model",
    "count_params",
    "make_task",
    "train",
    "train_models",
    "width_for_budget",
]
