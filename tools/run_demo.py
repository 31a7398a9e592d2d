# Copyright (c) mmcnx2 contributors. All rights reserved.
"""The main job: the whole ConvNeXt V2 chain on a generated world, about 7 min on 2 cores.

FCMAE pretraining -> fine-tuning (from the FCMAE checkpoint) -> Mask R-CNN and UperNet
(from the fine-tuned checkpoint), plus the three downstream runs from random initialisation
to show what pretraining buys. Every stage is ``tools/train.py`` with a config of
``configs/demo/``, run from OUT so the configs find the generated data under ``data/``.
Writes into OUT:

- ``data/``: the synthetic world (``mmcnx2.datasets.make_synthetic_world``);
- ``work_dirs/<stage>/``: each run's logs, ``vis_data/scalars.json`` and checkpoint;
- ``summary.json`` and ``summary.md``; ``loss_curves.png``; ``fcmae_reconstructions.png``
  and ``detection*.png`` / ``segmentation*.png`` on held-out images.

Usage:
    python tools/run_demo.py [--out outputs/demo] [--quick] [--seed 0]
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple, Optional

import numpy as np
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)  # as tools/dist_train.sh: run the checkout's mmcnx2

from mmcnx2.datasets import make_synthetic_world  # noqa: E402
from mmcnx2.demo.report import (find_scalars, plot_loss_curves, read_scalars,  # noqa: E402
                                summary_table)


class Stage(NamedTuple):
    name: str
    config: str  # in configs/demo/
    # the stage whose checkpoint the chain variable `pretrained` points at; 'random': the
    # same config from random initialisation; None: the config starts from nothing anyway
    init: Optional[str]
    expected_s: float  # measured wall time of the full run on 2 idle cores, for the time left


FCMAE_CFG = 'fcmae_convnextv2-atto_1xb16-200it_synthetic-96.py'
FT_CFG = 'convnextv2-atto_fcmae-pre_1xb16-150it_synthetic-96.py'
DET_CFG = 'mask-rcnn_convnextv2-atto_fpn_1xb4-150it_synthetic-96.py'
SEG_CFG = 'upernet_convnextv2-atto_1xb4-150it_synthetic-96x96.py'
STAGES = (
    Stage('fcmae', FCMAE_CFG, None, 65),
    Stage('finetune', FT_CFG, 'fcmae', 50),
    Stage('finetune_random', FT_CFG, 'random', 50),
    Stage('mask_rcnn', DET_CFG, 'finetune', 70),
    Stage('mask_rcnn_random', DET_CFG, 'random', 70),
    Stage('upernet', SEG_CFG, 'finetune', 40),
    Stage('upernet_random', SEG_CFG, 'random', 40),
)
IMG_SIZE = 96  # the demo configs' image size
# (train, val) images per layout; --quick: a few iterations on a few images
WORLD = dict(full=(400, 48), quick=(16, 4))
QUICK_ITERS = 2
NUM_PICTURES = 4  # held-out images per picture


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='outputs/demo', help='output folder')
    parser.add_argument(
        '--quick', action='store_true', help=f'{QUICK_ITERS} iterations per stage on '
        f'{WORLD["quick"][0]} images (a smoke test of the whole chain)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the synthetic world')
    return parser.parse_args()


def fmt_time(seconds: float) -> str:
    return f'{int(seconds) // 60}m{int(seconds) % 60:02d}s'


def log(msg: str) -> None:
    print(f'[demo] {msg}', flush=True)


def train(stage: Stage, out: str, init_ckpt: Optional[str], quick: bool) -> str:
    """Run ``tools/train.py`` for one stage from ``out``; returns its work_dir."""
    work_dir = osp.join(out, 'work_dirs', stage.name)
    options = []
    if stage.init == 'random':
        options.append('model.backbone.init_cfg=None')
    elif stage.init is not None:
        options.append(f'pretrained={init_ckpt}')  # the chain variable
    if quick:
        options += [
            f'train_cfg.max_iters={QUICK_ITERS}', f'train_cfg.val_interval={QUICK_ITERS}',
            f'default_hooks.checkpoint.interval={QUICK_ITERS}',
            'default_hooks.logger.interval=1'
        ]
    cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'),
           osp.join(REPO, 'configs', 'demo', stage.config), '--work-dir', work_dir]
    if options:
        cmd += ['--cfg-options'] + options
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
    if subprocess.run(cmd, cwd=out, env=env).returncode:
        raise RuntimeError(f'stage {stage.name} failed: {" ".join(cmd)} (cwd {out}); '
                           f'see the log in {work_dir}')
    return work_dir


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint mmengine's CheckpointHook saved last in ``work_dir``."""
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        path = f.read().strip()
    if not osp.isfile(path):
        raise FileNotFoundError(f'{work_dir}/last_checkpoint names {path}, which is missing')
    return path


