# Stage widths of every ConvNeXt V2 size (mmcnx2's ConvNeXtV2.arch_settings), the one table the
# necks and heads that read the backbone take their `in_channels` from:
# `_base_.convnextv2_widths[arch]` (all stages) or `...[arch][-1]` (the last one).
convnextv2_widths = dict(
    atto=[40, 80, 160, 320],
    femto=[48, 96, 192, 384],
    pico=[64, 128, 256, 512],
    nano=[80, 160, 320, 640],
    tiny=[96, 192, 384, 768],
    base=[128, 256, 512, 1024],
    large=[192, 384, 768, 1536],
    huge=[352, 704, 1408, 2816],
)
