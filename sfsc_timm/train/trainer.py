""" The training loop: model, data, method step, schedule, per-epoch compatibility matrix, checkpoints, export. """
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import timm
import torch
from timm.scheduler import create_scheduler_v2
from timm.utils import AverageMeter, distribute_bn, random_seed
from tqdm.auto import tqdm

from ..atomic_io import staged_folder, write_json_atomically, write_text_atomically
from ..data.image_check import check_images
from ..eval import compatibility_matrix, format_compatibility_table, plot_compatibility_heatmap
from ..models import CheckpointError, ModelSet
from .checkpointing import load_weights, rng_state, save_checkpoint, save_network, set_rng_state
from .config import ConfigError, TrainConfig, check_pretrained_file, save_config
from .data import TrainData, build_train_data, load_dataset, split_training_data
from .distributed import DistInfo, barrier, gather_objects, setup_distributed
from .methods import METHODS, create_train_step
from .steps import TrainStep

__all__ = ['NonFiniteLossError', 'Trainer', 'create_model']

_logger = logging.getLogger(__name__)

STATE_FORMAT = 1


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss; training stopped, the last good checkpoint is untouched."""


def create_model(cfg: TrainConfig, num_classes: int, label_names: Optional[List[str]] = None,
                 load_pretrained: bool = True) -> torch.nn.Module:
    """The recipe's supernet with a shared classifier of `num_classes` (named `label_names`, saved in config.json).

    With ``pretrained: true`` (and `load_pretrained`) its weights come from ``pretrained_file`` or the model's
    registered ones; a resumed run passes ``load_pretrained=False``, as its checkpoint replaces them anyway.

    Raises:
        ConfigError: unknown model, widths / sizes the model cannot be built with, or weights that cannot be loaded.
    """
    if not timm.is_model(cfg.model) or not cfg.model.startswith('sfsc_'):
        raise ConfigError(f'unknown model {cfg.model!r}; available: {", ".join(timm.list_models("sfsc_*"))}.')
    pretrained = cfg.pretrained and load_pretrained
    if pretrained:
        check_pretrained_file(cfg)
    overlay: Dict[str, Any] = dict(input_size=tuple(cfg.input_size), crop_pct=cfg.crop_pct,
                                   label_names=tuple(label_names) if label_names else None)
    if pretrained and cfg.pretrained_file is not None:
        overlay['file'] = cfg.pretrained_file
    kwargs: Dict[str, Any] = dict(
        num_classes=num_classes, widths=tuple(cfg.widths), embed_dim=cfg.embed_dim, in_chans=cfg.input_size[0],
        pretrained=pretrained, pretrained_cfg_overlay=overlay)
    if cfg.drop_path_rate:
        kwargs['drop_path_rate'] = cfg.drop_path_rate
    if cfg.last_stride != 2:  # passed only when changed: 2 is every backbone's own, and not every model takes the key
        kwargs['last_stride'] = cfg.last_stride
    try:
        if METHODS[cfg.method].step.network == 'model_set':
            kwargs.pop('widths')  # every member is built with the recipe's widths by ModelSet.create
            return ModelSet.create(cfg.model, cfg.widths, **kwargs)
        return timm.create_model(cfg.model, **kwargs)
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        if pretrained and isinstance(err, (CheckpointError, OSError, RuntimeError)):  # the weights, not the model
            source = f'pretrained_file={cfg.pretrained_file!r}' if cfg.pretrained_file else f"{cfg.model}'s weights"
            raise ConfigError(f'recipe key pretrained: true: cannot load {source}: {err}') from err
        if isinstance(err, (OSError, RuntimeError)):
            raise
        # a ValueError: sizes the model cannot take; a TypeError: an argument it does not take (e.g. last_stride)
        stride = f', last_stride={cfg.last_stride}' if cfg.last_stride != 2 else ''
        raise ConfigError(f'cannot build {cfg.model} with widths={cfg.widths}, embed_dim={cfg.embed_dim}, '
                          f'input_size={cfg.input_size}{stride}: {err}') from err


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, 'item'):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f'{type(value).__name__} is not JSON serialisable')


class Trainer:
    """Trains one recipe; ``run()`` goes from the start (or a resumed checkpoint) to the exported model.

    Args:
        cfg: Resolved, validated config.
        resume_state: ``training_state.pt`` of the checkpoint to continue from (None: start fresh).
        resume_folder: That checkpoint's folder (its weights are loaded).
        stop_after: Stop after this many epochs of this invocation, as if killed (no final export).
    """

    def __init__(self, cfg: TrainConfig, resume_state: Optional[Dict[str, Any]] = None,
                 resume_folder: Optional[Path] = None, stop_after: Optional[int] = None):
        self.cfg = cfg
        self.stop_after = stop_after
        self.dist: DistInfo = setup_distributed(cfg.device)
        self.run_dir = cfg.run_dir
        self.primary = self.dist.is_primary

        data = load_dataset(cfg)
        if self.primary:  # an unreadable file would otherwise stop the run in epoch 1, or at its final evaluation
            check_images([('train', data.train), ('query', data.query), ('gallery', data.gallery)], data.name)
        split = split_training_data(cfg, data)
        random_seed(cfg.seed, 0)  # the same initial weights on every rank
        names = getattr(split.train.features.get('label'), 'names', None)  # a ClassLabel's, for config.json
        # a resumed run's checkpoint holds its weights: the pretrained ones are not read again
        self.net = create_model(cfg, split.num_classes, names, load_pretrained=resume_state is None)
        self.net = self.net.to(self.dist.device)
        self.data: TrainData = build_train_data(cfg, data, split, self.net, self.dist)
        self.step: TrainStep = create_train_step(cfg, self.net, self.dist)
        self.updates_per_epoch = len(self.data.loader)
        # staged baselines train `epochs` per stage; the schedule restarts for each stage (one cycle per stage)
        self.total_epochs = cfg.epochs * self.step.num_stages
        self.scheduler, _ = create_scheduler_v2(
            self.step.optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
            warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=not cfg.sched_on_updates,
            updates_per_epoch=self.updates_per_epoch, cycle_limit=self.step.num_stages, cycle_decay=1.0)
        self.start_epoch = 0
        self.best_metric: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.nonfinite_total = 0
        self.consecutive_nonfinite = 0  # counted across epochs: an epoch may have fewer steps than the limit
        if resume_state is not None:
            self._restore(resume_state, resume_folder)
        else:
            random_seed(cfg.seed, self.dist.rank)  # each rank its own augmentations

    # --- state ---

    def _restore(self, state: Dict[str, Any], folder: Path) -> None:
        load_weights(folder, self.net)
        self.step.load_state_dict(state['step'])
        self.scheduler.load_state_dict(state['scheduler'])
        self.start_epoch = int(state['epoch'])
        self.best_metric, self.best_epoch = state.get('best_metric'), state.get('best_epoch')
        self.nonfinite_total = int(state.get('nonfinite_total', 0))
        self.consecutive_nonfinite = int(state.get('consecutive_nonfinite', 0))
        rng = state['rng']
        if len(rng) != self.dist.world_size:
            _logger.warning('the checkpoint was written by %d process(es), this run has %d: RNG streams restart from '
                            'rank 0\'s state plus the rank', len(rng), self.dist.world_size)
        set_rng_state(rng[self.dist.rank % len(rng)])
        if self.start_epoch > 0 and not self.cfg.sched_on_updates:
            self.scheduler.step(self.start_epoch)

    def training_state(self, epoch: int, rng: List[Dict[str, Any]]) -> Dict[str, Any]:
        """What ``training_state.pt`` holds after `epoch` epochs."""
        return dict(
            format=STATE_FORMAT, epoch=epoch, num_updates=epoch * self.updates_per_epoch, step=self.step.state_dict(),
            scheduler=self.scheduler.state_dict(), rng=rng, config=self.cfg.to_dict(), best_metric=self.best_metric,
            best_epoch=self.best_epoch, nonfinite_total=self.nonfinite_total,
            consecutive_nonfinite=self.consecutive_nonfinite)

    # --- loop ---

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        self.net.train()
        self.data.sampler.set_epoch(epoch)
        loss_meter = AverageMeter()
        width_meters: Dict[str, List[AverageMeter]] = {}  # per-width means of what the step reports
        conflicts, skipped = 0, 0
        layer_counts = dict(layer_pairs=0, layer_conflicts=0, layer_conflicts_widest=0)
        num_updates = epoch * self.updates_per_epoch
        bar = tqdm(self.data.loader, desc=f'epoch {epoch + 1}/{self.total_epochs}', leave=False,
                   disable=not (self.primary and self.cfg.progress), dynamic_ncols=True)
        for batch_idx, (images, labels, _, _) in enumerate(bar):
            images = images.to(self.dist.device, non_blocking=True)
            labels = labels.to(self.dist.device, non_blocking=True)
            result = self.step(images, labels, epoch + batch_idx / self.updates_per_epoch)
            if result.skipped:
                skipped += 1
                self.consecutive_nonfinite += 1
                self.nonfinite_total += 1
                if self.consecutive_nonfinite >= self.cfg.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f'{self.consecutive_nonfinite} consecutive steps had a non-finite loss (epoch {epoch + 1}, '
                        f'step {batch_idx + 1}; per-width losses {result.width_losses}); training stopped. '
                        + self._divergence_advice())
                continue
            self.consecutive_nonfinite = 0
            num_updates += 1
            loss_meter.update(result.loss, images.shape[0])
            for key in ('width_losses', 'priorities', 'uncertainties'):
                values = getattr(result, key)
                meters = width_meters.setdefault(key, [AverageMeter() for _ in values])
                for meter, value in zip(meters, values):
                    meter.update(value)
            conflicts += result.num_conflicts
            for key in layer_counts:
                layer_counts[key] += getattr(result, key)
            self.scheduler.step_update(num_updates=num_updates)
            bar.set_postfix(loss=f'{result.loss:.3f}', conflicts=result.num_conflicts,
                            lr=f'{self.step.optimizer.param_groups[0]["lr"]:.3g}')
        bar.close()
        # widest first, as the step reports them; uncertainties only for methods with the uncertainty loss
        per_width = {key: [round(m.avg, 6) for m in meters] for key, meters in width_meters.items() if meters}
        # layer_*: how often the widths' gradients of one shared parameter pulled apart (methods that compare them)
        measured = layer_counts if layer_counts['layer_pairs'] else {}
        return dict(train_loss=loss_meter.avg, conflicts=conflicts, skipped_steps=skipped,
                    lr=self.step.optimizer.param_groups[0]['lr'], **per_width, **measured)

    def _divergence_advice(self) -> str:
        # advice the resume check accepts: clip_grad may change on --resume (RESUME_ADJUSTABLE_KEYS), lr may not
        clip = self.cfg.clip_grad / 2 if self.cfg.clip_grad else 5.0
        if (self.run_dir / 'checkpoints' / 'last').is_dir():
            return (f'The last good checkpoint in {self.run_dir / "checkpoints"} is untouched: continue from it with '
                    f"gradient clipping, 'sfsc-timm train --resume {self.run_dir} --clip-grad {clip:g}', or start a "
                    f'new run with a lower lr (now {self.cfg.lr:g}) and another --output; if it recurs, check the '
                    'data.')
        return (f'No checkpoint was written yet: start a new run with another --output and --clip-grad {clip:g} or a '
                f'lower lr (now {self.cfg.lr:g}); if it recurs, check the data.')

    def _check_weights_finite(self, epoch: int) -> None:
        # a gradient that overflows with a finite loss makes the weights non-finite; every later loss is then
        # skipped, and no evaluation or checkpoint may see such a model
        bad = [name for name, t in list(self.net.named_parameters()) + list(self.net.named_buffers())
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise NonFiniteLossError(
                f'after epoch {epoch + 1} the weights are non-finite ({len(bad)} tensors, e.g. {bad[0]}): a gradient '
                f'overflowed; training stopped. ' + self._divergence_advice())

    def evaluate(self, query, gallery, desc: str):
        """Compatibility matrix of every width pair (rank 0 only)."""
        return compatibility_matrix(self.net, query=query, gallery=gallery, batch_size=self.cfg.eval_batch_size,
                                    device=self.dist.device, progress=self.cfg.progress)

    def _due_for_eval(self, epoch: int) -> bool:
        # depends on the recipe only (not on --stop-after), so a resumed run draws the same random numbers
        return (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.total_epochs

    def run(self) -> Optional[Dict[str, Any]]:
        """Train to ``cfg.epochs`` (or ``stop_after`` more epochs); returns the final metrics on rank 0."""
        cfg = self.cfg
        if self.primary:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / 'config.yaml')
            self._trim_metrics_log(self.start_epoch)
            print(f'run folder: {self.run_dir}  method: {cfg.method}  widths: {cfg.widths}  '
                  f'processes: {self.dist.world_size}  data: {self.data.sizes}')
        done_this_run = 0
        for epoch in range(self.start_epoch, self.total_epochs):
            start = time.time()
            stats = self.train_one_epoch(epoch)
            self.scheduler.step(epoch + 1)  # epoch-based schedules; a no-op when stepping on updates
            if self.dist.distributed:
                distribute_bn(self.net, self.dist.world_size, reduce=True)
            self._check_weights_finite(epoch)
            record: Dict[str, Any] = dict(epoch=epoch + 1, **stats)
            if self._due_for_eval(epoch) and self.primary:
                result = self.evaluate(self.data.val_query, self.data.val_gallery, 'val')
                record.update(val_matrix=result.matrix, val_mean=result.summary['mean'],
                              self_compatible=result.summary['self_compatible'])
                print(f'epoch {epoch + 1}: loss {stats["train_loss"]:.4f}, conflicts {stats["conflicts"]}, '
                      f'skipped {stats["skipped_steps"]}, val mean mAP {100 * record["val_mean"]:.2f}\n'
                      + format_compatibility_table(result.matrix, result.widths))
            record['time_s'] = round(time.time() - start, 2)
            self._end_of_epoch(epoch, record)
            done_this_run += 1
            if self.stop_after is not None and done_this_run >= self.stop_after and epoch + 1 < self.total_epochs:
                if self.primary:
                    print(f'stopped after epoch {epoch + 1} (--stop-after {self.stop_after}); continue with '
                          f'--resume {self.run_dir}')
                return None
        return self.finish()

    def _end_of_epoch(self, epoch: int, record: Dict[str, Any]) -> None:
        is_best = 'val_mean' in record and (self.best_metric is None or record['val_mean'] > self.best_metric)
        if is_best:
            self.best_metric, self.best_epoch = record['val_mean'], epoch + 1
        rng = gather_objects(rng_state())  # every rank's streams, so a resumed distributed run continues them all
        if self.primary:
            with open(self.run_dir / 'metrics.jsonl', 'a') as f:
                f.write(json.dumps(record, default=_json_default) + '\n')
            state = self.training_state(epoch + 1, rng)
            save_checkpoint(self.run_dir / 'checkpoints' / 'last', self.net, state)
            if is_best:
                save_checkpoint(self.run_dir / 'checkpoints' / 'best', self.net, state)
        barrier()

    def _trim_metrics_log(self, start_epoch: int) -> None:
        # a killed run may have logged epochs after its last checkpoint; they are about to be trained again
        path = self.run_dir / 'metrics.jsonl'
        if not path.is_file():
            return
        kept = []
        for number, line in enumerate(path.read_text(errors='replace').splitlines(), 1):
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:  # a line torn by the kill: the epoch it logged is trained again
                _logger.warning('%s line %d is incomplete (the run was killed while writing it); dropping it',
                                path, number)
                continue
            if isinstance(record, dict) and record.get('epoch', 0) <= start_epoch:
                kept.append(line)
        write_text_atomically(path, ''.join(line + '\n' for line in kept))

    def finish(self) -> Optional[Dict[str, Any]]:
        """Final compatibility matrix on the full query / gallery, then the export folder (rank 0)."""
        metrics = None
        if self.primary:
            # the only place the query / gallery splits are read
            test_query, test_gallery = self.data.test_sets()
            result = self.evaluate(test_query, test_gallery, 'test')
            summary = result.summary
            sizes = dict(self.data.sizes, test_query=len(test_query), test_gallery=len(test_gallery))
            print(f'final compatibility matrix (mAP %, query {len(test_query)} / gallery {len(test_gallery)}), mean '
                  f'{100 * summary["mean"]:.2f}, self-compatible {summary["self_compatible"]}:\n'
                  + format_compatibility_table(result.matrix, result.widths))
            metrics = dict(
                model=self.cfg.model, method=self.cfg.method, dataset=self.cfg.dataset, epochs=self.cfg.epochs,
                widths=list(result.widths), matrix=result.matrix, summary=summary, metrics=result.metrics,
                best_val_mean=self.best_metric, best_epoch=self.best_epoch, nonfinite_steps=self.nonfinite_total,
                validation=self.data.validation, data_sizes=sizes, recipe=self.cfg.to_dict())
            self.export(metrics, result)
        barrier()
        return metrics

    def export(self, metrics: Dict[str, Any], result) -> Path:
        """``RUN/export``: model.safetensors, config.json, metrics.json and compatibility.png, swapped in whole."""
        target = self.run_dir / 'export'
        with staged_folder(target) as staging:
            save_network(self.net, staging)
            write_json_atomically(staging / 'metrics.json', metrics, default=_json_default)
            plot_compatibility_heatmap(result.matrix, result.widths, staging / 'compatibility.png',
                                       title=f'{self.cfg.model} ({self.cfg.method}) on {self.cfg.dataset}')
        print(f'exported to {target}')
        return target
