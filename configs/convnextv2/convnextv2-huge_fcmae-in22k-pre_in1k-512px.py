# ConvNeXt V2-H after FCMAE, IN-22K and IN-1K fine-tuning, evaluated at 512 px: the
# official convnextv2_huge_22k_512_ema.pt (model zoo:
# convnextv2-huge_fcmae-in22k-pre_3rdparty_in1k-512px). The 384 px evaluation config with
# the square resize at 512 (there is no IN-22K training recipe here).
_base_ = './convnextv2-huge_fcmae-in22k-pre_in1k-384px.py'

img_size = 512
test_pipeline = [
    dict(t, scale=img_size) if t['type'] == 'Resize' else t for t in _base_.test_pipeline
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
