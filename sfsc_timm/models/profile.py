"""Size and speed of a model: parameters, multiply-accumulates and CPU latency (used by the demo, benchmarks, cards)."""
import statistics
import time
from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def count_gmacs(model: nn.Module, input_size: Sequence[int]) -> float:
    """Giga multiply-accumulates of one forward pass on an input of ``input_size`` (B, C, H, W)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(*input_size))
    model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9  # FlopCounterMode counts a multiply-add as two FLOPs


@torch.inference_mode()
def time_forward(model: nn.Module, x: torch.Tensor) -> float:
    """Seconds of one forward pass."""
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def interleaved_latency(models: Dict[str, nn.Module], x: torch.Tensor, repeats: int = 5,
                        warmup: int = 1) -> Dict[str, Dict[str, float]]:
    """Median and spread of forward latency, the models timed in turn so that machine noise hits them alike."""
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            time_forward(model, x)
    times: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(time_forward(model, x))
    return {name: dict(median_s=statistics.median(t), min_s=min(t), max_s=max(t)) for name, t in times.items()}
