"""The model zoo: one builder per file, each instantiated from conf/model/<name>.yaml.

Every builder has the signature ``build_x(in_shape, num_classes, **options) -> nn.Module``,
where ``in_shape`` excludes the batch dimension: (C, H, W) images, (C, T) sequences,
(F,) tabular features.
"""
