"""What a training source records about how weights were made: our ``train-cifar`` run (its record ``run.json`` and
log, up to the exported checkpoint's step: :func:`train_cifar_source`), timm ``train.py``'s ``summary.csv`` with its
``args.yaml`` (and a webdataset folder's ``_info.json`` for the evaluated split's size). Read here; rendered into
the model card by :mod:`.model_card`. Nothing is ever filled in from the paper's recipe: what a source does not
record stays ``None``.
"""
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

__all__ = ['Metric', 'TrainingRecord', 'TrainingSummary', 'read_timm_summary', 'read_timm_summary_csv',
           'train_cifar_source', 'train_cifar_record', 'merge_same_point', 'portable_command']


@dataclass
class Metric:
    """A measured number. ``kind`` 'error' or 'accuracy' (percent); 'top1' / 'top5'; ``which`` a label
    such as 'final' or 'best during training'; ``step`` the training step (or epoch, for timm train.py) whose
    weights were measured, if known; ``of_these_weights``: measured on the exported weights themselves (only
    those go into the card's model-index metadata; the others are in its text, labelled)."""
    kind: str
    value: float
    topk: int = 1
    which: str = 'final'
    step: Optional[int] = None
    of_these_weights: bool = True
    step_unit: str = 'step'  # 'epoch' for timm train.py
    also_best: bool = False  # a 'final' metric that is also the run's best (same point): listed once

    @property
    def accuracy(self) -> float:
        return self.value if self.kind == 'accuracy' else 100. - self.value

    @property
    def error(self) -> float:
        return self.value if self.kind == 'error' else 100. - self.value


@dataclass
class TrainingRecord:
    """What the training source (summary, settings, checkpoint) records about how the weights were made.
    None: not recorded, and the card says so; nothing here is ever filled in from the paper's recipe."""
    trainer: Optional[str] = None       # 'timm-identity train-cifar', 'timm train.py', ...
    recipe: Optional[str] = None        # the named recipe and what differs from it, or the key settings
    command: Optional[str] = None       # the command line
    length: Optional[str] = None        # '16 optimizer steps of 16 planned (4.00 epochs of 64 images)'
    weights_from: Optional[str] = None  # which point of the run the exported weights are
    eval_split: Optional[str] = None    # the split the metrics were measured on
    eval_images: Optional[int] = None   # its size
    eval_images_source: Optional[str] = None  # where the size comes from, if not from the run itself
    eval_count: Optional[str] = None    # whether the evaluation counted every image of the split once


@dataclass
class TrainingSummary:
    """What a training source says of the exported weights (:func:`train_cifar_source`, :func:`read_timm_summary`)."""
    metrics: List[Metric]
    details: Dict[str, Any]       # extra facts for the card (wall time, device)
    training: TrainingRecord
    raw: Dict[str, Any]           # the file's content (timm summary.csv: its rows and args.yaml)


