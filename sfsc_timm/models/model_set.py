"""One static model per width, trained separately: the baselines that do not share weights (independent, BCT,
asymmetric). It switches like a supernet, so the trainer and the compatibility matrix treat both alike."""
import re
from pathlib import Path
from typing import Dict, Sequence, Union

import timm
import torch
from torch import nn

from ..layers import check_width, check_widths, key_width, width_key
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointReader, save
from .embedding_net import EmbeddingNet, WidthSwitching
from .kinds import ModelKind, SfscModel

MEMBER_PREFIX = 'width_'
_MEMBER_NAME = re.compile(rf'{MEMBER_PREFIX}\d+(_\d+)?')  # width_1, width_0_25


class ModelSet(nn.Module, WidthSwitching, SfscModel):
    """Static sub-models, one per width, sharing no parameters, each with its own classifier.

    ``set_width`` / ``width`` choose the member that ``forward_features``, ``forward_head``, ``forward`` and ``head``
    use. Saved as one checkpoint folder per member (``width_0_25/`` ...); ``sfsc_timm.load`` loads the folder (or one
    member of it).
    """

    kind = ModelKind.MODEL_SET

    def __init__(self, members: Dict[float, EmbeddingNet]):
        super().__init__()
        self.widths = check_widths(members)
        dims = {m.embed_dim for m in members.values()}
        if len(dims) != 1:
            raise ValueError(f'all members must embed into the same D to be compared, got {sorted(dims)}.')
        self.members = nn.ModuleDict({width_key(w): members[w] for w in self.widths})
        self.embed_dim = self.head_hidden_size = dims.pop()
        self.num_classes = members[1.0].num_classes
        self.in_chans = members[1.0].in_chans
        self.pretrained_cfg = getattr(members[1.0], 'pretrained_cfg', {})
        self._width = 1.0

    @classmethod
    def create(cls, model_name: str, widths: Sequence[float], **kwargs) -> 'ModelSet':
        """Independently initialised ``timm.create_model(model_name, width=w, **kwargs)`` for every width."""
        widths = check_widths(widths)
        return cls({w: timm.create_model(model_name, width=w, widths=widths, **kwargs) for w in widths})

    def member(self, width: float) -> EmbeddingNet:
        return self.members[width_key(width)]

    @property
    def active_width(self) -> float:
        return self._width

    @property
    def num_features(self) -> int:
        """Channels of the active member's ``forward_features`` output (timm's meaning)."""
        return self.member(self._width).num_features

    @property
    def head(self) -> nn.Module:
        return self.member(self._width).head

    def set_width(self, width: float) -> 'ModelSet':
        self._width = check_width(width, self.widths, owner='this model set')
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.member(self._width).forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.member(self._width).forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member(self._width)(x)

    def save(self, folder: Union[str, Path]) -> Path:
        """One ``sfsc_timm.save`` checkpoint folder per member inside ``folder``."""
        folder = Path(folder)
        for w in self.widths:
            save(self.member(w), folder / member_name(w))
        return folder

    def load_members_(self, folder: Union[str, Path]) -> None:
        """Load saved members' weights into this set in place (every member must be there, every key must fit)."""
        for w in self.widths:
            # the members are built already (resuming a run): only their tensors are read
            with CheckpointReader(Path(folder) / member_name(w) / WEIGHTS_NAME) as reader:
                self.member(w).load_state_dict({key: reader.read(key) for key in reader.keys()})


def member_name(width: float) -> str:
    """The folder of the member at ``width`` inside a saved model set (``width_0_25``)."""
    return f'{MEMBER_PREFIX}{width_key(width)}'


def member_folders(folder: Union[str, Path]) -> Dict[float, Path]:
    """The member folders (``width_*``) of a saved model set, by width (ascending); empty when it is none."""
    found = {key_width(p.name[len(MEMBER_PREFIX):]): p for p in Path(folder).glob(f'{MEMBER_PREFIX}*')
             if _MEMBER_NAME.fullmatch(p.name) and p.is_dir()}
    return dict(sorted(found.items()))


def is_model_set_folder(folder: Union[str, Path]) -> bool:
    """Whether ``folder`` holds a saved model set: a member folder with its checkpoint's config.json."""
    return any((p / CONFIG_NAME).is_file() for p in member_folders(folder).values())
