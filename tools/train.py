# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Train any mmcnx2 config: mmpretrain (FCMAE, classification), mmdet or mmseg scope."""
import argparse

from mmengine.runner import Runner

import mmcnx2  # noqa: F401  (registers modules and the safe checkpoint loader)
from mmcnx2.engine import load_cfg, parse_run_args


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or the latest one in work-dir if no '
        'path is given')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='scale lr by the real batch size')
    return parse_run_args(parser)


def main():
    args = parse_args()
    cfg = load_cfg(args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
