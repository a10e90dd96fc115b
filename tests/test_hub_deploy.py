"""``sfsc-timm export-width``: one width as an embedding model in ONNX / TorchScript / torch.export, checked."""
import json

import numpy as np
import pytest
import torch

import sfsc_timm
from sfsc_timm.hub import DeployError, export_width
from sfsc_timm.hub import deploy
from sfsc_timm.hub.deploy import main as deploy_main

from hub_fixtures import EMBED_DIM, INPUT_SIZE, build_hub_run, embeddings

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


@pytest.fixture(scope='module')
def hub_run(tmp_path_factory):
    return build_hub_run(tmp_path_factory)  # built once per session, shared by the test_hub_* modules


@pytest.fixture
def batch():
    return torch.randn(5, *INPUT_SIZE, generator=torch.Generator().manual_seed(2))


def test_onnx_embeddings_match_pytorch(hub_run, tmp_path, batch):
    onnx = pytest.importorskip('onnx')
    onnxruntime = pytest.importorskip('onnxruntime')
    result = export_width(hub_run.run_dir, 0.25, 'onnx', tmp_path / 'w025.onnx')
    assert result.max_abs_diff < 1e-4 and result.checked_with == 'onnxruntime' and result.embed_dim == EMBED_DIM
    # independently of the command's own check: onnxruntime on a new batch size vs the original supernet's width
    session = onnxruntime.InferenceSession(str(result.path), providers=['CPUExecutionProvider'])
    got = session.run(['embeddings'], {'images': batch.numpy()})[0]
    expected = embeddings(sfsc_timm.extract(hub_run.net, 0.25), batch).numpy()
    assert got.shape == (5, EMBED_DIM) and np.abs(got - expected).max() < 1e-4
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta['sfsc.width'] == '0.25' and json.loads(meta['sfsc.input_size']) == list(INPUT_SIZE)
    assert json.loads(meta['sfsc.mean']) == list(hub_run.net.pretrained_cfg['mean'])


@pytest.mark.parametrize('fmt, load', [
    ('torchscript', lambda path: torch.jit.load(str(path))),
    ('export', lambda path: torch.export.load(str(path)).module()),
])
def test_torchscript_and_torch_export(hub_run, tmp_path, batch, fmt, load):
    result = export_width(hub_run.run_dir / 'export', 0.5, fmt, tmp_path / f'w05{deploy.FORMATS[fmt]}')
    assert result.max_abs_diff < 1e-4
    expected = embeddings(sfsc_timm.extract(hub_run.net, 0.5), batch)
    with torch.no_grad():
        assert torch.allclose(load(result.path)(batch), expected, atol=1e-5)


def test_an_export_that_does_not_match_writes_nothing(hub_run, tmp_path, monkeypatch):
    exporter = deploy._EXPORTERS['torchscript']

    def off_by_one(model, sample, path, metadata):  # an exporter whose model computes something else
        run = exporter(model, sample, path, metadata)
        return lambda x: run(x) + 1

    monkeypatch.setitem(deploy._EXPORTERS, 'torchscript', off_by_one)
    with pytest.raises(DeployError, match='differs from PyTorch by up to 1 .*nothing was written'):
        export_width(hub_run.run_dir, 0.5, 'torchscript', tmp_path / 'bad.pt')
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_command_line(hub_run, tmp_path, capsys):
    assert deploy_main([str(hub_run.run_dir), '--width', '1.0', '--format', 'torchscript',
                        '--output', str(tmp_path / 'full.pt')]) == 0
    out = capsys.readouterr().out
    assert 'max abs diff vs PyTorch' in out and f'embeddings (B, {EMBED_DIM})' in out
    assert deploy_main([str(hub_run.run_dir), '--width', '0.75', '--output', str(tmp_path / 'x.onnx')]) == 2
    assert 'width 0.75 is not one of the widths (0.25, 0.5, 1.0)' in capsys.readouterr().err
    assert deploy_main(['someone/repo', '--width', '0.5']) == 2
    assert 'hf-hub:someone/repo' in capsys.readouterr().err
