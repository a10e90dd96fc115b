""" The error of a recipe or command line that cannot be trained (its own module: options and config both raise it). """

__all__ = ['ConfigError']


class ConfigError(ValueError):
    """A recipe or command line that cannot be trained: unknown keys, wrong types, inconsistent values."""
