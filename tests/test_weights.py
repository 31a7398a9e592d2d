# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Official, timm, HF and mmcnx2 weights load directly: by path, URL or model name.

Nothing here touches the internet: the official files are written from a random timm atto in
the official layout and served from 127.0.0.1 under the official folder names; the model
index is copied with its URLs pointing there.
"""
import os.path as osp

import pytest
import torch
from checkpoint_formats import (TOL, LoopbackServer, build_classifier, hf_reference,
                                loopback_model_index, sparse_fcmae_from_official,
                                official_decoder, timm_reference, write_official_files)
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint

import mmcnx2
from mmcnx2.apis import model_zoo
from mmcnx2.converters import convert_state_dict
from mmcnx2.models.backbones import ConvNeXtV2
from mmcnx2.converters.loading import (OFFICIAL_URL_PREFIX, CheckpointDownloadError,
                                       load_from_official_url)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ARCHS = list(ConvNeXtV2.arch_settings)
IN22K = [('nano', 224), ('nano', 384), ('tiny', 224), ('tiny', 384), ('base', 224),
         ('base', 384), ('large', 224), ('large', 384), ('huge', 384), ('huge', 512)]
FINE_TUNED = 'convnextv2-atto_fcmae-pre_3rdparty_in1k'
FCMAE = 'convnextv2-atto_3rdparty-fcmae_in1k'
DEMO_FINETUNE = osp.join(REPO, 'configs', 'demo',
                         'convnextv2-atto_fcmae-pre_1xb16-150it_synthetic-96.py')


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test downloads into its own torch hub dir, and talks to 127.0.0.1 directly."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    """Official atto files (fine-tuned, FCMAE pretrain-only) under the official folder names,
    the same weights as a sparse FCMAE, timm and mmcnx2 checkpoint, and an HF model file."""
    root = tmp_path_factory.mktemp('served')
    timm_model, x, logits, _ = timm_reference('atto')
    official, encoder = write_official_files(root / 'convnext' / 'convnextv2', timm_model)
    formats = root / 'formats'
    formats.mkdir()
    fcmae_sparse = sparse_fcmae_from_official(official, official_decoder(320))
    torch.save({'model': fcmae_sparse}, formats / 'fcmae_sparse.pt')
    torch.save(timm_model.state_dict(), formats / 'timm.pth')
    _, ours = convert_state_dict(official)
    torch.save({'meta': {}, 'state_dict': ours}, formats / 'mmcnx2.pth')
    hf_model = hf_reference('atto')[0]
    hf_model.save_pretrained(formats / 'hf')
    _, from_hf = convert_state_dict(hf_model.state_dict())
    with LoopbackServer(root) as server:
        yield dict(server=server, weights_url=f'{server.url}/convnext/convnextv2/', x=x,
                   logits=logits, ours=ours, from_hf=from_hf, fcmae_sparse=fcmae_sparse,
                   root=root)


@pytest.fixture
def loopback_index(served, tmp_path, monkeypatch):
    """mmcnx2's model index with the official URLs served from 127.0.0.1."""
    index = loopback_model_index(tmp_path / 'index', served['weights_url'])
    monkeypatch.setattr(model_zoo, 'model_index_path', lambda: str(index))
    return index


def backbone_from(checkpoint, prefix='backbone.'):
    backbone = ConvNeXtV2('atto', init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                                                prefix=prefix))
    backbone.init_weights()
    return backbone.state_dict()


def assert_backbone_equals(loaded, expected, without=()):
    """``loaded`` (a ConvNeXtV2 state dict) holds ``expected``'s ``backbone.*`` tensors, but
    for the keys in ``without`` (absent from the checkpoint: they keep their initial value)."""
    source = {k[len('backbone.'):]: v for k, v in expected.items() if k.startswith('backbone.')}
    assert set(loaded) == set(source)
    for key, value in loaded.items():
        assert torch.equal(value, source[key]) != (key in without), key


@pytest.mark.parametrize('path, fmt_keys_absent', [
    ('convnext/convnextv2/im1k/convnextv2_atto_1k_224_ema.pt', ()),  # official fine-tuned
    ('convnext/convnextv2/pt_only/convnextv2_atto_1k_224_fcmae.pt', ('norm3.weight',
                                                                    'norm3.bias')),
    ('formats/fcmae_sparse.pt', ('norm3.weight', 'norm3.bias')),  # official sparse FCMAE
    ('formats/timm.pth', ()),
    ('formats/mmcnx2.pth', ()),
])
def test_init_cfg_loads_every_format_from_a_url(served, path, fmt_keys_absent):
    loaded = backbone_from(f"{served['server'].url}/{path}")
    assert_backbone_equals(loaded, served['ours'], without=fmt_keys_absent)


