"""The project's only use of tensorflow-addons, kept in one module so it can be swapped later.

tensorflow-addons is the reason TensorFlow is held at 2.15; nothing else may import it.
"""

import warnings

import tensorflow as tf

with warnings.catch_warnings():
  # Its import warns that it has reached its end of life (a 12-line banner on every binary's
  # console): known, and the reason it stays in this one module.
  warnings.filterwarnings("ignore", message=r"\s*TensorFlow Addons \(TFA\) has ended development",
                          category=UserWarning)
  import tensorflow_addons as tfa  # pylint: disable=wrong-import-position


def masked_token_losses(logits: tf.Tensor, targets: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Per-token cross-entropy [batch, time], zero where `mask` is 0 (padding).

  logits: [batch, time, vocab]; targets: int [batch, time]; mask: [batch, time] of 0/1.
  Computed in float32 whatever the model's compute dtype (mixed precision).
  """
  return tfa.seq2seq.sequence_loss(
      tf.cast(logits, tf.float32),
      tf.cast(targets, tf.int32),
      tf.cast(mask, tf.float32),
      average_across_timesteps=False,
      average_across_batch=False,
      sum_over_timesteps=False,
      sum_over_batch=False)
