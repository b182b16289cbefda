"""The model registry: the classifiers the train stage can build, with their reference settings.

Models are built with Keras 3 alone (``import keras``), so the same definitions run on TensorFlow (the train
stage) and on Keras's other backends (JAX, PyTorch) where a GPU machine ships without TensorFlow.
Keras is imported only when a model is built.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    image_size: int          # default input side in px
    optimizer: str           # default optimizer
    summary: str


MODELS = {
    "inception_v3": ModelSpec(224, "rmsprop", "Inception-v3 from scratch, one sigmoid logit (the reference pipeline)"),
    "small_cnn": ModelSpec(96, "adam", "four convolutions, for CPUs and quick runs"),
}
LEARNING_RATES = {"rmsprop": 0.01, "adam": 1e-3, "sgd": 0.01}


def image_size(cfg) -> int:
    """The input side of a Train configuration's model."""
    return cfg.image_size or MODELS[cfg.model].image_size


def build(cfg):
    """A fresh Keras model for a Train configuration."""
    import keras

    size = image_size(cfg)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    # weight_decay in TF-slim's convention (the reference's l2_regularizer): wd * sum(w^2) / 2, Keras's L2(wd / 2)
    reg = keras.regularizers.l2(cfg.weight_decay / 2) if cfg.weight_decay else None
    if cfg.model == "inception_v3":
        base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3), pooling="avg")
        if reg is not None:  # the reference's weight decay on every convolution: the same graph, rebuilt with it
            conf = base.get_config()
            for layer in conf["layers"]:
                if layer["class_name"] == "Conv2D":
                    layer["config"]["kernel_regularizer"] = keras.regularizers.serialize(reg)
            base = keras.Model.from_config(conf)
        x = keras.layers.Dropout(0.2)(base.output)
        out = keras.layers.Dense(1, activation="sigmoid", dtype="float32", kernel_regularizer=reg)(x)
        return keras.Model(base.input, out, name="inception_v3")
    inp = keras.Input((size, size, 3))
    x = inp
    for filters in (16, 32, 64, 96):  # no batch norm: its moving statistics made small runs miscalibrated
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_regularizer=reg)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inp, out, name="small_cnn")


def decay_steps(cfg, steps_per_epoch: int) -> int:
    """Steps between learning-rate decays: ``lr_decay_steps`` where set, else ``lr_decay_epochs`` epochs."""
    return cfg.lr_decay_steps or max(1, round(cfg.lr_decay_epochs * steps_per_epoch))


def schedule(cfg, steps_per_epoch: int):
    """The learning rate by step: decayed by ``lr_decay`` every ``decay_steps`` steps, a staircase (as slim's
    exponential_decay)."""
    import keras

    lr = cfg.learning_rate or LEARNING_RATES[cfg.optimizer or MODELS[cfg.model].optimizer]
    return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps(cfg, steps_per_epoch), cfg.lr_decay,
                                                       staircase=True)


def optimizer(cfg, steps_per_epoch: int):
    """The configured optimizer on ``schedule``."""
    import keras

    name = cfg.optimizer or MODELS[cfg.model].optimizer
    sched = schedule(cfg, steps_per_epoch)
    if name == "rmsprop":  # the reference settings: decay (rho) 0.9, momentum 0.9, epsilon 1.0
        return keras.optimizers.RMSprop(sched, rho=0.9, momentum=0.9, epsilon=1.0)
    if name == "adam":
        return keras.optimizers.Adam(sched)
    return keras.optimizers.SGD(sched, momentum=0.9)