def held_out_images(world: dict) -> Dict[str, List[str]]:
    """The first val images of each layout (never seen in training), for the pictures."""
    with open(osp.join(world['imagenet'], 'meta', 'val.txt')) as f:
        cls_images = [osp.join(world['imagenet'], 'val', line.split()[0]) for line in f]
    ade = world['ade']
    names = sorted(os.listdir(osp.join(ade, 'images', 'validation')))[:NUM_PICTURES]
    return dict(
        imagenet=cls_images[:NUM_PICTURES],
        coco=sorted(osp.join(world['coco'], 'val2017', n)
                    for n in os.listdir(osp.join(world['coco'], 'val2017')))[:NUM_PICTURES],
        ade=[osp.join(ade, 'images', 'validation', n) for n in names],
        ade_labels=[osp.join(ade, 'annotations', 'validation', osp.splitext(n)[0] + '.png')
                    for n in names])


def draw_fcmae(config: str, ckpt: str, images: List[str], out: str) -> str:
    """Reconstruction grids by tools/visualize_fcmae.py, stacked into one PNG."""
    grid_dir = osp.join(out, 'work_dirs', 'fcmae', 'reconstructions')
    cmd = [sys.executable, osp.join(REPO, 'tools', 'visualize_fcmae.py'), config, ckpt,
           *images, '--out', grid_dir, '--size', str(IMG_SIZE)]
    subprocess.run(cmd, check=True)
    grids = [np.asarray(Image.open(osp.join(grid_dir, osp.splitext(osp.basename(p))[0] +
                                            '.png'))) for p in images]
    out_file = osp.join(out, 'fcmae_reconstructions.png')
    Image.fromarray(np.concatenate(grids, axis=0)).save(out_file)
    return out_file


def write_markdown(summary: dict, out: str) -> None:
    stages, gains, pics = summary['stages'], summary['pretraining_gain'], summary['pictures']
    gain_text = ', '.join(f'{k} {v:+.3g}' for k, v in gains.items())
    md = f"""# mmcnx2 demo: the ConvNeXt V2 chain on a synthetic world

`python tools/run_demo.py{' --quick' if summary['quick'] else ''}` (seed {summary['seed']}):
{summary['world']['train']} train / {summary['world']['val']} held-out images per layout,
ConvNeXt V2-Atto, {IMG_SIZE}-pixel images, CPU; {fmt_time(summary['wall_s'])} in all.
Metrics are on the held-out images: top-1 and mIoU in %, COCO mAP as a fraction.

{summary_table(stages)}

What FCMAE pretraining (through the fine-tuned checkpoint) buys over random initialisation
at this scale: {gain_text}.

## Loss curves
![loss curves]({pics['loss_curves']})

## FCMAE reconstructions (held-out images)
Original | masked input (60% of the 32-pixel patches removed) | reconstruction |
reconstruction pasted into the removed patches.

![FCMAE reconstructions]({pics['fcmae']})

## Mask R-CNN on held-out images
Initialised from the fine-tuned checkpoint:

![detection]({pics['detection']})

From random initialisation:

![detection, random init]({pics['detection_random']})

## UperNet on held-out images (ground truth | prediction)
Initialised from the fine-tuned checkpoint:

![segmentation]({pics['segmentation']})

From random initialisation:

![segmentation, random init]({pics['segmentation_random']})

Each stage's logs, scalars and checkpoint are in `work_dirs/<stage>/`.
"""
    with open(osp.join(out, 'summary.md'), 'w') as f:
        f.write(md)


