# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Test a checkpoint with any mmcnx2 config (mmpretrain, mmdet or mmseg scope)."""
import argparse

from mmengine.evaluator import DumpResults

import mmcnx2  # noqa: F401  (registers the modules)
from mmcnx2.engine import StrictLoadHook, build_runner, parse_run_args, prepare_run


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument(
        '--out', help='dump raw predictions to this pickle file (DumpResults)')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation (tta_model, tta_pipeline)')
    return parse_run_args(parser)


def main():
    args = parse_args()
    cfg = prepare_run(args)
    cfg.load_from = args.checkpoint
    if args.tta:
        missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
        if missing:
            raise KeyError(f'--tta needs {missing} in {args.config}')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    runner = build_runner(cfg)
    # Strict: weights that do not fit (e.g. another num_classes) must not be tested.
    runner.register_hook(StrictLoadHook(f'{args.checkpoint} with {args.config}'))
    if args.out:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
