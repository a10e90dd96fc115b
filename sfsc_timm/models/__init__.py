"""Registered SFSC models (importing this module registers them with timm) and the network classes."""
from .checkpoint import CheckpointError, CheckpointReader, save, widths_in_keys
from .embedding_net import EmbeddingNet, SwitchableEmbeddingNet
from .extract import extract
from .factory import create_sfsc_model
from .loading import load
from .model_set import ModelSet, is_model_set_folder
from .mobilenetv3 import *  # noqa: F401,F403  (registers the models)
from .resnet import *  # noqa: F401,F403
