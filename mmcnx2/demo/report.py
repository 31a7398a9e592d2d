# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Read a training run's logged scalars and turn runs into the demo's plots and summary."""
import glob
import json
import os.path as osp
from typing import Dict, List, Optional, Tuple

# The headline metric each codebase logs, under a short name, with its scale:
# mmpretrain and mmseg log percentages, mmdet's CocoMetric logs fractions.
METRICS = {
    'accuracy/top1': ('top1', 100),
    'coco/bbox_mAP': ('bbox_mAP', 1),
    'coco/segm_mAP': ('segm_mAP', 1),
    'mIoU': ('mIoU', 100),
}


def find_scalars(work_dir: str) -> str:
    """Path of the newest run's ``vis_data/scalars.json`` in an mmengine work_dir."""
    # each run writes <work_dir>/<timestamp>/vis_data/scalars.json; timestamps sort by time
    paths = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not paths:
        raise FileNotFoundError(f'no */vis_data/scalars.json in work_dir {work_dir}')
    return paths[-1]


def read_scalars(path: str) -> Tuple[List[Tuple[int, float]], Dict[str, float]]:
    """Training losses and the last validation metrics logged in a scalars.json.

    Returns:
        tuple: ``[(iteration, loss), ...]`` of every logged training step and
        ``{short_name: value}`` of the last logged validation metrics (see ``METRICS``).
    """
    losses, metrics = [], {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}:{line_no} is not a JSON line: {e}') from e
            if 'loss' in record:
                losses.append((int(record['step']), float(record['loss'])))
            for key, (name, _) in METRICS.items():
                if key in record:
                    metrics[name] = float(record[key])
    return losses, metrics


def metric_scale(name: str) -> int:
    """Upper bound of a metric's range (100 for percentages, 1 for fractions)."""
    for short, scale in METRICS.values():
        if short == name:
            return scale
    raise KeyError(f'unknown metric {name!r}; known: {[m for m, _ in METRICS.values()]}')


def plot_loss_curves(curves: Dict[str, Dict[str, List[Tuple[int, float]]]],
                     out_file: str) -> None:
    """One panel per task, one line per run.

    Args:
        curves: ``{panel title: {run label: [(iteration, loss), ...]}}``.
        out_file: PNG path.
    """
    import matplotlib
    matplotlib.use('Agg')  # no screen needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for ax, (title, runs) in zip(axes[0], curves.items()):
        for label, points in runs.items():
            if points:
                its, values = zip(*points)
                ax.plot(its, values, label=label)
        ax.set_title(title)
        ax.set_xlabel('iteration')
        ax.set_ylabel('training loss')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return '-' if value is None else f'{value:.{digits}g}'


def summary_table(stages: Dict[str, dict]) -> str:
    """Markdown table of the stages in ``summary.json`` form."""
    names = [m for m, _ in METRICS.values()]
    lines = [
        '| stage | initialised from | iters | wall (s) | final loss | ' +
        ' | '.join(f'{m} ({"%" if metric_scale(m) == 100 else "0-1"})' for m in names) + ' |',
        '|' + '---|' * (5 + len(names)),
    ]
    for name, s in stages.items():
        metric_cells = [_fmt(s['metrics'].get(m)) for m in names]
        lines.append(f"| {name} | {s['init']} | {s['iters']} | "
                     f"{s['wall_s']:.0f} | {_fmt(s['final_loss'])} | " +
                     ' | '.join(metric_cells) + ' |')
    return '\n'.join(lines)
