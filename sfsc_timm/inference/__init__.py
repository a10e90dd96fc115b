"""Inference: the embedding model of one width, and ``sfsc-timm embed`` (images -> Parquet of unit-norm embeddings)."""
from .embed import EmbedResult, embed_images, read_embeddings
from .model import load_embedding_model
from .sources import DatasetImages, FolderImages, ImageSource, open_images
