_base_ = './fcmae_convnextv2-base_64xb64-coslr-1600e_in1k.py'

model = dict(
    backbone=dict(arch='huge'), neck=dict(in_channels=_base_.convnextv2_widths['huge'][-1]))
