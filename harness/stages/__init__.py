"""The pipeline's stages: masks, patches, tfrecords, train, infer.

Each stage module holds its per-item function (one slide or shard, no engine in sight) and its driver,
``drive(ctx) -> stage record``, which maps that function over the items through the stage's engine. The stage
registry (``harness.registry.STAGE_DRIVERS``) lists them in pipeline order and imports each on first use (train and
infer import TensorFlow). Shared driver helpers are in ``common``.
"""
