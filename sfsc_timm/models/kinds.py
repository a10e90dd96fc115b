""" The three kinds of network sfsc_timm builds, told apart one way: by the class's declared ``kind``.

* ``SUPERNET``: :class:`~sfsc_timm.models.SwitchableEmbeddingNet`, one set of weights for every width, switched with
  ``set_width`` / ``width(w)``; its checkpoint is one folder.
* ``STATIC``: :class:`~sfsc_timm.models.EmbeddingNet` at one width (``extract``, ``create_model(..., width=w)``),
  plain timm layers; its checkpoint holds that width only (``model_args.width`` in config.json).
* ``MODEL_SET``: :class:`~sfsc_timm.models.ModelSet`, one static model per width trained separately (the
  independent / BCT / asymmetric baselines), switched like a supernet; saved as one folder per width.
"""
import enum
from typing import ClassVar

__all__ = ['ModelKind', 'SfscModel', 'model_kind']


class ModelKind(enum.Enum):
    SUPERNET = 'supernet'
    STATIC = 'static'
    MODEL_SET = 'model_set'

    @property
    def switchable(self) -> bool:
        """Whether it computes at several widths (``set_width``, ``width(w)``, ``widths``)."""
        return self is not ModelKind.STATIC


class SfscModel:
    """Base of every network class sfsc_timm builds; ``kind`` says which of the three it is."""

    kind: ClassVar[ModelKind]


def model_kind(net: object) -> ModelKind:
    """Which kind of sfsc_timm network ``net`` is.

    Raises:
        TypeError: ``net`` was not built by sfsc_timm.
    """
    if isinstance(net, SfscModel):
        return type(net).kind
    raise TypeError(f'{type(net).__name__} is not an sfsc_timm network; build one with timm.create_model(\'sfsc_...\') '
                    'or load one with sfsc_timm.load(FOLDER).')
