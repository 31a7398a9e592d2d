# FCMAE pretraining on your own images: every image file below `data_root`, at any depth, in
# any format mmcv reads; no label file, no class folders (mmcnx2's ImageFolderUnlabeled).
# Everything else is the official ImageNet recipe of the in1k config: its batch 4096 lr
# (`--auto-scale-lr` rescales it to your batch), 800 epochs, the MAE augmentation at 224.
# Another folder: --cfg-options train_dataloader.dataset.data_root=PATH. Another size:
# --cfg-options model.backbone.arch=atto model.neck.in_channels=320 (the last stage's width:
# configs/_base_/models/convnextv2_widths.py).
_base_ = './fcmae_convnextv2-base_64xb64-coslr-800e_in1k.py'

data_root = 'data/images/'
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ImageFolderUnlabeled',
        data_root=data_root,
        pipeline=_base_.train_pipeline))
