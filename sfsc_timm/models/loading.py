"""``sfsc_timm.load``: one call for a checkpoint folder or Hub id, with errors that say how to fix them."""
from pathlib import Path
from typing import Optional, Union

import timm
from torch import nn

from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, read_checkpoint_config


def load(source: Union[str, Path], width: Optional[float] = None, **kwargs) -> nn.Module:
    """Load the supernet (``width=None``) or one static width from a checkpoint folder or a Hub repository.

    Args:
        source: a folder written by ``sfsc_timm.save`` (optionally prefixed ``local-dir:``) or ``hf-hub:ORG/NAME``.
        width: None for the supernet, or one of the checkpoint's widths.
        **kwargs: passed to ``timm.create_model``.
    """
    source = str(source)
    if source.startswith(('hf-hub:', 'hf_hub:')):
        return timm.create_model(source, pretrained=True, width=width, **kwargs)
    folder = Path(source.removeprefix('local-dir:'))
    if folder.is_file():  # e.g. CK/model.safetensors: the checkpoint is the folder holding it
        raise CheckpointError(f'{folder} is a file; sfsc_timm.load takes the checkpoint folder holding it'
                              f'{f" ({folder.parent})" if folder.name == WEIGHTS_NAME else ""}, written by '
                              'sfsc_timm.save(net, folder).')
    if not folder.is_dir():
        raise FileNotFoundError(f'Checkpoint folder {folder} does not exist; pass a folder written by '
                                "sfsc_timm.save(net, folder) or a Hub id 'hf-hub:ORG/NAME'.")
    if (folder / CONFIG_NAME).is_file():
        read_checkpoint_config(folder)  # a truncated config.json is named here, not deep inside timm
    else:
        raise CheckpointError(
            f'{folder} has no {CONFIG_NAME}, so the architecture and widths are unknown. Re-save the supernet with '
            "sfsc_timm.save(net, folder), or name them yourself: timm.create_model('sfsc_resnet50', pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='{folder / WEIGHTS_NAME}'), widths=..., embed_dim=..., "
            "num_classes=...).")
    return timm.create_model(f'local-dir:{folder}', pretrained=True, width=width, **kwargs)