def test_init_cfg_loads_an_hf_model_file_from_a_url_and_a_directory(served):
    url = f"{served['server'].url}/formats/hf/model.safetensors"
    assert_backbone_equals(backbone_from(url, prefix=None), served['from_hf'])
    directory = str(served['root'] / 'formats' / 'hf')
    assert_backbone_equals(backbone_from(directory), served['from_hf'])


def test_download_is_cached_in_the_torch_hub_dir(served, tmp_path):
    path = '/convnext/convnextv2/im1k/convnextv2_atto_1k_224_ema.pt'
    requests = served['server'].requests
    before = requests.count(path)
    first = backbone_from(served['server'].url + path)
    second = backbone_from(served['server'].url + path)
    assert requests.count(path) - before == 1
    cached = tmp_path / 'torch_home' / 'hub' / 'checkpoints' / 'convnextv2_atto_1k_224_ema.pt'
    assert cached.read_bytes() == (served['root'] / path.lstrip('/')).read_bytes()
    assert all(torch.equal(first[k], v) for k, v in second.items())


def test_failed_download_names_the_url_and_the_local_alternative(served, tmp_path):
    url = f"{served['server'].url}/convnext/convnextv2/im1k/missing.pt"
    with pytest.raises(CheckpointDownloadError) as err:
        backbone_from(url)
    message = str(err.value)
    assert f'Could not download checkpoint {url}: HTTP Error 404' in message
    assert 'pass the local file instead' in message and 'pretrained=/path/to/file' in message
    assert list((tmp_path / 'torch_home' / 'hub' / 'checkpoints').iterdir()) == []


def test_model_index_lists_the_official_checkpoints():
    """The real index (nothing downloaded): 8 FCMAE, 8 IN-1K and 10 IN-22K fine-tuned
    checkpoints with the official README's URLs, configs that exist and its top-1."""
    names = mmcnx2.list_models(with_weights=True)
    expected = {f'convnextv2-{a}_3rdparty-fcmae_in1k': f'pt_only/convnextv2_{a}_1k_224_fcmae.pt'
                for a in ARCHS}
    expected.update({f'convnextv2-{a}_fcmae-pre_3rdparty_in1k':
                     f'im1k/convnextv2_{a}_1k_224_ema.pt' for a in ARCHS})
    expected.update({
        f'convnextv2-{a}_fcmae-in22k-pre_3rdparty_in1k' + ('' if r == 224 else f'-{r}px'):
        f'im22k/convnextv2_{a}_22k_{r}_ema.pt' for a, r in IN22K})
    assert len(expected) == 26 and sorted(names) == sorted(expected)
    for name, file in expected.items():
        info = model_zoo.find_model(name)
        assert info.weights == OFFICIAL_URL_PREFIX + file
        assert osp.isfile(info.config), info.config
    top1 = {name: model_zoo.find_model(name).results[0]['Metrics']['Top 1 Accuracy']
            for name in ('convnextv2-atto_fcmae-pre_3rdparty_in1k',
                         'convnextv2-huge_fcmae-pre_3rdparty_in1k',
                         'convnextv2-huge_fcmae-in22k-pre_3rdparty_in1k-512px')}
    assert list(top1.values()) == [76.7, 86.3, 88.9]
    test = Config.fromfile(model_zoo.find_model(
        'convnextv2-huge_fcmae-in22k-pre_3rdparty_in1k-512px').config).test_dataloader
    assert [t['type'] for t in test.dataset.pipeline] == ['LoadImageFromFile', 'Resize',
                                                          'PackInputs']
    assert test.dataset.pipeline[1]['scale'] == 512


def test_get_model_by_name_reproduces_the_official_model(served, loopback_index):
    model = mmcnx2.get_model(FINE_TUNED, pretrained=True)
    with torch.no_grad():
        logits = model(served['x'], mode='tensor')
    torch.testing.assert_close(logits, served['logits'], atol=TOL, rtol=0)
    # The FCMAE encoder: the backbone comes from it, the head keeps its initialisation.
    model = mmcnx2.get_model(FCMAE, pretrained=True)
    assert_backbone_equals(model.backbone.state_dict(), served['ours'],
                           without=('norm3.weight', 'norm3.bias'))
    # trunc_normal(std=0.02) times head_init_scale 0.001
    assert model.head.fc.weight.std().item() == pytest.approx(0.02 * 0.001, rel=0.05)


