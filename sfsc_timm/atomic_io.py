"""Small files written atomically: a temporary file beside the target, then one rename, so readers (and a crash)
only ever see the old file or the whole new one."""
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union


def write_text_atomically(path: Union[str, Path], text: str) -> Path:
    """Replace ``path`` with ``text`` (the folder is created if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(handle, 'w') as file:
            file.write(text)
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.remove(temp_name)
        raise
    return path


def write_json_atomically(path: Union[str, Path], obj: Any, default: Optional[Callable[[Any], Any]] = None) -> Path:
    """Replace ``path`` with ``obj`` as indented JSON; ``default`` converts what json cannot (as ``json.dumps``)."""
    return write_text_atomically(path, json.dumps(obj, indent=2, default=default) + '\n')
