"""Hugging Face transformers reads our exports: ``AutoModel.from_pretrained`` and
``pipeline('image-feature-extraction')`` (transformers' TimmWrapper reads timm's config.json; importing sfsc_timm
registers the architectures with timm)."""
import json

import pytest
import timm
import torch
from PIL import Image

import sfsc_timm
from sfsc_timm.data.fashion_mnist import FASHION_MNIST_CLASSES
from sfsc_timm.hub import export_width
from sfsc_timm.train.cli import main as train_main

from hub_fixtures import EMBED_DIM, INPUT_SIZE, build_hub_run, embeddings

transformers = pytest.importorskip('transformers', reason='transformers (a dev dependency) reads the exports')
pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')


@pytest.fixture(scope='module')
def hub_run(tmp_path_factory):
    return build_hub_run(tmp_path_factory)  # built once per session, shared by the test_hub_* modules


@pytest.fixture(scope='module')
def width_export(hub_run, tmp_path_factory):
    """`sfsc-timm export-width RUN --width 0.25 --format hf`: the static embedding model's folder."""
    return export_width(hub_run.run_dir, 0.25, 'hf', tmp_path_factory.mktemp('w') / 'w025').path


def _images():
    return [Image.new('RGB', (40, 30), color) for color in ('red', 'navy', 'gray')]


def test_automodel_loads_the_supernet_export(hub_run):
    model = transformers.AutoModel.from_pretrained(hub_run.export_dir).eval()
    assert isinstance(model.timm_model, sfsc_timm.SwitchableEmbeddingNet)  # the supernet, at its full width
    x = torch.randn(2, *INPUT_SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = model(pixel_values=x)
    assert out.pooler_output.shape == (2, EMBED_DIM)
    torch.testing.assert_close(out.pooler_output, embeddings(hub_run.net, x))
    assert out.last_hidden_state.shape[1] == model.timm_model.num_features


def test_automodel_and_pipeline_give_the_exported_widths_embedding(hub_run, width_export):
    config = json.loads((width_export / 'config.json').read_text())
    assert config['model_args']['width'] == 0.25 and config['num_classes'] == 0 and 'num_classes' not in \
        config['model_args']
    expected_model = sfsc_timm.extract(hub_run.net, 0.25).eval()
    model = transformers.AutoModel.from_pretrained(width_export).eval()
    assert model.timm_model.active_width == 0.25 and not hasattr(model.timm_model, 'set_width')
    x = torch.randn(3, *INPUT_SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).pooler_output, embeddings(expected_model, x))
    extractor = transformers.pipeline('image-feature-extraction', model=str(width_export))
    got = torch.tensor(extractor(_images(), pool=True)).reshape(3, EMBED_DIM)  # pool: the embedding, not the map
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=expected_model))
    batch = torch.stack([transform(image) for image in _images()])
    torch.testing.assert_close(got, embeddings(expected_model, batch), rtol=1e-4, atol=1e-5)


def test_label_names_reach_timm_and_transformers(tmp_path):
    net = timm.create_model('sfsc_resnet18', num_classes=3, widths=(0.5, 1.0), embed_dim=16,
                            pretrained_cfg_overlay=dict(input_size=(3, 32, 32), label_names=('cat', 'dog', 'owl')))
    sfsc_timm.save(net, tmp_path / 'ckpt')
    config = json.loads((tmp_path / 'ckpt' / 'config.json').read_text())
    assert config['label_names'] == ['cat', 'dog', 'owl'] and 'label_names' not in config['pretrained_cfg']
    assert timm.create_model(f'local-dir:{tmp_path / "ckpt"}', pretrained=True).pretrained_cfg['label_names'] == [
        'cat', 'dog', 'owl']
    classifier = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / 'ckpt')
    assert classifier.config.id2label == {0: 'cat', 1: 'dog', 2: 'owl'}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(classifier.eval()(pixel_values=x).logits, net.eval()(x))


def test_a_trained_run_saves_the_datasets_class_names(tmp_path):
    args = ['-c', 'sfsc_resnet18_fashion_mnist', '--widths', '0.5', '1.0', '--embed-dim', '16', '--input-size', '3',
            '16', '16', '--batch-size', '16', '--max-train', '64', '--epochs', '1', '--val-max-query', '20',
            '--val-max-gallery', '40', '--eval-max-query', '20', '--eval-max-gallery', '40', '--no-progress',
            '--output', str(tmp_path / 'run')]
    assert train_main(args) == 0  # a built-in recipe, by name
    config = json.loads((tmp_path / 'run' / 'export' / 'config.json').read_text())
    assert config['label_names'] == list(FASHION_MNIST_CLASSES)
