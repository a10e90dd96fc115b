""" Nothing of the user's is ever replaced: each writer refuses a destination holding files it does not write (a
folder of the user's photos, a plain file where a folder goes), names the path and the way out, and leaves it as it
was; it replaces its own output and, when asked (force), anything. """
import json

import pytest
import timm
import torch

import sfsc_timm
from sfsc_timm.atomic_io import DestinationInUse
from sfsc_timm.hub import deploy
from sfsc_timm.hub.deploy import export_width


def _user_folder(path):
    path.mkdir(parents=True)
    (path / 'holiday.jpg').write_bytes(b'\xff\xd8 a photo')
    (path / 'notes.txt').write_text('mine')
    return path


def _contents(path):
    return {p.name: p.read_bytes() for p in path.iterdir()} if path.is_dir() else path.read_bytes()


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return timm.create_model('sfsc_resnet18', num_classes=3, widths=(0.5, 1.0), embed_dim=16,
                             pretrained_cfg_overlay=dict(input_size=(3, 16, 16))).eval()


@pytest.fixture(scope='module')
def checkpoint(net, tmp_path_factory):
    return sfsc_timm.save(net, tmp_path_factory.mktemp('ckpt') / 'ckpt')


def test_save_refuses_a_folder_of_user_files_and_a_plain_file(net, tmp_path):
    photos = _user_folder(tmp_path / 'photos')
    before = _contents(photos)
    with pytest.raises(DestinationInUse, match=r'photos holds files .*holiday\.jpg, notes\.txt.*force=True'):
        sfsc_timm.save(net, photos)
    assert _contents(photos) == before
    gallery = tmp_path / 'gallery.parquet'
    gallery.write_bytes(b'PAR1 the user embeddings')
    with pytest.raises(DestinationInUse, match=r'gallery\.parquet is a file'):
        sfsc_timm.save(net, gallery)
    assert gallery.read_bytes() == b'PAR1 the user embeddings'


def test_save_replaces_its_own_checkpoint_and_anything_when_forced(net, tmp_path):
    folder = sfsc_timm.save(net, tmp_path / 'ckpt')
    sfsc_timm.save(net, folder)  # its own two files: replaced without asking
    assert sorted(p.name for p in folder.iterdir()) == ['config.json', 'model.safetensors']
    photos = _user_folder(tmp_path / 'photos')
    sfsc_timm.save(net, photos, force=True)
    assert sorted(p.name for p in photos.iterdir()) == ['config.json', 'model.safetensors']
    assert torch.equal(sfsc_timm.load(photos).state_dict()['head.weight'], net.state_dict()['head.weight'])


@pytest.mark.parametrize('fmt', ['hf', 'torchscript', 'onnx'])
def test_export_width_refuses_a_folder_of_user_files(checkpoint, tmp_path, fmt, capsys):
    photos = _user_folder(tmp_path / 'u')
    before = _contents(photos)
    code = deploy.main([str(checkpoint), '--width', '0.5', '--format', fmt, '--output', str(photos)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(photos) in err and '--force' in err
    assert _contents(photos) == before


def test_export_width_hf_refuses_a_plain_file_and_replaces_when_forced(checkpoint, tmp_path):
    target = tmp_path / 'model'
    target.write_text('not a folder')
    with pytest.raises(DestinationInUse, match='is a file'):
        export_width(checkpoint, 0.5, 'hf', target)
    assert target.read_text() == 'not a folder'
    photos = _user_folder(tmp_path / 'u')
    result = export_width(checkpoint, 0.5, 'hf', photos, force=True)
    assert sorted(p.name for p in result.path.iterdir()) == ['config.json', 'model.safetensors']
    again = export_width(checkpoint, 0.5, 'hf', photos)  # now its own export: replaced without --force
    assert json.loads((again.path / 'config.json').read_text())['architecture']


def test_a_file_export_replaces_a_file_of_its_own_format(checkpoint, tmp_path):
    target = tmp_path / 'w05.pt'
    export_width(checkpoint, 0.5, 'torchscript', target)
    first = target.read_bytes()
    export_width(checkpoint, 0.5, 'torchscript', target)  # the file the user named: replaced whole
    assert target.stat().st_size > 0 and len(first) > 0


@pytest.mark.parametrize('format, name', [('torchscript', 'w05.pt'), ('export', 'w05.pt2'), ('onnx', 'w05.onnx')])
def test_a_file_export_refuses_a_file_it_did_not_write(checkpoint, tmp_path, format, name):
    target = tmp_path / name
    target.write_bytes(b'PK\x03\x04 the user archive, or any file of theirs')
    with pytest.raises(DestinationInUse, match=rf'{name} is not a {format} file export-width wrote.*--force'):
        export_width(checkpoint, 0.5, format, target)
    assert target.read_bytes() == b'PK\x03\x04 the user archive, or any file of theirs'
    if format == 'torchscript':  # another zip archive (a TorchScript file it did not write) is not its either
        scripted = torch.jit.script(torch.nn.Linear(2, 2))
        torch.jit.save(scripted, str(target))
        with pytest.raises(DestinationInUse, match='is not a torchscript file export-width wrote'):
            export_width(checkpoint, 0.5, format, target)
        assert export_width(checkpoint, 0.5, format, target, force=True).path == target
        assert deploy._is_own_archive(target)


def test_embed_refuses_a_folder_as_its_output(checkpoint, tmp_path, capsys):
    from PIL import Image

    from sfsc_timm.inference import cli as embed_cli
    images = tmp_path / 'images'
    images.mkdir()
    Image.new('RGB', (16, 16), (1, 2, 3)).save(images / 'a.png')
    photos = _user_folder(tmp_path / 'gallery.parquet')  # a folder that happens to have the name
    before = _contents(photos)
    code = embed_cli.main([str(checkpoint), str(images), '--output', str(photos), '--no-progress'])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and 'is a folder' in err
    assert _contents(photos) == before


def test_embed_replaces_its_own_file_and_refuses_another_parquet_file(checkpoint, tmp_path):
    from PIL import Image
    images = tmp_path / 'images'
    images.mkdir()
    Image.new('RGB', (16, 16), (1, 2, 3)).save(images / 'a.png')
    target = tmp_path / 'e.parquet'
    sfsc_timm.embed_images(checkpoint, images, target, progress=False)
    sfsc_timm.embed_images(checkpoint, images, target, width=0.5, progress=False)  # its own file: replaced
    import pyarrow as pa
    import pyarrow.parquet as pq
    assert json.loads(pq.read_schema(target).metadata[b'sfsc'])['width'] == 0.5
    theirs = tmp_path / 'theirs.parquet'
    pq.write_table(pa.table({'x': [1, 2]}), theirs)
    before = theirs.read_bytes()
    with pytest.raises(DestinationInUse, match='is not a file of embeddings sfsc-timm embed wrote'):
        sfsc_timm.embed_images(checkpoint, images, theirs, progress=False)
    assert theirs.read_bytes() == before
    assert not (tmp_path / 'new_folder').exists()
    with pytest.raises(Exception):  # a model that cannot load leaves no folder behind
        sfsc_timm.embed_images(tmp_path / 'no_model', images, tmp_path / 'new_folder' / 'e.parquet', progress=False)
    assert not (tmp_path / 'new_folder').exists()
