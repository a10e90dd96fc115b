""" SFSC training: recipes, per-method steps, the loop, checkpoints and distributed helpers (docs/design.md). """
from .config import ConfigError, TrainConfig, config_from_dict, load_recipe, parse_args
from .params import private_params_by_width, shared_params
from .methods import METHODS, create_train_step
from .registry import register_method
from .steps import StepResult, TrainStep

__all__ = [
    'ConfigError', 'TrainConfig', 'config_from_dict', 'load_recipe', 'parse_args', 'private_params_by_width',
    'shared_params', 'METHODS', 'StepResult', 'TrainStep', 'create_train_step', 'register_method',
]
