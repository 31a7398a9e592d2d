_base_ = './fcmae_convnextv2-base_64xb64-coslr-800e_in1k.py'

# 800e -> 1600e: the same 40-epoch warm-up, then a cosine decay to epoch 1600.
max_epochs = 1600
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], T_max=max_epochs - _base_.warmup_epochs, end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
