"""Help text of every recipe key, read from the comments on ``TrainConfig``'s fields in train/config.py.

The comments are where the keys are documented (one place, next to the default); ``sfsc-timm train --help`` shows
them. A field's help is the comment block right above it (section rulers ``# --- x ---`` excluded) followed by the
comment at the end of its line.
"""
import inspect
import io
import re
import tokenize
from typing import Dict

_FIELD = re.compile(r'^\s+(\w+)\s*:')
_RULER = re.compile(r'^#\s*---')


def key_comments(cls: type) -> Dict[str, str]:
    """``{field name: its comment text}`` for the fields of the dataclass ``cls`` that have comments."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source shipped (a frozen or compiled-only install): no help, not an error
        return {}
    comments = {token.start[0]: token.string.lstrip('#').strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    fields = set(getattr(cls, '__dataclass_fields__', {}))
    found: Dict[str, str] = {}
    above = []
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith('#'):
            if not _RULER.match(stripped):
                above.append(comments.get(number, ''))
            continue
        match = _FIELD.match(line)
        if match and match.group(1) in fields:
            text = ' '.join(part for part in above + [comments.get(number, '')] if part)
            if text:
                found[match.group(1)] = text
        above = []
    return found
