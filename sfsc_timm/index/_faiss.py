"""faiss, imported on first use: it is an optional dependency (``pip install sfsc-timm[index]``)."""
from types import ModuleType

from ..errors import UsageError

__all__ = ['MissingDependency', 'INSTALL_HINT', 'import_faiss']

INSTALL_HINT = 'pip install sfsc-timm[index]'


class MissingDependency(UsageError):
    """An optional package the command needs is not installed; the message names the install line."""


def import_faiss() -> ModuleType:
    """The ``faiss`` module.

    Raises:
        MissingDependency: faiss is not installed, naming ``pip install sfsc-timm[index]``.
    """
    try:
        import faiss
    except ImportError:
        raise MissingDependency(f'the gallery index needs faiss, which is not installed: {INSTALL_HINT} '
                                '(or pip install faiss-cpu)') from None
    return faiss
