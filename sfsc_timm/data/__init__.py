""" Retrieval data for sfsc-timm: Hugging Face `datasets` with `image`, `label` and optional `camera` columns. """
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from .hub import load_hub_retrieval, standardize_columns
from .glyphs import build_glyph_dataset, find_glyph_faces, load_glyphs
from .load import BUILT_IN_SOURCES, load_retrieval_data, open_set_split, subset_retrieval_data
from .reid_folders import load_reid_folder
from .retrieval_data import RetrievalData
from .samplers import PKSampler
from .splits import balanced_subset, column_array, first_per_class, pick_queries
from .validation import VAL_SPLITS, ValidationSplit, carve_validation
from .torch_dataset import TransformedImageDataset, with_image_transform
from .image_mode import to_rgb
from .transforms import REID_TRAIN_DEFAULTS, ToRGB, build_transforms, resolve_data_cfg

__all__ = [
    'RetrievalData', 'load_retrieval_data', 'subset_retrieval_data', 'load_fashion_mnist', 'load_reid_folder',
    'load_hub_retrieval', 'standardize_columns', 'read_idx', 'FASHION_MNIST_CLASSES', 'column_array', 'first_per_class',
    'balanced_subset', 'build_transforms', 'resolve_data_cfg', 'ToRGB', 'REID_TRAIN_DEFAULTS',
    'TransformedImageDataset', 'with_image_transform', 'PKSampler', 'pick_queries', 'open_set_split',
    'BUILT_IN_SOURCES', 'load_glyphs', 'build_glyph_dataset', 'find_glyph_faces', 'VAL_SPLITS', 'ValidationSplit',
    'carve_validation', 'to_rgb',
]
