_base_ = './fcmae_convnextv2-base_64xb64-coslr-800e_in1k.py'

model = dict(
    backbone=dict(arch='tiny'), neck=dict(in_channels=_base_.convnextv2_widths['tiny'][-1]))
