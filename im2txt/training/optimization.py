"""Optimisation of the Show and Tell trainer: learning-rate schedules, optimizers, L2 on Inception.

Phase 1 (Inception frozen): SGD at 2.0, halved every 8 epochs (a staircase on the global step).
Phase 2 (Inception fine-tuned): a constant 0.0005, plus slim's L2 (4e-5) on Inception's conv
kernels. Gradients are clipped by their global norm (5.0) in the training step. The values are
the original's defaults; each is a field of the config's `training` section.

The schedule follows the checkpointed global step, not the optimizer's iteration count, so it is
exact across restarts, phases and optimizer changes:

    step = tf.Variable(0, dtype=tf.int64)
    lr_fn = learning_rate_fn(config.training, batch_size=32, train_inception=False)
    optimizer = make_optimizer(config.training, False, GlobalStepSchedule(lr_fn, step))
"""

from typing import Callable

import tensorflow as tf

from im2txt import configuration
from im2txt.model import show_and_tell_model

OPTIMIZERS = ("SGD", "Adam")


def learning_rate_fn(config: configuration.TrainingConfig, batch_size: int,
                     train_inception: bool, scst: bool = False
                     ) -> Callable[[tf.Tensor], tf.Tensor]:
  """global step -> learning rate: phase 1's staircase decay, phase 2's constant, or (`scst`)
  phase 3's constant."""
  if scst:
    scst_rate = config.scst_learning_rate
    return lambda step: tf.constant(scst_rate, tf.float32)
  if train_inception:
    rate = config.train_inception_learning_rate
    return lambda step: tf.constant(rate, tf.float32)
  if config.learning_rate_decay_factor > 0:
    batches_per_epoch = config.num_examples_per_epoch / batch_size
    return tf.keras.optimizers.schedules.ExponentialDecay(
        config.initial_learning_rate,
        decay_steps=max(1, int(batches_per_epoch * config.num_epochs_per_decay)),
        decay_rate=config.learning_rate_decay_factor, staircase=True)
  rate = config.initial_learning_rate
  return lambda step: tf.constant(rate, tf.float32)


class GlobalStepSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
  """The learning rate as a function of the checkpointed global step, not optimizer.iterations."""

  def __init__(self, fn, step: tf.Variable):
    super().__init__()
    self._fn, self._step = fn, step

  def __call__(self, unused_iterations):
    return tf.cast(self._fn(self._step), tf.float32)

  def get_config(self):
    return {}


def make_optimizer(config: configuration.TrainingConfig, train_inception: bool,
                   learning_rate, scst: bool = False) -> tf.keras.optimizers.legacy.Optimizer:
  """The phase's optimizer (config.optimizer, config.train_inception_optimizer in phase 2, or
  config.scst_optimizer in phase 3, `scst`).

  Keras' legacy optimizers: their slot variables (Adam's moments) are created per variable on
  its first update and restored lazily from a checkpoint, so a phase 2 with Adam after a phase 1
  with Adam resumes the decoder's moments and starts Inception's afresh (Keras 2.15's new SGD
  would also make momentum slots, which then would not follow the variables across phases).
  """
  check_optimizer_names(config)
  name = config.train_inception_optimizer if train_inception else config.optimizer
  if scst:
    name = config.scst_optimizer
  if name == "SGD":
    return tf.keras.optimizers.legacy.SGD(learning_rate=learning_rate)
  # check_optimizer_names leaves Adam as the only other name.
  return tf.keras.optimizers.legacy.Adam(learning_rate=learning_rate)


def check_optimizer_names(config: configuration.TrainingConfig) -> None:
  """All phases' optimizers are known: a typo in phase 2's fails when phase 1 starts."""
  for field in ("optimizer", "train_inception_optimizer", "scst_optimizer"):
    name = getattr(config, field)
    if name not in OPTIMIZERS:
      raise ValueError(f"Unknown training.{field} {name!r}; expected one of {OPTIMIZERS}")


def inception_l2_loss(model: show_and_tell_model.ShowAndTellModel,
                      weight_decay: float) -> tf.Tensor:
  """slim's l2_regularizer on every Inception conv kernel: decay * sum(w^2) / 2."""
  kernels = [layer.kernel for layer in model.inception.layers
             if isinstance(layer, tf.keras.layers.Conv2D)]
  return weight_decay * tf.add_n([tf.nn.l2_loss(k) for k in kernels])
