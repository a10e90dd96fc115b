"""sfsc-timm: switchable, self-compatible image embeddings (SFSC, Wu et al., CVPR 2023) for timm.

Importing the package registers the ``sfsc_*`` models with timm::

    import timm, sfsc_timm
    net = timm.create_model('sfsc_resnet50', num_classes=751)          # the switchable supernet
    sub = timm.create_model('local-dir:/path/to/export', width=0.25, pretrained=True)   # one static width
    sub = sfsc_timm.load('RUN_OR_CHECKPOINT', width=0.25)      # the same, from any source (docs/loading.md)
"""
from .layers import DEFAULT_WIDTHS
from .models import CheckpointError, EmbeddingNet, SwitchableEmbeddingNet, extract, load, load_embedding_model, save

__version__ = '0.1.0'


def __getattr__(name: str):
    # sfsc_timm.embed_images without importing datasets and pyarrow at `import sfsc_timm`
    if name == 'embed_images':
        from . import inference
        return getattr(inference, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
