"""``sfsc-timm export``: the Hub repository folder and its model card, built from a real evaluation."""
import json
import re
import shutil

import pytest
import yaml
from huggingface_hub import ModelCard

import sfsc_timm
from sfsc_timm.eval import parameter_share_label
from sfsc_timm.hub import ExportError, export_run, read_run
from sfsc_timm.hub.export import main as export_main
from sfsc_timm.models.profile import count_parameters

from hub_fixtures import EMBED_DIM, RECIPE, REPO_ID, WIDTHS, build_hub_run, folder_bytes


def _card(export_dir):
    return ModelCard.load(export_dir / 'README.md')


@pytest.fixture(scope='module')
def hub_run(tmp_path_factory):
    return build_hub_run(tmp_path_factory)  # built once per session, shared by the test_hub_* modules


def _markdown_table(text, header_start):
    """Rows (lists of cells) of the Markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        rows.append([cell.strip() for cell in line.strip('|').split('|')])
    return rows


def test_export_folder_holds_the_repository_files(hub_run):
    source = hub_run.run_dir / 'export'
    files = folder_bytes(hub_run.export_dir)
    assert sorted(files) == ['README.md', 'compatibility.png', 'config.json', 'metrics.json', 'model.safetensors',
                             'recipe.yaml']
    for name in ('model.safetensors', 'config.json', 'metrics.json', 'compatibility.png'):
        assert files[name] == (source / name).read_bytes(), name  # the supernet and its evaluation, byte for byte
    config = json.loads(files['config.json'])
    assert config['architecture'] == 'sfsc_resnet18' and config['num_classes'] == 10
    assert config['num_features'] == 512  # timm's meaning: the full width's feature channels
    assert config['model_args']['widths'] == list(WIDTHS) and config['model_args']['embed_dim'] == EMBED_DIM
    assert config['pretrained_cfg']['input_size'] == [3, 32, 32]
    # no key twice: transformers passes model_args as keyword arguments beside its own num_classes
    parts = [set(config) - {'model_args', 'pretrained_cfg'}, set(config['model_args']), set(config['pretrained_cfg'])]
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:]), parts
    assert yaml.safe_load(files['recipe.yaml']) == RECIPE
    assert not [p for p in hub_run.export_dir.parent.iterdir() if p.name.startswith('.')]  # no staging left


def test_model_card_metadata(hub_run):
    card = _card(hub_run.export_dir)
    data = card.data
    assert data.model_name == REPO_ID.split('/')[-1] and card.text.lstrip().startswith(f'# {data.model_name}\n')
    assert data.library_name == 'timm' and data.pipeline_tag == 'image-feature-extraction'
    assert data.license == 'apache-2.0' and data.datasets == ['zalando-datasets/fashion_mnist']
    assert {'sfsc', 'timm', 'image-retrieval', 'image-feature-extraction'} <= set(data.tags)
    assert 'person-reid' not in data.tags  # Fashion-MNIST is not a re-ID set
    assert data.sfsc['repo_id'] == REPO_ID and data.sfsc['widths'] == list(WIDTHS)


def test_model_card_matrix_equals_metrics(hub_run):
    metrics = json.loads((hub_run.run_dir / 'export' / 'metrics.json').read_text())
    card = _card(hub_run.export_dir)
    assert card.data.sfsc['compatibility']['matrix'] == metrics['matrix']  # exactly, in the metadata
    rows = _markdown_table(card.text, '| query \\ gallery')
    assert [row[0] for row in rows] == [parameter_share_label(w) for w in WIDTHS]
    shown = [[float(cell) for cell in row[1:]] for row in rows]
    assert shown == [[round(100 * v, 2) for v in row] for row in metrics['matrix']]  # and as the table shows it
    assert '![Compatibility matrix' in card.text and '(compatibility.png)' in card.text


def test_model_card_model_index_is_the_matrix(hub_run):
    metrics = json.loads((hub_run.run_dir / 'export' / 'metrics.json').read_text())
    card = _card(hub_run.export_dir)
    assert card.data.to_dict()['model-index'][0]['name'] == REPO_ID.split('/')[-1]
    results = card.data.eval_results  # parsed back from the card's model-index
    assert len(results) == len(WIDTHS) ** 2
    assert {r.task_type for r in results} == {'image-feature-extraction'}
    assert {r.metric_type for r in results} == {'mAP'}
    assert {r.dataset_type for r in results} == {'zalando-datasets/fashion_mnist'}
    got = {(r.metric_args['query_width'], r.metric_args['gallery_width']): r.metric_value for r in results}
    assert got == {(q, g): round(100 * metrics['matrix'][i][j], 2)
                   for i, q in enumerate(WIDTHS) for j, g in enumerate(WIDTHS)}


def test_model_card_per_width_table(hub_run):
    metrics = json.loads((hub_run.run_dir / 'export' / 'metrics.json').read_text())
    rows = _markdown_table(_card(hub_run.export_dir).text, '| width |')
    assert [float(row[0]) for row in rows] == list(WIDTHS)
    matrix, full = metrics['matrix'], len(WIDTHS) - 1
    for i, (row, width) in enumerate(zip(rows, WIDTHS)):
        _, share, params, gmacs, gflops, latency, map_own, map_full = row
        assert share.startswith(parameter_share_label(width))
        sub = sfsc_timm.extract(hub_run.net, width)
        sub.reset_classifier(0)
        assert params == f'{count_parameters(sub) / 1e6:.2f} M'  # the embedding model, measured
        assert float(gflops) == pytest.approx(2 * float(gmacs), rel=0.01) and float(latency) > 0
        assert float(map_own) == round(100 * matrix[i][i], 2)
        assert float(map_full) == round(100 * matrix[i][full], 2)
    gmacs = [float(row[3]) for row in rows]
    assert gmacs == sorted(gmacs) and gmacs[0] < 0.15 * gmacs[-1]  # about width² of the full model's


def test_model_card_usage_recipe_and_citation(hub_run):
    text = _card(hub_run.export_dir).text
    usage = re.search(r'## Usage\n\n```python\n(.*?)```', text, flags=re.S).group(1)
    assert usage.startswith('import timm, sfsc_timm')
    assert f"timm.create_model('hf-hub:{REPO_ID}', width=0.25, pretrained=True)" in usage
    recipe = re.search(r'```yaml\n(.*?)```', text, flags=re.S).group(1)
    assert yaml.safe_load(recipe) == RECIPE
    assert '@inproceedings{wu2023switchable' in text and '2206.08289' in text and 'CVPR' in text


def test_trainer_metrics_with_extra_keys_and_recipe(hub_run, tmp_path):
    # a trainer's export: metrics.json carries more keys, including the recipe, and there is no recipe file
    source = tmp_path / 'export'
    shutil.copytree(hub_run.run_dir / 'export', source)
    metrics = json.loads((source / 'metrics.json').read_text())
    recipe = dict(RECIPE, epochs=7)
    private = str(tmp_path / 'runs' / 'mine')  # where the run was written: nobody else's business
    metrics.update(recipe=dict(recipe, output=private, data_dir=str(tmp_path / 'data' / 'fashion')),
                   summary={'mean': metrics['mean']}, best_epoch=3, data_sizes={'test_query': 20})
    (source / 'metrics.json').write_text(json.dumps(metrics))
    out = export_run(source, tmp_path / 'hub', latency_repeats=1)
    card = _card(out)
    public = dict(recipe, data_dir='fashion')  # output dropped, a local path reduced to its folder's name
    assert yaml.safe_load(re.search(r'```yaml\n(.*?)```', card.text, flags=re.S).group(1)) == public
    assert yaml.safe_load((out / 'recipe.yaml').read_text()) == public
    assert json.loads((out / 'metrics.json').read_text())['recipe'] == public
    assert card.data.sfsc['repo_id'] is None and "'local-dir:hub'" in card.text  # the folder, not where it lies
    assert card.data.model_name == 'sfsc_resnet18.fashion_mnist' and card.text.lstrip().startswith(
        '# sfsc_resnet18.fashion_mnist\n')
    for name in ('README.md', 'recipe.yaml', 'metrics.json', 'config.json'):
        assert str(tmp_path) not in (out / name).read_text(), name


def test_metrics_without_matrix_is_a_clear_error(hub_run, tmp_path):
    source = tmp_path / 'ckpt'
    shutil.copytree(hub_run.run_dir / 'export', source)
    metrics = json.loads((source / 'metrics.json').read_text())
    del metrics['matrix']
    (source / 'metrics.json').write_text(json.dumps(metrics))
    with pytest.raises(ExportError, match=r"has no 'matrix'.*sfsc-timm eval"):
        export_run(source, tmp_path / 'hub')
    (source / 'metrics.json').write_text(json.dumps(dict(metrics, matrix=[[0.5, 0.4]])))
    with pytest.raises(ExportError, match='shape'):
        export_run(source, tmp_path / 'hub')
    (source / 'metrics.json').unlink()
    with pytest.raises(ExportError, match='lack metrics.json.*sfsc-timm eval'):
        export_run(source, tmp_path / 'hub')
    assert not (tmp_path / 'hub').exists()


def test_unfinished_run_is_a_clear_error(tmp_path):
    (tmp_path / 'run' / 'checkpoints' / 'last').mkdir(parents=True)
    with pytest.raises(ExportError, match='has not finished'):
        export_run(tmp_path / 'run', tmp_path / 'hub')


def test_failed_export_keeps_the_previous_one(hub_run, tmp_path, monkeypatch):
    out = tmp_path / 'hub'
    shutil.copytree(hub_run.export_dir, out)
    before = folder_bytes(out)

    def failing_card(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr('sfsc_timm.hub.export.build_model_card', failing_card)
    with pytest.raises(OSError, match='disk full'):
        export_run(hub_run.run_dir, out, latency_repeats=1)
    assert folder_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['hub']  # no staging folder left behind


def test_refuses_to_replace_a_folder_that_is_not_an_export(hub_run, tmp_path, capsys):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    assert export_main([str(hub_run.run_dir), str(out)]) == 2  # bad input
    assert 'notes.txt' in capsys.readouterr().err
    assert (out / 'notes.txt').read_text() == 'keep me'


def test_a_baseline_model_set_is_refused_clearly(hub_run, tmp_path):
    # baselines without shared weights save one folder per width (width_0_25/ ...): not one Hub checkpoint
    member = sfsc_timm.extract(hub_run.net, 0.25)
    sfsc_timm.save(member, tmp_path / 'run' / 'export' / 'width_0_25')
    with pytest.raises(ExportError, match='separate per-width models.*not an SFSC supernet'):
        export_run(tmp_path / 'run', tmp_path / 'hub')


def test_read_run_finds_any_single_recipe_yaml_and_checks_the_metrics_belong(hub_run, tmp_path):
    source = tmp_path / 'ckpt'
    shutil.copytree(hub_run.run_dir / 'export', source)
    (source / 'my_recipe.yml').write_text(yaml.safe_dump(RECIPE))
    run = read_run(source)
    assert run.recipe == RECIPE and run.heatmap == source / 'compatibility.png' and run.widths == WIDTHS
    metrics = json.loads((source / 'metrics.json').read_text())
    (source / 'metrics.json').write_text(json.dumps(dict(metrics, architecture='sfsc_resnet50')))
    with pytest.raises(ExportError, match='evaluates sfsc_resnet50 but .* is a sfsc_resnet18'):
        read_run(source)
    (source / 'metrics.json').write_text(json.dumps(dict(metrics, widths=[0.25, 0.75, 1.0])))
    with pytest.raises(ExportError, match=r'evaluates widths \[0.75\] that the checkpoint was not trained at'):
        read_run(source)
