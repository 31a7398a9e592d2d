# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Train any mmcnx2 config: mmpretrain (FCMAE, classification), mmdet or mmseg scope."""
import argparse
import sys

import mmcnx2  # noqa: F401  (registers the modules)
from mmcnx2.engine import (NoValidCheckpointError, build_runner, find_resume_checkpoint,
                           parse_run_args, prepare_run)


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


def exit_with(message: str) -> None:
    """End the command as argparse ends a usage error: the message, exit status 2."""
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def main():
    args = parse_args()
    cfg = prepare_run(args)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if cfg.get('runner_type') and 'Amp' not in wrapper:
            exit_with(f'--amp: {args.config} runs a {cfg.runner_type} strategy whose precision '
                      'is set in strategy.model_wrapper.mixed_precision; autocast on top of it '
                      'is not supported.')
        if 'Amp' not in wrapper:  # AmpOptimWrapper or mmcnx2's AmpOrFp32OptimWrapper already
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    resume_note = None
    if args.resume == 'auto':
        try:
            found, resume_note = find_resume_checkpoint(cfg.work_dir)
        except NoValidCheckpointError as err:
            exit_with(str(err))
        if found is not None:  # else a load_from of the config still applies
            cfg.resume, cfg.load_from = True, found
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            exit_with(f'--auto-scale-lr: {args.config} sets no auto_scale_lr.base_batch_size '
                      '(the total batch its lr is written for): add '
                      'auto_scale_lr = dict(base_batch_size=N) to the config.')
        cfg.auto_scale_lr.enable = True
    runner = build_runner(cfg)
    if resume_note:
        runner.logger.info(resume_note)
    runner.train()


if __name__ == '__main__':
    main()
