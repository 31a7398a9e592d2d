import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
# What mim looks for in <package>/.mim: the model index (`mim search`, `mim download`), the
# configs it lists and the tools `mim train/test/run` start.
MIM_FILES = ('model-index.yml', 'configs', 'tools')


def populate_mim_dir():
    """Fill mmcnx2/.mim as OpenMMLab packages do: links into the checkout for an editable
    install (``setup.py develop``, PEP 660 ``editable_wheel``), copies when an sdist or a wheel
    is built, so the installed package carries them."""
    commands = set(sys.argv[1:])
    if commands & {'develop', 'editable_wheel'}:
        link = True
    elif commands & {'sdist', 'bdist_wheel', 'build', 'build_py', 'install'}:
        link = False
    else:
        return
    mim_dir = osp.join(ROOT, 'mmcnx2', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(ROOT, name), osp.join(mim_dir, name)
        if not osp.exists(src):  # building from an sdist, whose .mim holds the copies already
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if link:
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copyfile(src, dst)


def read_version():
    namespace = {}
    with open(osp.join(ROOT, 'mmcnx2', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


populate_mim_dir()
setup(
    name='mmcnx2',
    version=read_version(),
    description='ConvNeXt V2 and FCMAE pretraining for the OpenMMLab 2.x stack',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'configs', 'tools')),
    # mmcnx2/.mim (see populate_mim_dir), listed in MANIFEST.in.
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=[
        'torch>=2.0', 'mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0,<2.2.0',
        'mmpretrain>=1.2.0,<2.0', 'safetensors'
    ],
    extras_require={
        'det': ['mmdet>=3.3.0,<4.0'],
        'seg': ['mmsegmentation>=1.2.2,<2.0', 'ftfy', 'regex'],
        'tests': ['pytest', 'timm', 'transformers<4.52', 'onnx', 'onnxruntime', 'openmim'],
    },
)
