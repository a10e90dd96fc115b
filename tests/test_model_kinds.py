""" One way to tell a supernet, a static sub-model and a per-width model set apart: the class's declared kind. """
import pytest
from torch import nn

import sfsc_timm
from sfsc_timm.models import CheckpointError, ModelKind, ModelSet, checkpoint_kind, model_kind, read_checkpoint_config


def test_every_network_declares_its_kind(small_net, saved_net, tmp_path):
    static = sfsc_timm.extract(small_net, 0.5)
    members = ModelSet.create('sfsc_resnet18', (0.5, 1.0), num_classes=3, embed_dim=16)
    assert model_kind(small_net) is ModelKind.SUPERNET and ModelKind.SUPERNET.switchable
    assert model_kind(static) is ModelKind.STATIC and not ModelKind.STATIC.switchable
    assert model_kind(members) is ModelKind.MODEL_SET and ModelKind.MODEL_SET.switchable
    with pytest.raises(TypeError, match='not an sfsc_timm network'):
        model_kind(nn.Linear(2, 2))
    # and the folders they are saved in
    sfsc_timm.save(static, tmp_path / 'static')
    members.save(tmp_path / 'members')
    assert checkpoint_kind(saved_net) is ModelKind.SUPERNET
    assert checkpoint_kind(tmp_path / 'static') is ModelKind.STATIC
    assert checkpoint_kind(tmp_path / 'members') is ModelKind.MODEL_SET
    assert model_kind(sfsc_timm.load(tmp_path / 'members')) is ModelKind.MODEL_SET
    assert model_kind(sfsc_timm.load(tmp_path / 'members', width=0.5)) is ModelKind.STATIC
    assert model_kind(sfsc_timm.load(saved_net, width=0.25)) is ModelKind.STATIC
    with pytest.raises(CheckpointError, match='not a checkpoint folder'):
        checkpoint_kind(tmp_path)


def test_a_truncated_config_json_is_named(saved_net, tmp_path):
    folder = tmp_path / 'ckpt'
    folder.mkdir()
    (folder / 'model.safetensors').write_bytes((saved_net / 'model.safetensors').read_bytes())
    text = (saved_net / 'config.json').read_text()
    (folder / 'config.json').write_text(text[:len(text) // 2])
    for call in (read_checkpoint_config, sfsc_timm.load, checkpoint_kind):
        with pytest.raises(CheckpointError, match=r'config.json is not valid JSON .* truncated or corrupt'):
            call(folder)
