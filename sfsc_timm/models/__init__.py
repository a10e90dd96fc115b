"""Registered SFSC models (importing this module registers them with timm), the network classes, and checkpoints:
``save`` writes one, ``load`` (sfsc_timm.models.checkpoint_io) reads any source."""
from .checkpoint import CheckpointError, CheckpointReader, read_checkpoint_config, save, widths_in_keys
from .checkpoint_io import (
    CheckpointNotFoundError, CheckpointSource, SourceKind, checkpoint_kind, find_checkpoint_folder, load,
    resolve_source,
)
from .embedding_model import load_embedding_model
from .embedding_net import EmbeddingNet, SwitchableEmbeddingNet
from .extract import extract
from .factory import create_sfsc_model
from .model_set import ModelSet, is_model_set_folder
from .kinds import ModelKind, SfscModel, model_kind
from .mobilenetv3 import *  # noqa: F401,F403  (registers the models)
from .resnet import *  # noqa: F401,F403