def main():
    args = parse_args()
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    num_train, num_val = WORLD['quick' if args.quick else 'full']
    world = make_synthetic_world(
        osp.join(out, 'data'), num_train, num_val, IMG_SIZE, seed=args.seed)
    log(f'synthetic world ({num_train} train / {num_val} val images per layout) in '
        f'{out}/data: {fmt_time(time.time() - start)}')

    results, work_dirs, ckpts = {}, {}, {}
    expected_total = sum(s.expected_s for s in STAGES)
    expected_done = 0.
    for i, stage in enumerate(STAGES, 1):
        init = f'the {stage.init} checkpoint' if stage.init not in (None, 'random') \
            else 'random initialisation'
        log(f'stage {i}/{len(STAGES)} {stage.name} ({stage.config}, from {init})')
        t0 = time.time()
        work_dirs[stage.name] = train(stage, out, ckpts.get(stage.init), args.quick)
        wall = time.time() - t0
        ckpts[stage.name] = last_checkpoint(work_dirs[stage.name])
        losses, metrics = read_scalars(find_scalars(work_dirs[stage.name]))
        results[stage.name] = dict(
            config=f'configs/demo/{stage.config}', init=stage.init or 'random',
            iters=losses[-1][0] if losses else 0, wall_s=round(wall, 1),
            first_loss=losses[0][1] if losses else None,
            final_loss=losses[-1][1] if losses else None, metrics=metrics, losses=losses)
        # time left: the remaining stages' expected times, scaled by how fast this machine
        # has been so far
        expected_done += stage.expected_s
        elapsed = time.time() - start
        left = (expected_total - expected_done) * elapsed / expected_done
        shown = ', '.join(f'{k} {v:.3g}' for k, v in metrics.items())
        log(f'stage {i}/{len(STAGES)} {stage.name} done in {fmt_time(wall)}: '
            f'{results[stage.name]["iters"]} iters, final loss '
            f'{results[stage.name]["final_loss"]:.4g}{", " + shown if shown else ""} | '
            f'elapsed {fmt_time(elapsed)}, about {fmt_time(left)} left')

    log('drawing FCMAE reconstructions, detections and segmentations on held-out images')
    from mmcnx2.demo.predict import draw_detections, draw_segmentations
    images = held_out_images(world)
    pictures = dict(fcmae=draw_fcmae(osp.join(REPO, 'configs', 'demo', FCMAE_CFG),
                                     ckpts['fcmae'], images['imagenet'], out))
    for name, stage in (('detection', 'mask_rcnn'), ('detection_random', 'mask_rcnn_random')):
        pictures[name] = osp.join(out, f'{name}.png')
        draw_detections(osp.join(REPO, 'configs', 'demo', DET_CFG), ckpts[stage],
                        images['coco'], pictures[name])
    for name, stage in (('segmentation', 'upernet'), ('segmentation_random', 'upernet_random')):
        pictures[name] = osp.join(out, f'{name}.png')
        draw_segmentations(osp.join(REPO, 'configs', 'demo', SEG_CFG), ckpts[stage],
                           images['ade'], pictures[name], labels=images['ade_labels'])
    pictures['loss_curves'] = osp.join(out, 'loss_curves.png')
    plot_loss_curves({
        'FCMAE pretraining': dict(fcmae=results['fcmae']['losses']),
        'fine-tuning': {'from FCMAE': results['finetune']['losses'],
                        'random init': results['finetune_random']['losses']},
        'Mask R-CNN': {'from fine-tuned': results['mask_rcnn']['losses'],
                       'random init': results['mask_rcnn_random']['losses']},
        'UperNet': {'from fine-tuned': results['upernet']['losses'],
                    'random init': results['upernet_random']['losses']},
    }, pictures['loss_curves'])

    gains = {}
    for task in ('finetune', 'mask_rcnn', 'upernet'):
        for metric, value in results[task]['metrics'].items():
            baseline = results[f'{task}_random']['metrics'].get(metric)
            if baseline is not None:
                gains[metric] = round(value - baseline, 4)
    for r in results.values():
        del r['losses']  # in the work_dirs' scalars.json; keep the summary readable
    summary = dict(
        quick=args.quick, seed=args.seed, wall_s=round(time.time() - start, 1),
        world=dict(train=num_train, val=num_val, image_size=IMG_SIZE, root=osp.join(out, 'data')),
        stages=results, pretraining_gain=gains,
        pictures={k: osp.relpath(v, out) for k, v in pictures.items()})
    with open(osp.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    write_markdown(summary, out)
    print(summary_table(results))
    log(f'done in {fmt_time(summary["wall_s"])}: {out}/summary.md')


if __name__ == '__main__':
    main()
