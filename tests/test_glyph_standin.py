""" The SFSC paper's protocol on the glyph benchmark: the stand-in for ImageNet weights
(benchmarks/experiments/glyph_standin.py), a plain timm checkpoint, and a fine-tune that starts from it through
``pretrained_file``. """
import importlib.util
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from sfsc_timm.data.glyphs import DEFAULT_CODEPOINTS
from sfsc_timm.train.cli import main

_SCRIPT = Path(__file__).parents[1] / 'benchmarks' / 'experiments' / 'glyph_standin.py'
_SPEC = importlib.util.spec_from_file_location('glyph_standin', _SCRIPT)
glyph_standin = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(glyph_standin)

# a few characters past the benchmark's, a few steps: seconds
FEW_CODEPOINTS = range(glyph_standin.STANDIN_CODEPOINTS.start, glyph_standin.STANDIN_CODEPOINTS.start + 24)
SMALL = dict(num_classes=4, epochs=1, batch_size=16)


@pytest.fixture(scope='module')
def standin(tmp_path_factory) -> Path:
    return glyph_standin.build_standin(tmp_path_factory.mktemp('standin') / 'standin', FEW_CODEPOINTS,
                                       evaluate=False, **SMALL)


def test_the_standin_is_a_plain_timm_checkpoint_of_characters_the_benchmark_never_holds(standin):
    record = json.loads((standin / 'standin.json').read_text())
    assert record['arguments']['codepoints'][0] >= DEFAULT_CODEPOINTS.stop  # past the training and test characters
    assert record['num_images'] == 4 * 36 and record['steps'] == 144 // 16  # 4 characters in each of the 36 faces
    net = timm.create_model('resnet10t', pretrained=True, num_classes=4,
                            pretrained_cfg_overlay=dict(file=str(standin / 'model.safetensors')))
    saved = load_file(str(standin / 'model.safetensors'))
    assert set(saved) == set(net.state_dict())  # timm's own network, key for key
    assert torch.equal(net.state_dict()['conv1.0.weight'], saved['conv1.0.weight'])
    assert json.loads((standin / 'config.json').read_text())['architecture'] == 'resnet10t'


def test_the_standin_is_built_once_and_refuses_the_benchmarks_own_characters(standin):
    before = (standin / 'model.safetensors').stat().st_mtime_ns
    assert glyph_standin.build_standin(standin, FEW_CODEPOINTS, evaluate=False, **SMALL) == standin
    assert (standin / 'model.safetensors').stat().st_mtime_ns == before  # cached: not trained again
    with pytest.raises(ValueError, match='past the benchmark'):
        glyph_standin.build_standin(standin.parent / 'other', DEFAULT_CODEPOINTS, evaluate=False, **SMALL)


def test_a_fine_tune_through_pretrained_file_starts_from_the_plain_checkpoints_weights(standin, tmp_path):
    # learning rate 0 throughout: every convolution of the run's full width is still the stand-in's when it ends
    run = tmp_path / 'run'
    args = ['-c', 'sfsc_resnet18_fashion_mnist', '--model', 'sfsc_resnet10t', '--pretrained', '--pretrained-file',
            str(standin), '--widths', '0.5', '1.0', '--embed-dim', '16', '--input-size', '3', '16', '16',
            '--max-train', '48', '--batch-size', '16', '--epochs', '1', '--lr', '0', '--warmup-epochs', '0',
            '--min-lr', '0', '--val-max-query', '10', '--val-max-gallery', '20', '--eval-max-query', '10',
            '--eval-max-gallery', '20', '--no-progress', '--output', str(run)]
    assert main(args) == 0
    plain = load_file(str(standin / 'model.safetensors'))
    trained = load_file(str(run / 'export' / 'model.safetensors'))
    convolutions = [key for key in plain if key.endswith('.weight') and plain[key].dim() == 4]
    assert len(convolutions) > 5
    for key in convolutions:
        assert torch.equal(trained[f'backbone.{key}'], plain[key]), key
    # the same run with the default learning rate moves them: the check above can fail
    assert main([*args[:args.index('--lr')], '--warmup-epochs', '0', *args[args.index('--min-lr'):-1],
                 str(tmp_path / 'trained')]) == 0
    moved = load_file(str(tmp_path / 'trained' / 'export' / 'model.safetensors'))
    assert not torch.equal(moved['backbone.conv1.0.weight'], plain['conv1.0.weight'])
