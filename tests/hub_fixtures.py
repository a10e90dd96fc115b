"""A small trained-looking run, evaluated for real, and its Hub export: shared by the tests/test_hub_*.py modules.

The run folder has the trainer's layout (``RUN/config.yaml`` recipe, ``RUN/export`` with the checkpoint, metrics.json
and heatmap); metrics.json comes from ``sfsc-timm eval`` on a small Fashion-MNIST subset. Built once per session.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import pytest
import timm
import torch
import yaml

import sfsc_timm
from sfsc_timm.eval.cli import main as eval_main
from sfsc_timm.hub.export import main as export_main

WIDTHS = (0.25, 0.5, 1.0)
INPUT_SIZE = (3, 32, 32)
EMBED_DIM = 64
NUM_CLASSES = 10
REPO_ID = 'sfsc-tests/sfsc_resnet18.fashion_mnist'
RECIPE = dict(model='sfsc_resnet18', widths=list(WIDTHS), embed_dim=EMBED_DIM, input_size=list(INPUT_SIZE),
              method='sfsc', dataset='fashion_mnist', epochs=1, batch_size=32, lr=0.1)


@dataclass
class HubRun:
    net: torch.nn.Module  # the original supernet, in memory
    run_dir: Path  # trainer layout: config.yaml + export/
    export_dir: Path  # `sfsc-timm export RUN_DIR OUT_DIR --repo-id REPO_ID`


_BUILT: Dict[Tuple[str, str], HubRun] = {}


def _trained_looking_net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = timm.create_model('sfsc_resnet18', num_classes=NUM_CLASSES, widths=WIDTHS, embed_dim=EMBED_DIM,
                            pretrained_cfg_overlay=dict(input_size=INPUT_SIZE))
    net.train()
    with torch.no_grad():
        for width in net.widths:  # running statistics that differ per width, as after training
            with net.width(width):
                net(torch.randn(8, *INPUT_SIZE) * (1 + width) + 0.3)
    return net.eval()


def build_hub_run(tmp_path_factory: pytest.TempPathFactory) -> HubRun:
    key = ('hub_run', str(tmp_path_factory.getbasetemp()))
    if key not in _BUILT:
        root = tmp_path_factory.mktemp('hub_run')
        net = _trained_looking_net()
        run_dir = root / 'run'
        sfsc_timm.save(net, run_dir / 'export')
        (run_dir / 'config.yaml').write_text(yaml.safe_dump(RECIPE, sort_keys=False))
        assert eval_main([str(run_dir / 'export'), '--max-query', '20', '--max-gallery', '100', '--batch-size', '64',
                          '--output', str(run_dir / 'export')]) == 0
        export_dir = root / 'hub'
        assert export_main([str(run_dir), str(export_dir), '--repo-id', REPO_ID, '--latency-repeats', '3']) == 0
        _BUILT[key] = HubRun(net=net, run_dir=run_dir, export_dir=export_dir)
    return _BUILT[key]


def folder_bytes(folder: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def embeddings(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().forward_head(model.forward_features(x), pre_logits=True)
