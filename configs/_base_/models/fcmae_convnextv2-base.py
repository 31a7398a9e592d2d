# FCMAE with a ConvNeXt V2-Base encoder; other sizes override backbone.arch and
# neck.in_channels (the encoder's last-stage width, `_base_.convnextv2_widths[arch][-1]`).
_base_ = './convnextv2_widths.py'

model = dict(
    type='FCMAE',
    mask_ratio=0.6,
    # The official FCMAE init (models/fcmae.py, FCMAE._init_weights): timm trunc_normal std 1
    # for the stem, depthwise and pointwise layers and the decoder's convs, 0.02 for the
    # downsample convs. 'convnext': std 0.02 everywhere.
    init='official',
    backbone=dict(
        type='ConvNeXtV2',
        arch='base',
        out_indices=(3, ),
        gap_before_final_norm=False,
        out_norms=False),
    neck=dict(
        type='FCMAEDecoder',
        in_channels=_base_.convnextv2_widths['base'][-1],
        decoder_dim=512,
        decoder_depth=1),
    head=dict(
        type='FCMAEHead',
        norm_pix=True,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')))