def read_timm_summary(path: Union[str, Path]) -> TrainingSummary:
    """Metrics and training facts from timm ``train.py``'s ``summary.csv`` (see :func:`read_timm_summary_csv`):
    ``eval_top1`` / ``eval_top5`` (accuracy, percent) of the last epoch (final) and of the epoch with the best
    ``eval_top1`` (best); train.py's ``args.yaml`` beside it gives the settings and the evaluated split. Any error
    names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Summary file not found: {path}')
    if path.suffix.lower() != '.csv':
        raise ValueError(f'{path}: expected timm train.py\'s summary.csv')
    return _read_timm_summary(path)


def train_cifar_source(record: Dict[str, Any], records: List[Dict[str, Any]], step: int, ema: bool,
                       status: Optional[str]) -> TrainingSummary:
    """What a ``train-cifar`` run says of its checkpoint of step ``step``: from the run record (``record``: settings,
    data, starts) and the log (``records``), up to that step. ``ema``: the exported weights are the EMA's, so the
    metrics are the EMA's evaluations. ``status``: how the run stood at that checkpoint (the run's summary when it
    was written for it; else whether the step is the run's planned end)."""
    from ..train.run_record import config_at
    cfg = config_at(record, step)  # as the run was when it trained up to this step
    key, top5 = ('ema_test_error', 'ema_test_top5') if ema else ('test_error', 'test_top5')
    evals = [r for r in records if r['step'] <= step and r.get(key) is not None]
    metrics: List[Metric] = []
    if evals:
        for which, r in (('final', evals[-1]), ('best during training', min(evals, key=lambda r: r[key]))):
            metrics.append(Metric('error', float(r[key]), 1, which, step=r['step'], of_these_weights=r['step'] == step))
            if r.get(top5) is not None:
                metrics.append(Metric('accuracy', float(r[top5]), 5, which, step=r['step'],
                                      of_these_weights=r['step'] == step))
    metrics = merge_same_point(metrics)
    starts = [s for s in record['starts'] if s['step'] < step] or record['starts'][:1]
    start = starts[-1] if starts else {}
    epochs = step * cfg['batch_size'] / record['data']['train_images']
    training = train_cifar_record(cfg, step, epochs, start.get('argv'), status, resumed=start.get('step', 0) > 0)
    training.eval_split, training.eval_images = 'test', record['data']['test_images']
    details: Dict[str, Any] = {'training compute': training_compute(cfg, record, step)}
    at_step = next((r for r in records if r['step'] == step), None)
    if at_step is not None and isinstance(at_step.get('wall_time_s'), (int, float)):
        details['training wall time'] = f'{at_step["wall_time_s"]:,.0f} s'
    if start.get('device'):
        details['training device'] = start['device']
    return TrainingSummary(metrics, details, training, {})


def training_compute(cfg: Dict[str, Any], record: Dict[str, Any], step: int) -> str:
    """Images seen up to ``step`` and their training FLOPs (forward + backward of the run's model, counted by
    torch's FLOP counter: timm_identity.report.training_flops_per_image; a frozen backbone gets no weight
    gradients), for the card."""
    from timm_identity.report import run_flops_per_image
    flops = run_flops_per_image(cfg)
    images = step * cfg['batch_size']
    return (f'{images:,} images seen x {flops / 1e9:.4f} GFLOP per image (forward + backward, torch '
            f'FlopCounterMode) = {images * flops / 1e12:,.1f} TFLOP')


def merge_same_point(metrics: List[Metric]) -> List[Metric]:
    """One metric where the run's best point is its final one (same step, same value): the 'final' metric,
    marked ``also_best``, so that the card lists the number once."""
    def twin(best: Metric, final: Metric) -> bool:
        return (best.which == 'best during training' and final.which == 'final' and best.topk == final.topk
                and best.step is not None and best.step == final.step and best.value == final.value)
    out = []
    for m in metrics:
        if any(twin(m, f) for f in metrics):
            continue
        if any(twin(b, m) for b in metrics):
            m = dataclasses.replace(m, also_best=True)
        out.append(m)
    return out


def portable_command(words: Sequence[str]) -> Tuple[List[str], Optional[str]]:
    """``words`` with an absolute ``--data-dir`` shortened to its last component (the training machine's own
    folder would not run anywhere else), and a note saying where to run the command; (words, None) otherwise."""
    words, notes = list(words), []
    for i, word in enumerate(words):
        flag, eq, value = word.partition('=')
        if flag != '--data-dir':
            continue
        if not eq and i + 1 < len(words):
            value = words[i + 1]
        if not Path(value).is_absolute():
            continue
        short = Path(value).name
        if eq:
            words[i] = f'--data-dir={short}'
        else:
            words[i + 1] = short
        notes.append(f'run it in the folder that holds `{short}`, the official release')
    return words, '; '.join(notes) or None


