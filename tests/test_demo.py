# Copyright (c) mmcnx2 contributors. All rights reserved.
"""The main job (tools/run_demo.py): its reporting helpers, and the whole chain shortened."""
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
from PIL import Image

from mmcnx2.demo.report import find_scalars, metric_scale, read_scalars, summary_table

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
STAGES = ('fcmae', 'finetune', 'finetune_random', 'mask_rcnn', 'mask_rcnn_random', 'upernet',
          'upernet_random')
# the metrics each stage must report
METRICS = dict(fcmae=(), finetune=('top1', ), mask_rcnn=('bbox_mAP', 'segm_mAP'),
               upernet=('mIoU', ))
PICTURES = ('fcmae', 'detection', 'detection_random', 'segmentation', 'segmentation_random',
            'loss_curves')


def test_read_scalars(tmp_path):
    run = tmp_path / '20260101_000000' / 'vis_data'
    run.mkdir(parents=True)
    lines = [
        dict(lr=1e-3, loss=2.5, step=10), dict(lr=1e-3, loss=1.5, step=20),
        {'accuracy/top1': 40.0, 'step': 20}, dict(loss=1.0, step=30),
        {'accuracy/top1': 62.5, 'coco/bbox_mAP': 0.25, 'mIoU': 33.0, 'step': 30},
    ]
    (run / 'scalars.json').write_text(''.join(json.dumps(x) + '\n' for x in lines))
    path = find_scalars(str(tmp_path))
    assert path == str(run / 'scalars.json')
    losses, metrics = read_scalars(path)
    assert losses == [(10, 2.5), (20, 1.5), (30, 1.0)]
    assert metrics == dict(top1=62.5, bbox_mAP=0.25, mIoU=33.0)  # the last evaluation

    (run / 'scalars.json').write_text('{"loss": 1, "step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r'scalars\.json:2'):
        read_scalars(path)
    with pytest.raises(FileNotFoundError, match='no .*scalars.json'):
        find_scalars(str(tmp_path / 'empty'))


def test_summary_table():
    stages = dict(
        fcmae=dict(init='random', iters=300, wall_s=151.2, final_loss=0.41, metrics={}),
        mask_rcnn=dict(init='finetune', iters=200, wall_s=90.0, final_loss=1.2,
                       metrics=dict(bbox_mAP=0.3124, segm_mAP=0.25)))
    table = summary_table(stages).splitlines()
    assert table[0].startswith('| stage | initialised from | iters |')
    assert 'bbox_mAP (0-1)' in table[0] and 'top1 (%)' in table[0]
    assert table[2] == '| fcmae | random | 300 | 151 | 0.41 | - | - | - | - |'
    assert table[3] == '| mask_rcnn | finetune | 200 | 90 | 1.2 | - | 0.312 | 0.25 | - |'


@pytest.mark.slow
def test_quick_demo(tmp_path):
    """Every stage of the chain runs through tools/train.py, is initialised as the chain
    says, and leaves its checkpoint, metrics in range and every picture."""
    from mmengine.config import Config

    out = tmp_path / 'demo'
    subprocess.run([sys.executable, 'tools/run_demo.py', '--out', str(out), '--quick'],
                   cwd=REPO, check=True, timeout=900)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['quick'] and set(summary['stages']) == set(STAGES)

    ckpts = {}
    for name, stage in summary['stages'].items():
        work_dir = out / 'work_dirs' / name
        ckpts[name] = (work_dir / 'last_checkpoint').read_text().strip()
        assert osp.isfile(ckpts[name]), name
        assert stage['iters'] == 2, name
        assert stage['wall_s'] > 0, name
        assert math.isfinite(stage['final_loss']) and stage['final_loss'] > 0, name
        expected = METRICS[name.replace('_random', '')]
        assert set(stage['metrics']) == set(expected), name
        for metric, value in stage['metrics'].items():
            assert 0 <= value <= metric_scale(metric), (name, metric, value)

    # the chain variable: each stage's backbone starts from the checkpoint the chain names
    for name, source in (('finetune', 'fcmae'), ('mask_rcnn', 'finetune'),
                         ('upernet', 'finetune'), ('finetune_random', None),
                         ('mask_rcnn_random', None), ('upernet_random', None)):
        config = summary['stages'][name]['config']
        cfg = Config.fromfile(str(out / 'work_dirs' / name / osp.basename(config)))
        init_cfg = cfg.model.backbone.init_cfg
        if source is None:
            assert init_cfg is None, name
        else:
            assert init_cfg.checkpoint == ckpts[source] == cfg.pretrained, name
            assert summary['stages'][name]['init'] == source

    markdown = (out / 'summary.md').read_text()
    for name in PICTURES:
        path = out / summary['pictures'][name]
        with Image.open(path) as img:
            assert img.format == 'PNG' and min(img.size) >= 64, name
        assert f"]({summary['pictures'][name]})" in markdown, name
    for name in STAGES:
        assert f'| {name} |' in markdown
    assert set(summary['pretraining_gain']) == {'top1', 'bbox_mAP', 'segm_mAP', 'mIoU'}
