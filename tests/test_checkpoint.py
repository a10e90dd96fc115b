"""One checkpoint for every width: save, load any width (reading only its slices), and refuse what does not fit."""
import json
import os
import shutil

import pytest
import timm
import torch
from timm.models import save_for_hf

import sfsc_timm
from sfsc_timm.models import CheckpointError, CheckpointReader

from conftest import SMALL_INPUT, SMALL_WIDTHS


def _assert_same(model_a, model_b):
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        assert torch.equal(model_a.eval()(x), model_b.eval()(x))
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_folder_layout(saved_net):
    assert sorted(p.name for p in saved_net.iterdir()) == ['config.json', 'model.safetensors']
    config = json.loads((saved_net / 'config.json').read_text())
    assert config['architecture'] == 'sfsc_resnet18' and config['num_classes'] == 7 and config['num_features'] == 512
    assert config['model_args'] == dict(widths=list(SMALL_WIDTHS), embed_dim=96, in_chans=3, global_pool='avg')
    assert config['pretrained_cfg']['mean'] and config['pretrained_cfg']['input_size'] == [3, 256, 128]


@pytest.mark.parametrize('width', SMALL_WIDTHS)
def test_every_width_loads_from_one_folder(small_net, saved_net, width):
    sub = timm.create_model(f'local-dir:{saved_net}', width=width, pretrained=True)
    _assert_same(sub, sfsc_timm.extract(small_net, width))
    assert sub.pretrained_cfg['source'] == 'local-dir'


def test_supernet_loads_whole(small_net, saved_net):
    net = sfsc_timm.load(saved_net)
    assert net.widths == SMALL_WIDTHS
    for width in SMALL_WIDTHS:
        with net.width(width), small_net.width(width):
            _assert_same(net, small_net)


def test_file_overlay_and_timm_save_for_hf(small_net, saved_net, tmp_path):
    sub = timm.create_model('sfsc_resnet18', width=0.5, widths=SMALL_WIDTHS, embed_dim=96, num_classes=7,
                            pretrained=True, pretrained_cfg_overlay=dict(file=str(saved_net / 'model.safetensors')))
    _assert_same(sub, sfsc_timm.extract(small_net, 0.5))
    save_for_hf(small_net, tmp_path / 'timm', safe_serialization=True)
    sub = timm.create_model(f'local-dir:{tmp_path / "timm"}', width=0.25, pretrained=True)
    _assert_same(sub, sfsc_timm.extract(small_net, 0.25))


def test_static_sub_model_checkpoint_round_trip(small_net, tmp_path):
    sub = sfsc_timm.extract(small_net, 0.5)
    sfsc_timm.save(sub, tmp_path / 'half')
    _assert_same(sfsc_timm.load(tmp_path / 'half'), sub)
    with pytest.raises(CheckpointError, match='holds only the static sub-model at width 0.5; pass width=0.5'):
        sfsc_timm.load(tmp_path / 'half', width=0.25)


def test_hub_id_through_offline_cache(small_net, saved_net, tmp_path, monkeypatch):
    # Lay the folder out as huggingface_hub's cache does for a downloaded repo, then load it with the Hub offline.
    commit = '0' * 40
    repo = tmp_path / 'hub' / 'models--sfsc--resnet18-test'
    shutil.copytree(saved_net, repo / 'snapshots' / commit)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', True)
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_CACHE', str(tmp_path / 'hub'))
    for width in SMALL_WIDTHS:
        sub = timm.create_model('hf-hub:sfsc/resnet18-test', width=width, pretrained=True)
        _assert_same(sub, sfsc_timm.extract(small_net, width))


def test_loading_a_width_reads_only_its_slices(saved_net, monkeypatch):
    read_bytes = []
    original = CheckpointReader.read

    def counting_read(self, key, index=()):
        tensor = original(self, key, index)
        read_bytes.append(tensor.numel() * tensor.element_size())
        return tensor

    monkeypatch.setattr(CheckpointReader, 'read', counting_read)
    timm.create_model(f'local-dir:{saved_net}', width=0.25, pretrained=True)
    narrow = sum(read_bytes)
    read_bytes.clear()
    timm.create_model(f'local-dir:{saved_net}', width=1.0, pretrained=True)
    full = sum(read_bytes)
    file_size = os.path.getsize(saved_net / 'model.safetensors')
    assert full < file_size  # even width 1.0 skips the narrow widths' statistics
    assert narrow < 0.12 * full, (narrow, full)