def train_cifar_record(config: Dict[str, Any], steps: Optional[int] = None, epochs: Optional[float] = None,
                       argv: Optional[Sequence[str]] = None, status: Optional[str] = None,
                       resumed: bool = False) -> TrainingRecord:
    """The :class:`TrainingRecord` of a ``train-cifar`` run from its record (``config``, steps done, command
    line of the process that trained up to them)."""
    import shlex
    from timm_identity.train.recipes import RECIPES
    record = TrainingRecord()
    if not config and argv is None and steps is None:
        return record
    record.trainer = 'timm-identity train-cifar'
    name = config.get('recipe')
    if name in RECIPES:
        def norm(v):
            return list(v) if isinstance(v, (list, tuple)) else v
        changed = [f'{k} {config[k]} (recipe: {v})' for k, v in RECIPES[name].items()
                   if k in config and norm(config[k]) != norm(v)]
        record.recipe = f'`{name}` (timm_identity/train/recipes.py)' + (
            f', changed: {", ".join(changed)}' if changed else ', unchanged')
    elif name:
        record.recipe = f'`{name}` (not a recipe of this version of timm-identity)'
    if argv:
        words, note = portable_command([Path(argv[0]).name, *argv[1:]])
        record.command = f'`{shlex.join(words)}`' + (' (the last start of a resumed run)' if resumed else '') + (
            f' ({note})' if note else '')
    if steps is not None:
        planned = f' of {config["steps"]:,} planned' if config.get('steps') else ''
        record.length = f'{steps:,} optimizer steps{planned}' + (
            f' ({epochs:.2f} epochs)' if isinstance(epochs, (int, float)) else '') + (
            ', a checkpoint during the run' if status == 'running' else
            f', stopped: {status}' if status and status != 'completed' else '')
    return record


def read_timm_summary_csv(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The epochs of a timm ``train.py`` run from its ``summary.csv``, read the way train.py writes it.

    train.py appends one row per evaluated epoch and writes the header again whenever it starts (so once
    more after every ``--resume`` into the same folder); a process killed while writing leaves a partial
    last row. Here: every header row sets the columns of the rows after it; a row that does not end its
    line, has another number of cells than its header, or a cell that is not a number is partial and
    skipped (with a warning naming the lines); a row for an epoch at or before an earlier row's (train.py
    started again from an older checkpoint) replaces the rows from that epoch on. Returns the rows in
    epoch order, values as numbers (``epoch`` an int).
    """
    import csv
    import logging
    path = Path(path)
    try:
        with open(path, newline='') as f:  # keep '\r\n': a row without its line end is partial
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f'{path}: not readable as a text file ({e})') from None
    header: Optional[List[str]] = None
    rows: List[Dict[str, Any]] = []
    skipped: List[int] = []
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        cells = next(csv.reader([line]), [])
        if not any(c.strip() for c in cells):
            continue
        if cells[0].strip() == 'epoch':
            header = [c.strip() for c in cells]
            continue
        if header is None:
            raise ValueError(f'{path}:{lineno}: a row before any header row (expected timm train.py\'s '
                             f'summary.csv, which starts with "epoch,...").')
        try:
            values = [float(c) for c in cells]
        except ValueError:
            values = None
        if values is None or len(cells) != len(header) or not line.endswith(('\n', '\r')):
            skipped.append(lineno)
            continue
        row: Dict[str, Any] = dict(zip(header, values))
        row['epoch'] = int(row['epoch'])
        rows = [r for r in rows if r['epoch'] < row['epoch']] + [row]
    if skipped:
        logging.getLogger(__name__).warning(
            f'{path}: skipped partial row(s) on line(s) {skipped} (a train.py process stopped while writing).')
    return rows


def _read_timm_summary(path: Path) -> TrainingSummary:
    rows = read_timm_summary_csv(path)
    evaluated = [r for r in rows if 'eval_top1' in r]
    if not evaluated:
        raise ValueError(f'{path}: no rows with an eval_top1 column (expected timm train.py summary.csv).')
    best = max(evaluated, key=lambda r: r['eval_top1'])
    final = evaluated[-1]
    metrics: List[Metric] = []
    for which, row in (('final', final), ('best during training', best)):
        metrics.append(Metric('accuracy', row['eval_top1'], 1, which, step=row['epoch'], step_unit='epoch'))
        if 'eval_top5' in row:
            metrics.append(Metric('accuracy', row['eval_top5'], 5, which, step=row['epoch'], step_unit='epoch'))
    metrics = merge_same_point(metrics)
    args = _read_timm_args(path.parent / 'args.yaml')
    training = TrainingRecord(trainer='timm train.py')
    if args:
        keys = ('model', 'opt', 'lr', 'momentum', 'weight_decay', 'batch_size', 'sched', 'decay_milestones',
                'decay_epochs', 'decay_rate', 'warmup_epochs', 'epochs', 'smoothing', 'mixup', 'cutmix',
                'model_ema')
        settings = ', '.join(f'{k} {args[k]}' for k in keys if args.get(k) not in (None, '', False))
        training.recipe = f'{settings} (args.yaml; all settings there)'
    planned = f' of {args["epochs"]} planned' if args.get('epochs') else ''
    training.length = f'{rows[-1]["epoch"] + 1} epochs{planned} (summary.csv)'
    if args.get('val_split'):
        training.eval_split = str(args['val_split'])
        training.eval_images, training.eval_images_source = _wds_split_size(args.get('data_dir'), training.eval_split)
        training.eval_count = _timm_eval_count(path.parent, args)
    details = {'final epoch': final['epoch'], 'best epoch': best['epoch']}
    raw = dict(rows=rows, args=args, dataset=args.get('dataset'))
    return TrainingSummary(metrics, details, training, raw)


def _read_timm_args(path: Path) -> Dict[str, Any]:
    """train.py's ``args.yaml`` (its resolved settings; rewritten at every start), or {} if there is none."""
    if not path.is_file():
        return {}
    try:
        args = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f'{path}: not readable as YAML ({e})') from None
    return args if isinstance(args, dict) else {}


