"""Loading from the Hub, through a real local Hub mirror (olah serving the export as a git repository) and through
huggingface_hub's offline cache (``HF_HUB_OFFLINE=1``)."""
import re
import shutil

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from PIL import Image

import sfsc_timm
from sfsc_timm.hub import export_width

from hub_fixtures import EMBED_DIM, INPUT_SIZE, NUM_CLASSES, REPO_ID, WIDTHS, build_hub_run, embeddings
from hub_mirror import olah_mirror

pytest.importorskip('olah', reason='olah (a dev dependency) serves the local Hub mirror')
if shutil.which('git') is None:
    pytest.skip('git is needed to serve the export as a git repository', allow_module_level=True)


@pytest.fixture(scope='module')
def hub_run(tmp_path_factory):
    return build_hub_run(tmp_path_factory)  # built once per session, shared by the test_hub_* modules


def _point_huggingface_hub_at(monkeypatch, endpoint, cache):
    # huggingface_hub reads HF_ENDPOINT once, at import, into these constants
    monkeypatch.setenv('HF_ENDPOINT', endpoint)
    monkeypatch.setattr('huggingface_hub.constants.ENDPOINT', endpoint)
    monkeypatch.setattr('huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE',
                        endpoint + '/{repo_id}/resolve/{revision}/{filename}')
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_CACHE', str(cache))
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', False)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)


@pytest.fixture(scope='module')
def mirror(hub_run, tmp_path_factory):
    """olah serving the export as REPO_ID; huggingface_hub pointed at it with an empty cache."""
    workdir = tmp_path_factory.mktemp('olah')
    with olah_mirror(hub_run.export_dir, REPO_ID, workdir) as url, pytest.MonkeyPatch.context() as monkeypatch:
        _point_huggingface_hub_at(monkeypatch, url, workdir / 'hf_cache')
        yield url, workdir / 'hf_cache'


@pytest.fixture
def x():
    return torch.randn(3, *INPUT_SIZE, generator=torch.Generator().manual_seed(1))


def test_every_width_from_the_mirror_equals_extract(hub_run, mirror, x):
    _, cache = mirror
    for width in WIDTHS:
        sub = timm.create_model(f'hf-hub:{REPO_ID}', width=width, pretrained=True).eval()
        expected = sfsc_timm.extract(hub_run.net, width).eval()
        assert type(sub.backbone) is type(expected.backbone) and not hasattr(sub, 'set_width')
        with torch.no_grad():
            assert torch.equal(sub(x), expected(x)), width  # logits through the shared classifier
        assert torch.equal(embeddings(sub, x), embeddings(expected, x)), width
    snapshots = list(cache.glob('models--*/snapshots/*/model.safetensors'))
    assert len(snapshots) == 1  # really downloaded through huggingface_hub, one file for every width
    assert snapshots[0].read_bytes() == (hub_run.export_dir / 'model.safetensors').read_bytes()


def test_supernet_from_the_mirror(hub_run, mirror, x):
    net = sfsc_timm.load(f'hf-hub:{REPO_ID}')
    assert net.widths == WIDTHS and net.embed_dim == EMBED_DIM and net.num_classes == NUM_CLASSES
    for width in WIDTHS:
        with net.width(width), hub_run.net.width(width):
            assert torch.equal(embeddings(net, x), embeddings(hub_run.net, x))


def test_registered_name_with_a_hub_id(hub_run, mirror, x):
    # what `timm.create_model('sfsc_resnet18', width=w, pretrained=True)` does once its default config names a repo
    sub = timm.create_model('sfsc_resnet18', width=0.5, widths=WIDTHS, embed_dim=EMBED_DIM, num_classes=NUM_CLASSES,
                            pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=REPO_ID, input_size=INPUT_SIZE))
    assert torch.equal(embeddings(sub, x), embeddings(sfsc_timm.extract(hub_run.net, 0.5), x))


def test_model_card_from_the_mirror_and_its_usage_snippet_runs(hub_run, mirror):
    card = ModelCard.load(REPO_ID)  # README.md downloaded from the mirror
    assert card.data.library_name == 'timm' and card.data.pipeline_tag == 'image-feature-extraction'
    local = ModelCard.load(hub_run.export_dir / 'README.md')
    assert card.data.to_dict() == local.data.to_dict() and card.text == local.text
    usage = re.search(r'## Usage\n\n```python\n(.*?)```', card.text, flags=re.S).group(1)
    namespace = {}
    exec(compile(usage, 'model card usage', 'exec'), namespace)  # the snippet as a user copies it
    images = [Image.new('RGB', (40, 30), color) for color in ('red', 'navy', 'gray')]
    query, gallery = namespace['embed'](namespace['small'], images), namespace['embed'](namespace['large'], images)
    assert query.shape == gallery.shape == (3, EMBED_DIM)
    assert torch.allclose(query.norm(dim=1), torch.ones(3))
    batch = torch.stack([namespace['transform'](image) for image in images])
    expected = torch.nn.functional.normalize(embeddings(sfsc_timm.extract(hub_run.net, 0.25), batch), dim=1)
    assert torch.allclose(query, expected, atol=1e-6)


def test_export_width_from_a_hub_id(hub_run, mirror, tmp_path, x):
    result = export_width(f'hf-hub:{REPO_ID}', 0.25, 'export', tmp_path / 'w025.pt2')
    assert result.max_abs_diff <= 1e-4
    program = torch.export.load(str(result.path)).module()
    assert torch.allclose(program(x), embeddings(sfsc_timm.extract(hub_run.net, 0.25), x), atol=1e-5)


def test_offline_cache_after_download(hub_run, mirror, x, monkeypatch):
    url, cache = mirror
    timm.create_model(f'hf-hub:{REPO_ID}', width=1.0, pretrained=True)  # fills the cache (a no-op if filled)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', True)
    dead = 'http://127.0.0.1:9'  # nothing listens there: any request would fail
    monkeypatch.setattr('huggingface_hub.constants.ENDPOINT', dead)
    monkeypatch.setattr('huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE',
                        dead + '/{repo_id}/resolve/{revision}/{filename}')
    for width in WIDTHS:
        sub = timm.create_model(f'hf-hub:{REPO_ID}', width=width, pretrained=True)
        assert torch.equal(embeddings(sub, x), embeddings(sfsc_timm.extract(hub_run.net, width), x)), width
