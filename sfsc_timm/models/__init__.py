"""Registered SFSC models (importing this module registers them with timm) and the network classes."""
from .checkpoint import CheckpointError, CheckpointReader, read_checkpoint_config, save, widths_in_keys
from .embedding_net import EmbeddingNet, SwitchableEmbeddingNet
from .extract import extract
from .factory import create_sfsc_model
from .loading import load
from .model_set import ModelSet, is_model_set_folder
from .folders import checkpoint_kind, load_any
from .kinds import ModelKind, SfscModel, model_kind
from .mobilenetv3 import *  # noqa: F401,F403  (registers the models)
from .resnet import *  # noqa: F401,F403
