"""The model card of an SFSC checkpoint: huggingface_hub's ModelCard rendered from ``model_cards/sfsc_model_card.md``.

Every number in the card comes from the run's metrics.json or from measuring the checkpoint; none is typed in.
"""
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .._resources import shipped_file
from ..data.fashion_mnist import FASHION_MNIST_HUB_ID
from ..eval import format_compatibility_table, parameter_share_label, summarize_compatibility
from .measure import Measurement
from .run_folder import HEATMAP_NAME, RunFolder

__all__ = ['TEMPLATE_NAME', 'CARD_METADATA_KEY', 'build_model_card', 'card_tags', 'hub_dataset_ids', 'card_repo_id',
           'model_name', 'public_recipe', 'public_name', 'compatibility_eval_results']

TEMPLATE_NAME = 'sfsc_model_card.md'  # in model_cards/ of the source tree, shipped inside the wheel
CARD_METADATA_KEY = 'sfsc'  # the card's machine-readable block: widths, compatibility matrix, repo id
BASE_TAGS = ('sfsc', 'timm', 'image-feature-extraction', 'image-retrieval', 'compatible-embeddings',
             'switchable-network')
_HUB_DATASETS = {'fashion_mnist': FASHION_MNIST_HUB_ID, 'fashion-mnist': FASHION_MNIST_HUB_ID}
_REID_NAMES = re.compile(r'market|msmt|duke|cuhk|reid|re-id|veri', re.IGNORECASE)
_HUB_ID = re.compile(r'^[\w.-]+/[\w.-]+$')


def hub_dataset_ids(dataset: Optional[str]) -> List[str]:
    """Hub dataset ids for a dataset name as sfsc-timm records it ('fashion_mnist', 'ORG/NAME', a folder name...).

    A local folder (a Market-1501 copy, an imagefolder) has no Hub id: the list is empty and the card names it in text.
    """
    if not dataset:
        return []
    if dataset in _HUB_DATASETS:
        return [_HUB_DATASETS[dataset]]
    return [dataset] if _HUB_ID.match(dataset) and not Path(dataset).exists() else []


def card_tags(dataset: Optional[str], extra: Sequence[str] = ()) -> List[str]:
    """The card's tags: SFSC / timm / retrieval tags, ``person-reid`` for re-ID datasets, then ``extra``."""
    tags = list(BASE_TAGS)
    if dataset and _REID_NAMES.search(dataset):
        tags.append('person-reid')
    return list(dict.fromkeys(tags + list(extra)))


def public_name(value: str) -> str:
    """``value`` as it may appear in a public card: a local path becomes its last component (a folder's name tells
    which data set it is; the directories above it are the user's own)."""
    local = os.path.isabs(value) or value.startswith(('.', '~')) or (os.sep in value and Path(value).exists())
    return Path(value).expanduser().name if local else value


