""" The registry of training methods: recipe name -> TrainStep class.

It imports nothing from the method modules, so that :mod:`.steps` (the SFSC family and the summed-loss base) and
:mod:`.baselines` can both register into it without importing each other; :mod:`.methods` imports them all.
"""
from typing import Callable, Dict, Type, TypeVar

__all__ = ['METHODS', 'register_method']

StepClass = TypeVar('StepClass', bound=type)

METHODS: Dict[str, Type] = {}


def register_method(name: str) -> Callable[[StepClass], StepClass]:
    """Class decorator: make a TrainStep subclass available as ``method: name`` in recipes."""
    def register(cls: StepClass) -> StepClass:
        if name in METHODS:
            raise ValueError(f'method {name!r} is already registered by {METHODS[name].__name__}.')
        METHODS[name] = cls
        return cls
    return register
