""" sfsc-timm eval: checks its arguments and --output before any evaluation, says how many queries it skipped, and
accepts the folders export accepts. """
import json
import os
import shutil
import stat

import timm
import torch

import sfsc_timm
from sfsc_timm.eval import cli

from bad_inputs import _image, _reid


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    net = timm.create_model('sfsc_resnet18', num_classes=3, widths=(0.5, 1.0), embed_dim=16,
                            pretrained_cfg_overlay=dict(input_size=(3, 16, 16))).eval()
    return sfsc_timm.save(net, tmp_path / 'ckpt')


def test_output_is_checked_before_evaluating(tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError('evaluated before checking --output')

    monkeypatch.setattr(cli, 'compatibility_matrix', never)
    (tmp_path / 'taken').write_text('a file')
    ckpt = _checkpoint(tmp_path)
    assert cli.main([str(ckpt), '--output', str(tmp_path / 'taken')]) == 2
    assert 'is a file, not a folder' in capsys.readouterr().err


def test_skipped_queries_are_counted_and_a_run_folder_is_accepted(tmp_path, capsys):
    data = _reid(tmp_path / 'data')
    # two queries of an identity the gallery does not hold: they cannot be ranked and are skipped
    for k in range(2):
        _image(data / 'query' / f'0077_c1s1_{k:06d}_00.png', seed=700 + k)
    run = tmp_path / 'run'
    shutil.copytree(_checkpoint(tmp_path), run / 'export')
    previous_umask = os.umask(0o022)
    try:
        assert cli.main([str(run), '--data', str(data), '--output', str(tmp_path / 'out')]) == 0
    finally:
        os.umask(previous_umask)
    # shared like any other tool's output: 0644 / 0755 under umask 022
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / 'out').iterdir()} == \
        {'metrics.json': 0o644, 'compatibility.png': 0o644}
    assert stat.S_IMODE((tmp_path / 'out').stat().st_mode) == 0o755
    out = capsys.readouterr().out
    assert '2 of 6 queries skipped (no gallery item of their identity from another camera); 4 evaluated' in out
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['num_skipped_queries'] == 2 and metrics['num_query'] == 6


def _query_gallery_folder(root, per_class=(1, 3)):
    # a deployed model's new camera: only query/ and gallery/, one sub-folder per identity, no training split
    for split, count in zip(('query', 'gallery'), per_class):
        for c, label in enumerate(('a', 'b', 'c')):
            (root / split / label).mkdir(parents=True)
            for k in range(count):
                _image(root / split / label / f'{k}.png', seed=100 * c + 10 * len(split) + k)
    return root


def test_eval_needs_no_training_split(tmp_path, capsys):
    data = _query_gallery_folder(tmp_path / 'camera')
    ckpt = _checkpoint(tmp_path)
    for extra in ([], ['--query-split', 'query', '--gallery-split', 'gallery']):
        out = tmp_path / f'out{len(extra)}'
        assert cli.main([str(ckpt), '--data', f'imagefolder:{data}', *extra, '--output', str(out)]) == 0, \
            capsys.readouterr().err
        metrics = json.loads((out / 'metrics.json').read_text())
        assert metrics['num_query'] == 3 and metrics['num_gallery'] == 9


def test_img_size_takes_height_and_width(tmp_path, capsys):
    data = _query_gallery_folder(tmp_path / 'camera')
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / 'out'
    argv = [str(ckpt), '--data', f'imagefolder:{data}', '--img-size', '24', '16', '--output', str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / 'metrics.json').read_text())['input_size'] == [24, 16]
    default = tmp_path / 'default'
    assert cli.main([str(ckpt), '--data', f'imagefolder:{data}', '--output', str(default)]) == 0
    assert json.loads((default / 'metrics.json').read_text())['input_size'] == [16, 16]  # the checkpoint's own
