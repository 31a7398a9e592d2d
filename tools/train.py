# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Train any mmcnx2 config: mmpretrain (FCMAE, classification), mmdet or mmseg scope."""
import argparse

import mmcnx2  # noqa: F401  (registers the modules)
from mmcnx2.engine import (build_runner, find_resume_checkpoint, install_safe_checkpoint_loading,
                           load_cfg_or_exit, parse_run_args, prepare_distributed)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or if no path is given from the one '
        'work-dir/last_checkpoint names, falling back to the newest valid checkpoint there')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='scale lr by the real batch size')
    return parse_run_args(parser)


def main():
    args = parse_args()
    cfg = load_cfg_or_exit(args)
    install_safe_checkpoint_loading()
    prepare_distributed(cfg)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    resume_note = None
    if args.resume == 'auto':
        found, resume_note = find_resume_checkpoint(cfg.work_dir)
        cfg.resume, cfg.load_from = found is not None, found
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    runner = build_runner(cfg)
    if resume_note:
        runner.logger.info(resume_note)
    runner.train()


if __name__ == '__main__':
    main()
