"""Per-width size and speed of a supernet checkpoint, measured for its model card."""
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence, Tuple

import torch

from ..models import extract
from ..models.profile import count_gmacs, count_parameters, interleaved_latency

__all__ = ['WidthStats', 'Measurement', 'measure_widths', 'cpu_name']


@dataclass
class WidthStats:
    """One width's embedding model (static sub-model without the training classifier)."""
    width: float
    parameters: int
    gmacs: float
    latency_ms: float

    @property
    def gflops(self) -> float:
        return 2 * self.gmacs  # one multiply-accumulate = two floating-point operations


@dataclass
class Measurement:
    """Stats for every width and the conditions they were measured under."""
    widths: List[WidthStats]
    input_size: Tuple[int, int, int]
    batch_size: int
    repeats: int
    threads: int
    cpu: str
    torch_version: str

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out['input_size'] = list(self.input_size)
        return out


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown CPU'


@torch.inference_mode()
def measure_widths(net: torch.nn.Module, widths: Sequence[float], input_size: Sequence[int], batch_size: int = 1,
                   repeats: int = 20) -> Measurement:
    """Parameters, GMACs and CPU latency of the embedding model at each width of the supernet ``net``.

    Each width is the static sub-model ``extract(net, w)`` with its classifier removed (``reset_classifier(0)``), i.e.
    the model a deployment runs. Latency is the median over ``repeats`` forward passes of a ``batch_size`` batch at
    ``input_size`` on the CPU, the widths timed in turn so that machine noise hits them alike.
    """
    if repeats < 1 or batch_size < 1:
        raise ValueError(f'repeats and batch_size must be >= 1, got repeats={repeats}, batch_size={batch_size}.')
    input_size = tuple(int(s) for s in input_size)
    models = {}
    for width in widths:
        sub = extract(net, width).cpu().eval()
        sub.reset_classifier(0)
        models[width] = sub
    x = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    latency = interleaved_latency({str(w): m for w, m in models.items()}, x, repeats=repeats, warmup=1)
    stats = [WidthStats(width=float(w), parameters=count_parameters(m), gmacs=count_gmacs(m, (1, *input_size)),
                        latency_ms=1000 * latency[str(w)]['median_s']) for w, m in models.items()]
    return Measurement(widths=stats, input_size=input_size, batch_size=batch_size, repeats=repeats,
                       threads=torch.get_num_threads(), cpu=f'{cpu_name()} ({os.cpu_count()} logical cores)',
                       torch_version=torch.__version__)
