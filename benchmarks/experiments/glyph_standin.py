"""The glyph benchmark's stand-in for ImageNet weights: a plain timm network of the benchmark's architecture,
pretrained with cross-entropy on glyph characters that neither the benchmark's training nor its test split holds.

The SFSC paper fine-tunes every method from ImageNet weights (the re-ID protocol); the glyph benchmark (32x32
renderings of CJK characters) has no ImageNet of its own, so this builds one: the characters every face covers
among the code points past the benchmark's first 3,000 (``STANDIN_CODEPOINTS``), rendered in the same 36 faces,
trained as a plain ``timm.create_model(ARCHITECTURE)`` classifier. The result is a plain timm checkpoint folder
(``model.safetensors`` + ``config.json``, timm's ``save_for_hf``), the path users take with ImageNet weights:
``--pretrained --pretrained-file FOLDER``. It is built once and cached (``standin.json`` records the arguments and
what the build measured, written last); a second call with the same arguments returns the cached folder::

    .venv/bin/python benchmarks/experiments/glyph_standin.py    # -> benchmarks/results/experiments/glyph_standin/

``standin.json`` also holds the stand-in's own retrieval mAP on the benchmark's unseen test characters (its pooled
features, no fine-tuning): what any method starts from.
"""
import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Dict, Optional

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader

from sfsc_timm.atomic_io import temp_path_for, write_json_atomically
from sfsc_timm.data import build_transforms, load_glyphs, subset_retrieval_data, with_image_transform
from sfsc_timm.data.glyphs import DEFAULT_CODEPOINTS
from sfsc_timm.eval import retrieval_metrics

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / 'benchmarks' / 'results' / 'experiments' / 'glyph_standin'
ARCHITECTURE = 'resnet10t'  # the plain timm network of the benchmark's sfsc_resnet10t
# past the benchmark's candidates (DEFAULT_CODEPOINTS: the first 3,000 CJK unified ideographs): 1,327 of these are
# covered by every face
STANDIN_CODEPOINTS = range(DEFAULT_CODEPOINTS.stop, DEFAULT_CODEPOINTS.stop + 3000)
INPUT_SIZE = (3, 32, 32)
BUILD_ARGS = dict(num_classes=800, epochs=4, batch_size=128, lr=0.2, weight_decay=5e-4, label_smoothing=0.1,
                  warmup_epochs=0.5, seed=0)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _train(model: torch.nn.Module, loader: DataLoader, args: Dict) -> Dict:
    optimizer = create_optimizer_v2(model, opt='sgd', lr=args['lr'], weight_decay=args['weight_decay'], momentum=0.9)
    steps = args['epochs'] * len(loader)
    scheduler = CosineLRScheduler(optimizer, t_initial=steps, lr_min=1e-4, warmup_lr_init=0.01,
                                  warmup_t=int(args['warmup_epochs'] * len(loader)))
    model.train()
    step, history = 0, []
    for epoch in range(args['epochs']):
        correct = seen = 0
        loss_sum = 0.
        for images, labels, _, _ in loader:
            logits = model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=args['label_smoothing'])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            loss_sum += loss.item() * len(labels)
        history.append(dict(epoch=epoch + 1, loss=loss_sum / seen, train_accuracy=correct / seen))
        print(f'stand-in epoch {epoch + 1}/{args["epochs"]}: loss {loss_sum / seen:.3f}, train accuracy '
              f'{correct / seen:.3f}', flush=True)
    return dict(steps=step, history=history)


@torch.no_grad()
def _embed(model: torch.nn.Module, dataset, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size)
    return torch.cat([model(images) for images, _, _, _ in loader])  # num_classes=0: the pooled features