def test_save_never_half_overwrites(small_net, tmp_path, monkeypatch):
    folder = tmp_path / 'ckpt'
    sfsc_timm.save(small_net, folder)
    before = (folder / 'model.safetensors').read_bytes()

    def failing_save(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr('timm.models.save_for_hf', failing_save)
    with pytest.raises(OSError, match='disk full'):
        sfsc_timm.save(small_net, folder)
    assert (folder / 'model.safetensors').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt']  # no staging folder left behind


# --- bad input: each error names the problem and the fix ---

def test_untrained_width(saved_net):
    with pytest.raises(ValueError, match=r'width 0.75 is not one of the widths \(0.25, 0.5, 1.0\)'):
        timm.create_model(f'local-dir:{saved_net}', width=0.75, pretrained=True)


def test_checkpoint_without_the_width_statistics(saved_net):
    # The caller claims the default width set; the file has no BatchNorm statistics for 0.75.
    with pytest.raises(CheckpointError, match=r'statistics for widths \(0.25, 0.5, 1.0\) only; \(0.75,\) is not'):
        timm.create_model('sfsc_resnet18', width=0.75, embed_dim=96, num_classes=7, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(saved_net)))


def test_width_set_mismatch(saved_net):
    with pytest.raises(CheckpointError, match=r'widths \(0.25, 0.5, 1.0\).*widths=\(0.25, 0.5, 1.0\)'):
        timm.create_model('sfsc_resnet18', widths=(0.5, 1.0), embed_dim=96, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(saved_net)))


def test_other_architecture(saved_net):
    with pytest.raises(CheckpointError, match='does not fit sfsc_resnet34.*another architecture'):
        timm.create_model('sfsc_resnet34', width=0.5, widths=SMALL_WIDTHS, embed_dim=96, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(saved_net)))
    with pytest.raises(CheckpointError, match='does not fit sfsc_resnet34'):
        timm.create_model('sfsc_resnet34', widths=SMALL_WIDTHS, embed_dim=96, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(saved_net)))


def test_other_embedding_size(saved_net):
    with pytest.raises(CheckpointError, match='D=96 dimensions.*embed_dim=128. Pass embed_dim=96'):
        timm.create_model(f'local-dir:{saved_net}', width=0.5, embed_dim=128, pretrained=True)


def test_other_class_count_gets_a_new_classifier(small_net, saved_net):
    sub = timm.create_model(f'local-dir:{saved_net}', width=0.5, num_classes=3, pretrained=True).eval()
    ref = sfsc_timm.extract(small_net, 0.5).eval()
    x = torch.randn(*SMALL_INPUT)
    assert sub(x).shape == (2, 3)
    torch.testing.assert_close(sub.forward_head(sub.forward_features(x), pre_logits=True),
                               ref.forward_head(ref.forward_features(x), pre_logits=True), rtol=0, atol=0)


def test_truncated_checkpoint(saved_net, tmp_path):
    broken = tmp_path / 'broken'
    shutil.copytree(saved_net, broken)
    weights = broken / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        timm.create_model(f'local-dir:{broken}', width=0.5, pretrained=True)


def test_corrupt_checkpoint(saved_net, tmp_path):
    broken = tmp_path / 'corrupt'
    shutil.copytree(saved_net, broken)
    weights = broken / 'model.safetensors'
    data = bytearray(weights.read_bytes())
    data[8:40] = b'\xff' * 32  # garbage in the JSON header
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        timm.create_model(f'local-dir:{broken}', pretrained=True)


def test_missing_config(saved_net, tmp_path):
    folder = tmp_path / 'no_config'
    shutil.copytree(saved_net, folder)
    (folder / 'config.json').unlink()
    with pytest.raises(CheckpointError, match=r'no config.json.*sfsc_timm.save\(net, folder\)'):
        sfsc_timm.load(folder, width=0.5)
    with pytest.raises(FileNotFoundError, match='config.json'):  # timm's own message on the timm path
        timm.create_model(f'local-dir:{folder}', width=0.5, pretrained=True)


def test_missing_or_pickled_weights(saved_net, tmp_path):
    folder = tmp_path / 'pickled'
    folder.mkdir()
    shutil.copy(saved_net / 'config.json', folder)
    torch.save({}, folder / 'pytorch_model.bin')
    with pytest.raises(FileNotFoundError, match='pickled weights are never loaded'):
        sfsc_timm.load(folder, width=0.5)
