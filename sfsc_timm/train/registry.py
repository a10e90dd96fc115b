""" The registry of training methods: a method is an algorithm's step class with its own option values.

It imports nothing from the step modules, so that :mod:`.methods` can register the package's methods and a
benchmark or a user can register more (``register_method('my_sfsc', SFSCStep, 'what it is', priority='relative')``)
without a change here. A recipe names a method (``method: NAME``) and may set its options under the same name.
"""
from dataclasses import dataclass
from typing import Any, Dict

from .options import build_options

__all__ = ['Method', 'METHODS', 'register_method']


@dataclass(frozen=True)
class Method:
    """One training method.

    Attributes:
        name: Its recipe name.
        step: The TrainStep subclass of its algorithm (its ``options_class`` types the options).
        options: Its option values: what a recipe's block under ``name`` starts from.
        summary: One line for ``--help`` and the docs.
    """
    name: str
    step: type
    options: Any
    summary: str

    @property
    def options_class(self) -> type:
        return self.step.options_class


METHODS: Dict[str, Method] = {}


def register_method(name: str, step: type, summary: str, **options: Any) -> Method:
    """Make `step` with `options` (over its options class's defaults) available as ``method: name`` in recipes.

    Raises:
        ValueError: `name` is taken.
        ConfigError: an option the step's options class does not have, or a bad value.
    """
    if name in METHODS:
        raise ValueError(f'method {name!r} is already registered ({METHODS[name].summary}).')
    method = Method(name, step, build_options(step.options_class, options, where=f'method {name}'), summary)
    METHODS[name] = method
    return method
