"""File helpers shared by the exporters."""
import os
from pathlib import Path
from typing import Union


def give_default_permissions(path: Union[str, Path]) -> None:
    """Give a file or folder made by ``tempfile`` (private, 0600 / 0700) the permissions a new one would get."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)
