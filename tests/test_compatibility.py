"""The compatibility matrix of a supernet on a real Fashion-MNIST subset, and the ``sfsc-timm eval`` command."""
import json

import pytest
import timm
import torch

import sfsc_timm
from sfsc_timm.data import build_transforms, load_retrieval_data, with_image_transform
from sfsc_timm.eval import compatibility_matrix, retrieval_metrics
from sfsc_timm.eval.cli import main as eval_main

INPUT = (3, 32, 32)


@pytest.fixture(scope='module')
def fashion_subset():
    return load_retrieval_data('fashion_mnist', max_train=50, max_query=40, max_gallery=200)


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return timm.create_model('sfsc_resnet18', num_classes=10, widths=(0.25, 0.5, 0.75, 1.0),
                             pretrained_cfg_overlay=dict(input_size=INPUT)).eval()


def test_matrix_extracts_each_width_once(net, fashion_subset, monkeypatch):
    transform = build_transforms(net, train=False, crop_pct=1.0)
    query = with_image_transform(fashion_subset.query, transform)
    gallery = with_image_transform(fashion_subset.gallery, transform)
    passes = []
    original = type(net).forward_features

    def counting_forward_features(self, x):
        passes.append((self.active_width, x.shape[0]))
        return original(self, x)

    monkeypatch.setattr(type(net), 'forward_features', counting_forward_features)
    result = compatibility_matrix(net, query=query, gallery=gallery, batch_size=64, progress=False)
    images_per_width = {}
    for width, batch in passes:
        images_per_width[width] = images_per_width.get(width, 0) + batch
    assert images_per_width == {w: len(query) + len(gallery) for w in net.widths}  # once per width, no more
    assert result.widths == net.widths and len(result.matrix) == 4 and all(len(r) == 4 for r in result.matrix)
    assert all(0 < m <= 1 for row in result.matrix for m in row)
    assert net.active_width == 1.0  # switched back after extraction

    # Any cell equals retrieval_metrics on that pair's embeddings, computed directly (same batches of 64).
    def embed(dataset, width):
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        with torch.inference_mode(), net.width(width):
            return torch.cat([net.forward_head(original(net, chunk), pre_logits=True) for chunk in images.split(64)])

    direct = retrieval_metrics(query=embed(query, 0.25), gallery=embed(gallery, 1.0),
                               query_labels=fashion_subset.query['label'],
                               gallery_labels=fashion_subset.gallery['label'])
    assert result.matrix[0][3] == pytest.approx(direct['mAP'], abs=1e-5)


def test_matrix_of_one_model_per_width(net, fashion_subset):
    transform = build_transforms(net, train=False, crop_pct=1.0)
    models = {w: sfsc_timm.extract(net, w) for w in (0.5, 1.0)}
    query = with_image_transform(fashion_subset.query, transform)
    gallery = with_image_transform(fashion_subset.gallery, transform)
    static = compatibility_matrix(models, query=query, gallery=gallery, progress=False)
    switched = compatibility_matrix(net, query=query, gallery=gallery, widths=(0.5, 1.0), progress=False)
    assert torch.tensor(static.matrix).sub(torch.tensor(switched.matrix)).abs().max() < 1e-5
    with pytest.raises(ValueError, match=r'no model for widths \[0.25\]'):
        compatibility_matrix(models, query=query, gallery=gallery, widths=(0.25, 1.0), progress=False)


def test_eval_command_prints_the_matrix_and_writes_the_heatmap(net, tmp_path, capsys):
    sfsc_timm.save(net, tmp_path / 'ckpt')
    assert eval_main([str(tmp_path / 'ckpt'), '--max-query', '20', '--max-gallery', '100',
                      '--output', str(tmp_path / 'eval')]) == 0
    out = capsys.readouterr().out
    assert 'φ_1/16' in out and 'mean of matrix' in out
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert metrics['widths'] == [0.25, 0.5, 0.75, 1.0] and len(metrics['matrix']) == 4
    assert metrics['num_query'] == 20 and metrics['architecture'] == 'sfsc_resnet18'
    assert (tmp_path / 'eval' / 'compatibility.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
