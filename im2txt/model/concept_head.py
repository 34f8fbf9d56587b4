"""The visual-concept head's targets and loss (the head itself is a layer of ShowAndTellModel).

An image's concepts (im2txt/concepts.py) are the concept words its captions name. The head is a
sigmoid layer on Inception's pooled features, one output per concept, trained with a multi-label
loss: per image, the sigmoid cross-entropy summed over concepts; averaged over the global batch's
images. For 3 concepts and an image whose captions name concepts 0 and 2:

    concept_ids (padded with -1)  [0, 2, -1]  ->  targets [1, 0, 1]
    logits [2.0, -1.0, 0.0]  ->  loss = log(1 + e^-2) + log(1 + e^-1) + log(1 + e^0)
                                      = 0.1269 + 0.3133 + 0.6931 = 1.1333

`concept_input` feeds the predicted probabilities to the LSTM, as Yao et al.'s LSTM-A feeds its
attributes: projected to the embedding size and added to the first input ("start") or to every
input ("every_step").
"""

import tensorflow as tf

CONCEPT_INPUTS = ("none", "start", "every_step")
# Where the head's training targets come from (configuration.ModelConfig.concept_targets).
CONCEPT_TARGETS = ("image", "caption")


def check_config(config) -> None:
  """A ValueError naming the field for concept settings no model can be built with."""
  if config.num_concepts < 0:
    raise ValueError(f"model.num_concepts must be >= 0, not {config.num_concepts}")
  if config.concept_loss_weight < 0:
    raise ValueError(f"model.concept_loss_weight must be >= 0, not {config.concept_loss_weight}")
  if config.concept_input not in CONCEPT_INPUTS:
    raise ValueError(f"model.concept_input must be one of {CONCEPT_INPUTS}, not "
                     f"{config.concept_input!r}")
  if config.concept_targets not in CONCEPT_TARGETS:
    raise ValueError(f"model.concept_targets must be one of {CONCEPT_TARGETS}, not "
                     f"{config.concept_targets!r}")
  if config.num_concepts == 0 and (config.concept_loss_weight or config.concept_input != "none"):
    raise ValueError("model.concept_loss_weight and model.concept_input need a concept head: "
                     "set model.num_concepts (>= the lines of the data's concepts.txt)")


def multi_hot(concept_ids: tf.Tensor, num_concepts: int) -> tf.Tensor:
  """Concept ids [..., N] int (-1: none) -> targets [..., num_concepts] float32, 1 where named
  (N may be 0: no concept)."""
  counts = tf.reduce_sum(tf.one_hot(concept_ids, num_concepts, dtype=tf.float32), axis=-2)
  return tf.minimum(counts, 1.0)


def concept_losses(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
  """Per-image multi-label loss [B] (float32): sigmoid cross-entropy summed over concepts."""
  losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets,
                                                   logits=tf.cast(logits, tf.float32))
  return tf.reduce_sum(losses, axis=-1)
