""" SFSC training: recipes, one step class per algorithm with typed options, the loop, checkpoints and distributed
helpers (docs/design.md). """
from .baselines import IndependentStep, StagedStep, SupernetSumStep
from .config import ConfigError, TrainConfig, config_from_dict, load_recipe, parse_args
from .methods import METHODS, Method, create_train_step, register_method
from .options import IndependentOptions, SFSCOptions, StagedOptions, SupernetSumOptions
from .params import private_params_by_width, shared_params
from .steps import SFSCStep, StepResult, SummedLossStep, TrainStep

__all__ = [
    'ConfigError', 'TrainConfig', 'config_from_dict', 'load_recipe', 'parse_args', 'private_params_by_width',
    'shared_params', 'METHODS', 'Method', 'StepResult', 'TrainStep', 'create_train_step', 'register_method',
    'SFSCStep', 'SummedLossStep', 'SupernetSumStep', 'StagedStep', 'IndependentStep', 'SFSCOptions',
    'SupernetSumOptions', 'StagedOptions', 'IndependentOptions',
]