def test_fcmae_model_continues_from_the_official_sparse_checkpoint(served):
    """An FCMAE pretraining checkpoint with its decoder fills an FCMAE model: encoder and
    decoder (converted to mmcnx2's FCMAEDecoder), nothing left at its initial value."""
    url = f"{served['server'].url}/formats/fcmae_sparse.pt"
    model = mmcnx2.get_model('fcmae_convnextv2-atto_64xb64-coslr-800e_in1k', pretrained=url)
    _, expected = convert_state_dict(served['fcmae_sparse'], keep_decoder=True)
    own = model.state_dict()
    assert set(own) == set(expected)
    for key, value in expected.items():
        assert torch.equal(own[key], value), key


def test_init_cfg_and_pretrained_accept_a_model_name(served, loopback_index):
    assert_backbone_equals(backbone_from(FINE_TUNED), served['ours'])
    with pytest.raises(FileNotFoundError, match="neither a file, an http.s. URL nor the name"):
        backbone_from('convnextv2-atto_no-such-model')


def test_mmengine_and_mmpretrain_loaders_convert_official_urls(served, loopback_index,
                                                               monkeypatch):
    """``load_from=URL``, ``load_checkpoint`` and mmpretrain's ``get_model`` read the official
    layout through the loader mmcnx2 registers for the official URLs (here: the loopback)."""
    from mmpretrain.apis import ModelHub, get_model
    monkeypatch.setattr(CheckpointLoader, '_schemes', dict(CheckpointLoader._schemes))
    CheckpointLoader.register_scheme(prefixes=served['weights_url'],
                                     loader=load_from_official_url)
    url = served['weights_url'] + 'im1k/convnextv2_atto_1k_224_ema.pt'
    model = build_classifier('atto')
    load_checkpoint(model, url, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(served['x'], mode='tensor'), served['logits'],
                                   atol=TOL, rtol=0)
    monkeypatch.setattr(ModelHub, '_models_dict', dict(ModelHub._models_dict))
    model_zoo.register_in_mmpretrain()
    model = get_model(FINE_TUNED, pretrained=True)
    with torch.no_grad():
        torch.testing.assert_close(model(served['x'], mode='tensor'), served['logits'],
                                   atol=TOL, rtol=0)


def plain_runner_cfg(work_dir, data_root, **options):
    """What mim, mmpretrain's/mmdet's/mmseg's train.py do: Config.fromfile, then merge
    --cfg-options into it (no re-binding of `pretrained`); one iteration at lr 0 on the
    synthetic ImageNet layout."""
    cfg = Config.fromfile(DEMO_FINETUNE)
    cfg.merge_from_dict(dict(options, **{
        'work_dir': str(work_dir),
        'optim_wrapper.optimizer.lr': 0.,
        'train_cfg.max_iters': 1,
        'train_dataloader.batch_size': 4, 'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.data_root': data_root,
        'val_dataloader.num_workers': 0, 'val_dataloader.persistent_workers': False,
        'val_dataloader.dataset.data_root': data_root,
    }))
    return cfg


@pytest.mark.slow
def test_pretrained_override_reaches_the_model_with_a_plain_runner(served, imagenet_layout,
                                                                   tmp_path):
    url = served['weights_url'] + 'im1k/convnextv2_atto_1k_224_ema.pt'
    cfg = plain_runner_cfg(tmp_path / 'work', imagenet_layout, pretrained=url)
    assert cfg.model.backbone.init_cfg.checkpoint != url  # what mmengine's merge leaves
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.model.backbone.init_cfg['checkpoint'] == url
    assert_backbone_equals(runner.model.backbone.state_dict(), served['ours'])


@pytest.mark.slow  # builds a Runner and starts its run
def test_an_ignored_pretrained_override_is_an_error(served, imagenet_layout, tmp_path):
    cfg = plain_runner_cfg(tmp_path / 'work', imagenet_layout, pretrained='elsewhere.pth',
                           **{'model.backbone.init_cfg': None})
    with pytest.raises(ValueError, match=r"pretrained='elsewhere.pth' is used by no init_cfg.*"
                       r"model.backbone.init_cfg="):
        Runner.from_cfg(cfg).train()


@pytest.mark.parametrize('config', [
    'convnextv2/convnextv2-base_fcmae-pre_8xb128-100e_in1k.py',
    'mask_rcnn/mask-rcnn_convnextv2-base_fpn_8xb4-amp-lsj-3x_coco-1024.py',
    'upernet/upernet_convnextv2-base_8xb2-amp-160k_ade20k-512x512.py',
    'demo/mask-rcnn_convnextv2-atto_fpn_1xb4-150it_synthetic-96.py',
])
def test_every_config_that_starts_from_pretrained_rebinds_it(config):
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    assert cfg.model.backbone.init_cfg.checkpoint == cfg.pretrained
    assert 'RebindPretrainedHook' in [hook['type'] for hook in cfg.custom_hooks]
