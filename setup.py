import os.path as osp

from setuptools import find_packages, setup


def read_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'mmcnx2', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmcnx2',
    version=read_version(),
    description='ConvNeXt V2 and FCMAE pretraining for the OpenMMLab 2.x stack',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'configs', 'tools')),
    python_requires='>=3.8',
    install_requires=[
        'torch>=2.0', 'mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0,<2.2.0',
        'mmpretrain>=1.2.0,<2.0', 'safetensors'
    ],
    extras_require={
        'det': ['mmdet>=3.3.0,<4.0'],
        'seg': ['mmsegmentation>=1.2.2,<2.0', 'ftfy', 'regex'],
        'tests': ['pytest', 'timm', 'transformers<4.52'],
    },
)