def public_recipe(recipe: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The recipe without where the run was written (``output``) and with local paths reduced to their names."""
    if recipe is None:
        return None
    return {k: public_name(v) if isinstance(v, str) else v for k, v in recipe.items() if k != 'output'}


def model_name(run: RunFolder, repo_id: Optional[str] = None) -> str:
    """The model's name, the card's title: the Hub repository's name, else timm's ``architecture.dataset`` form."""
    if repo_id:
        return repo_id.split('/')[-1]
    dataset = run.metrics.get('dataset')
    tag = re.sub(r'[^\w.-]+', '_', public_name(str(dataset)).split('/')[-1]) if dataset else ''
    return f'{run.architecture}.{tag}' if tag else run.architecture


def compatibility_eval_results(metrics: Dict[str, Any], datasets: Sequence[str]) -> List[EvalResult]:
    """The compatibility matrix as the card's ``model-index``: one mAP (%) per (query width, gallery width) pair."""
    dataset = public_name(str(metrics.get('dataset') or 'evaluation set'))
    widths = metrics['widths']
    results = []
    for i, query in enumerate(widths):
        for j, gallery in enumerate(widths):
            results.append(EvalResult(
                task_type='image-feature-extraction', task_name='Compatible image retrieval',
                dataset_type=datasets[0] if datasets else dataset, dataset_name=dataset, dataset_split='test',
                metric_type='mAP', metric_value=round(100 * metrics['matrix'][i][j], 2),
                metric_name=f'mAP, query {parameter_share_label(query)} / gallery {parameter_share_label(gallery)}',
                metric_args=dict(query_width=float(query), gallery_width=float(gallery))))
    return results


def card_repo_id(card: ModelCard) -> Optional[str]:
    """The Hub repository a card was rendered for (its usage snippet loads from it), or None for a local export."""
    block = getattr(card.data, CARD_METADATA_KEY, None)
    return block.get('repo_id') if isinstance(block, dict) else None


def build_model_card(
        run: RunFolder,
        measurement: Measurement,
        *,
        repo_id: Optional[str] = None,
        local_folder: Optional[Union[str, Path]] = None,
        license: Optional[str] = None,
        datasets: Optional[Sequence[str]] = None,
        tags: Sequence[str] = (),
        has_recipe_file: bool = False,
        template_path: Optional[Union[str, Path]] = None,
) -> ModelCard:
    """Render the model card of ``run`` with the per-width ``measurement``.

    Args:
        run: the checkpoint, its metrics.json and recipe.
        measurement: parameters, GMACs and latency per width (``measure_widths``).
        repo_id: the Hub repository the card is for; its usage snippet loads from ``hf-hub:repo_id``.
        local_folder: without ``repo_id``, the folder the snippet loads from (``local-dir:``).
        license: the weights' license; default: config.json's ``pretrained_cfg.license``, else apache-2.0.
        datasets: Hub dataset ids for the metadata; default: derived from metrics.json's ``dataset``.
        tags: tags added to the SFSC ones.
        has_recipe_file: the repository ships the recipe as ``recipe.yaml``.
        template_path: a Jinja template to use instead of the shipped ``sfsc_model_card.md``.

    No local path enters the card: the usage snippet of a local export names only its folder, and the recipe loses
    its ``output`` (:func:`public_recipe`).
    """
    template = Path(template_path) if template_path else shipped_file('model_cards', TEMPLATE_NAME)
    if not template.is_file():
        raise FileNotFoundError(f'Model card template {template} not found; pass --template PATH (template_path=).')
    if repo_id is None and local_folder is None:
        raise ValueError('build_model_card needs repo_id (a Hub repository) or local_folder for the usage snippet.')
    metrics, config = run.metrics, run.config
    widths = metrics['widths']
    matrix = metrics['matrix']
    summary = summarize_compatibility(matrix, widths)
    dataset = metrics.get('dataset')
    dataset_ids = list(datasets) if datasets is not None else hub_dataset_ids(dataset)
    source = f'hf-hub:{repo_id}' if repo_id else f'local-dir:{Path(local_folder).name}'
    name = model_name(run, repo_id)
    embed_dim = config.get('model_args', {}).get('embed_dim')
    recipe = public_recipe(run.recipe)
    card_data = ModelCardData(
        model_name=name,
        library_name='timm',
        pipeline_tag='image-feature-extraction',
        license=license or config['pretrained_cfg'].get('license') or 'apache-2.0',
        datasets=dataset_ids or None,
        tags=card_tags(dataset, tags),
        eval_results=compatibility_eval_results(metrics, dataset_ids),
        **{CARD_METADATA_KEY: dict(
            repo_id=repo_id, architecture=run.architecture, widths=list(run.widths),
            embed_dim=embed_dim, input_size=list(run.input_size),
            compatibility=dict(dataset=public_name(dataset) if dataset else dataset, widths=widths, matrix=matrix,
                               mean=summary['mean'], self_compatible=summary['self_compatible']),
        )},
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        title=name,
        architecture=run.architecture,
        widths_text=', '.join(_w(w) for w in run.widths),
        embed_dim=embed_dim,
        input_text='x'.join(str(s) for s in run.input_size),
        width_rows=_width_rows(measurement, widths, matrix),
        measurement=measurement,
        eval_text=_eval_text(metrics),
        mean_text=f'{100 * summary["mean"]:.2f}',
        self_compatible_text=_self_compatible_text(summary),
        matrix_table=format_compatibility_table(matrix, widths, fmt='markdown'),
        heatmap_name=HEATMAP_NAME,
        source=source,
        small_width=_w(min(run.widths)),
        large_width=_w(max(run.widths)),
        onnx_name=f'{run.architecture}_w{_w(min(run.widths))}.onnx',
        recipe_yaml=yaml.safe_dump(recipe, sort_keys=False).strip() if recipe else None,
        has_recipe_file=has_recipe_file,
    )


def _width_rows(measurement: Measurement, widths: Sequence[float], matrix) -> List[Dict[str, Any]]:
    full = max(measurement.widths, key=lambda s: s.width)
    evaluated = {w: i for i, w in enumerate(widths)}
    full_column = evaluated.get(full.width)
    rows = []
    for stats in measurement.widths:
        i = evaluated.get(stats.width)
        rows.append(dict(
            width=_w(stats.width),
            share=f'{parameter_share_label(stats.width)} ({100 * stats.parameters / full.parameters:.1f} %)',
            parameters=f'{stats.parameters / 1e6:.2f} M',
            gmacs=f'{stats.gmacs:.3g}',
            gflops=f'{stats.gflops:.3g}',
            latency=f'{stats.latency_ms:.2f}',
            map_own=_percent(matrix[i][i]) if i is not None else 'not evaluated',
            map_full=_percent(matrix[i][full_column]) if i is not None and full_column is not None else 'not evaluated',
        ))
    return rows


def _w(width: float) -> str:
    return repr(float(width))  # 0.25, 1.0: what a user passes as width=


def _percent(value: float) -> str:
    return f'{100 * value:.2f}'


def _eval_text(metrics: Dict[str, Any]) -> str:
    sizes = metrics.get('data_sizes') if isinstance(metrics.get('data_sizes'), dict) else {}
    num_query = metrics.get('num_query', sizes.get('test_query'))
    num_gallery = metrics.get('num_gallery', sizes.get('test_gallery'))
    text = public_name(str(metrics['dataset'])) if metrics.get('dataset') else 'the evaluation set'
    if num_query is not None and num_gallery is not None:
        text += f' ({num_query} queries, {num_gallery} gallery images)'
    return text


def _self_compatible_text(summary: Dict[str, Any]) -> str:
    if summary['self_compatible']:
        return 'yes'
    pairs = ', '.join(f'{_w(q)} → {_w(g)}' for q, g in summary['violations'])
    return f'no; these query → gallery pairs score below the query width\'s own gallery: {pairs}'
