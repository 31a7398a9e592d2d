# FCMAE with a ConvNeXt V2-Base encoder; other sizes override backbone.arch and
# neck.in_channels (the encoder's last-stage width).
model = dict(
    type='FCMAE',
    mask_ratio=0.6,
    patch_size=32,
    backbone=dict(
        type='ConvNeXtV2',
        arch='base',
        out_indices=(3, ),
        gap_before_final_norm=False),
    neck=dict(
        type='FCMAEDecoder',
        in_channels=1024,
        decoder_dim=512,
        decoder_depth=1,
        patch_size=32),
    head=dict(
        type='FCMAEHead',
        norm_pix=True,
        patch_size=32,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')))
