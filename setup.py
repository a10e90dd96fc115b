"""The package list only; everything else is in pyproject.toml.

``sfsc_timm.recipes`` and ``sfsc_timm.model_cards`` are the top-level recipes/ and model_cards/ folders, mapped into
the package by pyproject.toml's package-dir; ``find_namespace_packages`` cannot find them, so they are named here.
"""
from setuptools import find_namespace_packages, setup

PACKAGES = find_namespace_packages(include=['sfsc_timm*'], exclude=['*__pycache__*'])
setup(packages=PACKAGES + ['sfsc_timm.recipes', 'sfsc_timm.model_cards'])
