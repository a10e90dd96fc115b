"""File helpers shared by the exporters: they live in :mod:`sfsc_timm.atomic_io`, the one place files are written."""
from ..atomic_io import give_default_permissions  # noqa: F401
