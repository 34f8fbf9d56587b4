"""Tiny random Show and Tell models, checkpoints, vocabularies and JPEGs for inference tests."""

import dataclasses
import os
from typing import List, Sequence

import numpy as np
import tensorflow as tf

from im2txt import configuration
from im2txt import vocabulary
from im2txt.model import show_and_tell_model

# A 6-id vocabulary (5 lines + <UNK>): ids 0..4 in file order, <UNK> = 5.
WORDS = ["<S>", "</S>", "a", "dog", "."]


def tiny_config(vocab_size: int = 6) -> configuration.Config:
  """small_config with 16-unit embeddings and LSTM: a model that builds and runs in seconds."""
  config = configuration.small_config()
  config.model = dataclasses.replace(config.model, vocab_size=vocab_size, embedding_size=16,
                                     num_lstm_units=16)
  return config


def random_model(config: configuration.Config, seed: int = 0,
                 calibrate: bool = True) -> show_and_tell_model.ShowAndTellModel:
  """A built model with peaked, seeded random decoder weights (no near-tie probabilities).

  The default ±0.08 weights of a 16-unit decoder give nearly uniform next-word distributions,
  where float rounding could reorder near-equal captions; larger weights keep them apart.
  """
  tf.keras.utils.set_random_seed(seed)
  model = show_and_tell_model.ShowAndTellModel(config.model)
  model.build_all()
  if calibrate:
    # Makes the random Inception's features depend on the image (see the model's docstring).
    model.calibrate_inception_batch_norm(random_images(8, config, seed=seed + 1000))
  rng = np.random.default_rng(seed)
  # The image embedding sums 2048 O(1) features: a smaller scale keeps it O(1) too.
  scales = ((model.image_embedding, 0.05), (model.seq_embedding, 1.0), (model.lstm_cell, 1.0),
            (model.logits_layer, 1.0))
  for layer, scale in scales:
    for v in layer.weights:
      v.assign(rng.normal(0.0, scale, v.shape).astype(np.float32))
  return model


def random_images(n: int, config: configuration.Config, seed: int = 0) -> tf.Tensor:
  rng = np.random.default_rng(seed)
  shape = [n, config.model.image_height, config.model.image_width, 3]
  return tf.constant(rng.uniform(-1.0, 1.0, shape).astype(np.float32))


def write_checkpoint(model: show_and_tell_model.ShowAndTellModel, config: configuration.Config,
                     directory: str) -> str:
  """Saves as the trainer does (CheckpointManager + config.json); returns the prefix."""
  checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(7, dtype=tf.int64))
  prefix = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=5).save()
  configuration.save_config(config, directory)
  return prefix


def write_vocab(path: str, words: Sequence[str] = WORDS) -> str:
  vocabulary.write_word_counts(path, [(w, 100 - i) for i, w in enumerate(words)])
  return path


def write_jpegs(directory: str, n: int, seed: int = 0, size=(40, 56)) -> List[str]:
  """n JPEG files of random smooth colours (different images give different captions)."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  paths = []
  for i in range(n):
    small = rng.uniform(0, 255, [4, 4, 3]).astype(np.uint8)
    image = tf.image.resize(small, size, method="bilinear")
    path = os.path.join(directory, f"image{i}.jpg")
    tf.io.write_file(path, tf.io.encode_jpeg(tf.cast(image, tf.uint8)))
    paths.append(path)
  return paths
