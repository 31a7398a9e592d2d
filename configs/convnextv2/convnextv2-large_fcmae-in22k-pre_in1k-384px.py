# ConvNeXt V2-L after FCMAE, IN-22K and IN-1K fine-tuning, evaluated at 384 px: the
# official convnextv2_large_22k_384_ema.pt (model zoo:
# convnextv2-large_fcmae-in22k-pre_3rdparty_in1k-384px). An evaluation config: the model is the
# IN-1K recipe's, only the test resolution changes (there is no IN-22K training recipe here).
_base_ = './convnextv2-large_fcmae-pre_8xb128-100e_in1k.py'

test_pipeline = _base_.square_eval_pipeline
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
