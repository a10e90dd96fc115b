""" One resolver of which file holds the weights, and one loader over it (docs/loading.md): every source kind, the run
folder's two checkpoints, and the layers the loading code sits in. """
import shutil
from typing import Optional

import pytest
import timm
import torch

import sfsc_timm
from sfsc_timm.inference import load_embedding_model
from sfsc_timm.models import (
    CheckpointError, CheckpointNotFoundError, CheckpointReader, ModelKind, ModelSet, SourceKind,
    find_checkpoint_folder, model_kind, resolve_source,
)
from sfsc_timm.models.checkpoint_io import RUN_LAST
from sfsc_timm.train.checkpointing import resolve_checkpoint

from conftest import SMALL_INPUT, SMALL_WIDTHS
from test_import_graph import import_graph

LAYERS = ('layers', 'models', 'losses', 'optim', 'data', 'eval', 'train', 'hub', 'inference index cli')  # low to high


def _same_output(a, b) -> bool:
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.fixture(scope='module')
def run(saved_net, tmp_path_factory):
    """A finished run folder of sfsc-timm train: its final export, and its last training checkpoint."""
    folder = tmp_path_factory.mktemp('run') / 'run'
    shutil.copytree(saved_net, folder / 'export')
    shutil.copytree(saved_net, folder / RUN_LAST)
    (folder / RUN_LAST / 'training_state.pt').write_bytes(b'')
    (folder / 'config.yaml').write_text('model: sfsc_resnet18\n')
    return folder


def test_every_source_kind_resolves(saved_net, run, tmp_path):
    lone = shutil.copy(saved_net / 'model.safetensors', tmp_path / 'weights.safetensors')
    expected = {
        str(saved_net): (SourceKind.FOLDER, saved_net),
        f'local-dir:{saved_net}': (SourceKind.FOLDER, saved_net),
        str(saved_net / 'model.safetensors'): (SourceKind.FOLDER, saved_net),  # the checkpoint holding it
        str(run): (SourceKind.FOLDER, run / 'export'),
        str(lone): (SourceKind.FILE, lone),
    }
    for source, (kind, path) in expected.items():
        where = resolve_source(source)
        assert (where.kind, where.path) == (kind, path), source
    assert resolve_source('hf-hub:org/name').kind is SourceKind.HUB
    assert resolve_source('sfsc_resnet18').kind is SourceKind.MODEL_NAME
    # --resume means the run's last training checkpoint, loading its final export: one rule, two subfolders
    assert resolve_checkpoint(run) == run / RUN_LAST
    assert find_checkpoint_folder(run) == run / 'export'


def test_refused_sources_name_the_fix(saved_net, tmp_path):
    torch.save({}, tmp_path / 'model.bin')
    with pytest.raises(CheckpointNotFoundError, match='For a Hub repository write hf-hub:org/name'):
        resolve_source('org/name')
    with pytest.raises(CheckpointError, match='pickled weights are never loaded'):
        resolve_source(tmp_path / 'model.bin')
    with pytest.raises(FileNotFoundError, match='does not exist; pass a checkpoint folder'):
        sfsc_timm.load(tmp_path / 'nothing')
    (tmp_path / 'run' / 'checkpoints' / 'best').mkdir(parents=True)  # a run still training: no export/ yet
    with pytest.raises(CheckpointNotFoundError, match=r'has not finished.*--resume .*checkpoints/'):
        sfsc_timm.load(tmp_path / 'run')


def test_a_run_folder_loads_its_export(small_net, run):
    net = sfsc_timm.load(run)
    assert model_kind(net) is ModelKind.SUPERNET and net.widths == SMALL_WIDTHS
    assert _same_output(sfsc_timm.load(run, width=0.25), sfsc_timm.extract(small_net, 0.25))
    assert _same_output(load_embedding_model(run), load_embedding_model(small_net))  # the full width by default
    # timm's file= override finds a folder's weights by the same rule
    sub = timm.create_model('sfsc_resnet18', width=0.5, widths=SMALL_WIDTHS, embed_dim=96, num_classes=7,
                            pretrained=True, pretrained_cfg_overlay=dict(file=str(run)))
    assert _same_output(sub, sfsc_timm.extract(small_net, 0.5))


def test_a_weights_file_without_config_loads_with_its_model_name(small_net, saved_net, tmp_path):
    lone = shutil.copy(saved_net / 'model.safetensors', tmp_path / 'weights.safetensors')
    with pytest.raises(CheckpointError, match=r"no config.json beside it.*model_name='sfsc_resnet50'"):
        sfsc_timm.load(lone)
    net = sfsc_timm.load(lone, model_name='sfsc_resnet18', widths=SMALL_WIDTHS, embed_dim=96, num_classes=7)
    for width in SMALL_WIDTHS:
        with net.width(width), small_net.width(width):
            assert _same_output(net, small_net)
    with pytest.raises(CheckpointError, match='names its architecture itself'):
        sfsc_timm.load('hf-hub:org/name', model_name='sfsc_resnet18')


def test_one_member_of_a_model_set_is_read_alone(tmp_path, monkeypatch):
    members = ModelSet.create('sfsc_resnet18', (0.5, 1.0), num_classes=3, embed_dim=16)
    members.save(tmp_path / 'set')
    read = []
    original = CheckpointReader.__init__

    def recording_init(self, path):
        read.append(path)
        original(self, path)

    monkeypatch.setattr(CheckpointReader, '__init__', recording_init)
    member = sfsc_timm.load(tmp_path / 'set', width=0.5)
    assert model_kind(member) is ModelKind.STATIC and member.active_width == 0.5
    assert read and all('width_0_5' in str(p) for p in read)
    assert _same_output(member, members.member(0.5))
    with pytest.raises(ValueError, match='width 0.25 is not one of the widths'):
        sfsc_timm.load(tmp_path / 'set', width=0.25)
    loaded = sfsc_timm.load(tmp_path / 'set')
    loaded.load_members_(tmp_path / 'set')  # resuming a model set reads each member's tensors into it
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), members.state_dict().values()))


def _layer(module: str) -> Optional[int]:
    """The rank of a module's package in :data:`LAYERS`; None for the shared top-level modules (errors, atomic_io)."""
    parts = module.split('.')
    return next((i for i, names in enumerate(LAYERS) if len(parts) > 1 and parts[1] in names.split()), None)


def test_no_package_imports_one_above_it():
    graph = import_graph()
    ranked = {m: _layer(m) for m in graph if _layer(m) is not None}
    upward = {(a, b) for a in ranked for b in graph[a] if b in ranked and ranked[b] > ranked[a]}
    assert not upward, sorted(upward)
    assert not any(b.startswith('sfsc_timm.hub') for a in graph if a.startswith('sfsc_timm.inference')
                   for b in graph[a])