def standin_retrieval_map(folder: Path) -> float:
    """mAP of the stand-in's pooled features on the glyph benchmark's test split (the table's subset: 700 queries,
    6,000 gallery images), with the re-ID camera rule."""
    model = timm.create_model(ARCHITECTURE, num_classes=0)
    state = {k: v for k, v in load_file(str(folder / 'model.safetensors')).items() if not k.startswith('fc.')}
    model.load_state_dict(state)
    test = subset_retrieval_data(load_glyphs(), max_query=700, max_gallery=6000)
    tf = build_transforms(model, train=False, input_size=INPUT_SIZE, crop_pct=1.0)
    query, gallery = (with_image_transform(split, tf) for split in (test.query, test.gallery))
    metrics = retrieval_metrics(
        query=F.normalize(_embed(model, query), dim=1), gallery=F.normalize(_embed(model, gallery), dim=1),
        query_labels=torch.tensor(test.query['label']), gallery_labels=torch.tensor(test.gallery['label']),
        query_cameras=torch.tensor(test.query['camera']), gallery_cameras=torch.tensor(test.gallery['camera']))
    return float(metrics['mAP'])


def build_standin(output: Path = DEFAULT_OUTPUT, codepoints: range = STANDIN_CODEPOINTS, evaluate: bool = True,
                  **overrides) -> Path:
    """The stand-in's checkpoint folder: cached when ``output/standin.json`` records the same arguments, else trained
    into a temporary folder that replaces ``output`` whole once complete (a killed build leaves no half checkpoint).

    Args:
        output: The folder (``model.safetensors``, ``config.json``, ``standin.json``).
        codepoints: Candidate characters (those every face covers are the classes); past the benchmark's.
        evaluate: Also measure the stand-in's retrieval on the benchmark's test split (``benchmark_test_map``).
        **overrides: Any of ``BUILD_ARGS`` (tests build a small one).

    Raises:
        ValueError: ``codepoints`` reach into the benchmark's own characters.
    """
    if codepoints.start < DEFAULT_CODEPOINTS.stop:
        raise ValueError(f'the stand-in\'s code points must lie past the benchmark\'s (from '
                         f'{DEFAULT_CODEPOINTS.stop:#x}), got {codepoints.start:#x}: it would pretrain on training or '
                         'test characters.')
    args = dict(BUILD_ARGS, **overrides)
    described = dict(architecture=ARCHITECTURE, codepoints=[codepoints.start, codepoints.stop],
                     input_size=list(INPUT_SIZE), **args)
    record = output / 'standin.json'
    if record.is_file() and json.loads(record.read_text()).get('arguments') == described:
        return output
    torch.manual_seed(args['seed'])
    start, cpu_start = time.time(), _cpu_seconds()
    # num_test=2: the characters are rendered for their training split only; the test split is never read
    data = load_glyphs(codepoints=codepoints, num_train=args['num_classes'], num_test=2, seed=args['seed'])
    model = timm.create_model(ARCHITECTURE, num_classes=data.num_classes)
    tf = build_transforms(model, train=True, input_size=INPUT_SIZE, hflip=0.5, re_prob=0., scale=(0.64, 1.0))
    generator = torch.Generator().manual_seed(args['seed'])
    loader = DataLoader(with_image_transform(data.train, tf), batch_size=args['batch_size'], shuffle=True,
                        drop_last=True, generator=generator)
    training = _train(model, loader, args)
    staging = temp_path_for(output)
    try:
        timm.models.save_for_hf(model, str(staging), safe_serialization=True)
        result = dict(arguments=described, num_images=len(data.train), **training,
                      seconds=round(time.time() - start, 1), cpu_seconds=round(_cpu_seconds() - cpu_start, 1))
        if evaluate:
            result['benchmark_test_map'] = standin_retrieval_map(staging)
        write_json_atomically(staging / 'standin.json', result)  # written last: marks a complete build
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output', type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = build_standin(args.output)
    print(json.dumps({k: v for k, v in json.loads((folder / 'standin.json').read_text()).items() if k != 'history'},
                     indent=1))
    print(f'stand-in checkpoint: {folder}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