NOT_CHECKED = 'not checked'


def _timm_eval_count(run_dir: Path, args: Dict[str, Any]) -> str:
    """How train.py's validation counted the split, from the launcher's record in the run folder: exactly once
    (one process, or webdataset shards the launcher checked), padded (timm's distributed sampler over other
    datasets repeats up to processes - 1 images), or not checked (the run was not started through the launcher)."""
    from ..distributed import read_launch_record
    record = read_launch_record(run_dir)
    if record is None:
        return (f'{NOT_CHECKED}: the run was not started through `python -m timm_identity.run_script`, which checks '
                f'that distributed validation counts every image exactly once (with several processes timm can count '
                f'some images twice)')
    if record.get('validation_count'):
        return str(record['validation_count'])
    if int(record.get('world_size') or 1) == 1:
        return 'every image of the split exactly once (one process)'
    if str(record.get('dataset') or '').startswith('wds/'):
        return (f"{NOT_CHECKED}: {record['world_size']} processes over webdataset shards whose validation layout "
                f"could not be read from _info.json (or --val-num-samples was given)")
    return (f"not exactly once: {record['world_size']} processes, and timm's distributed sampler pads the split to a "
            f"multiple of the process count (up to {int(record['world_size']) - 1} images counted twice)")


def _wds_split_size(data_dir: Optional[str], split: str) -> Tuple[Optional[int], Optional[str]]:
    """``num_samples`` of ``split`` in the ``_info.json`` of a webdataset folder (timm's wds reader reads the
    same), if that folder is still there."""
    info = Path(data_dir) / '_info.json' if data_dir else None
    if info is None or not info.is_file():
        return None, None
    try:
        n = json.loads(info.read_text())['splits'][split]['num_samples']
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    return (int(n), f'{info} as it is now') if isinstance(n, int) else (None, None)
