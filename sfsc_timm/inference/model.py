"""``load_embedding_model``: the embedding model of one width (defined with the loader, sfsc_timm.models)."""
from ..models.embedding_model import load_embedding_model

__all__ = ['load_embedding_model']
