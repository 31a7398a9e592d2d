# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Write the built-in synthetic world (ImageNet, COCO and ADE20K layouts) under ROOT.

Example: ``python tools/dataset_converters/make_synthetic.py data/synthetic --num-train 400``
then point a config's ``data_root`` at ``data/synthetic/{imagenet,coco,ade/ADEChallengeData2016}``.
"""
import argparse
import json

from mmcnx2.datasets.synthetic import LAYOUTS, make_synthetic_world


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output folder')
    parser.add_argument('--num-train', type=int, default=200, help='train images per layout')
    parser.add_argument('--num-val', type=int, default=50, help='val images per layout')
    parser.add_argument('--image-size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--layouts', nargs='+', choices=LAYOUTS, default=list(LAYOUTS))
    args = parser.parse_args()
    out = make_synthetic_world(args.root, args.num_train, args.num_val, args.image_size,
                               args.seed, args.layouts)
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
