"""Tiny random Show and Tell models, checkpoints, vocabularies and JPEGs for inference tests."""

import dataclasses
import os
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np
import tensorflow as tf

from im2txt import concepts
from im2txt import configuration
from im2txt import vocabulary
from im2txt.model import show_and_tell_model

# A 6-id vocabulary (5 lines + <UNK>): ids 0..4 in file order, <UNK> = 5.
WORDS = ["<S>", "</S>", "a", "dog", "."]
# A concepts.txt of 7 concepts, ids 0..6 in file order; one holds markup (for the HTML page).
CONCEPTS = ["red", "circle", "white", "<b>", "square", "blue", "background"]
# Bias of the concept head's outputs past concepts.txt's lines: they would win every ranking
# that did not leave them out.
EXTRA_CONCEPT_BIAS = 20.0


def tiny_config(vocab_size: int = 6) -> configuration.Config:
  """small_config with 16-unit embeddings and LSTM, without the concept head: a model that
  builds and runs in seconds."""
  config = configuration.small_config()
  config.model = dataclasses.replace(configuration.without_concept_head(config.model),
                                     vocab_size=vocab_size, embedding_size=16, num_lstm_units=16)
  return config


def concept_config(vocab_size: int = 6, num_concepts: int = 9) -> configuration.Config:
  """tiny_config with a concept head (its existence is what inference needs) whose
  probabilities are fed to the LSTM's first input, so captions depend on the head too."""
  config = tiny_config(vocab_size)
  config.model = dataclasses.replace(config.model, num_concepts=num_concepts,
                                     concept_loss_weight=1.0, concept_input="start")
  return config


def random_model(config: configuration.Config, seed: int = 0,
                 calibrate: bool = True) -> show_and_tell_model.ShowAndTellModel:
  """A built model with peaked, seeded random decoder weights (no near-tie probabilities).

  The default ±0.08 weights of a 16-unit decoder give nearly uniform next-word distributions,
  where float rounding could reorder near-equal captions; larger weights keep them apart. A
  concept head's probabilities are spread over (0, 1) instead of saturating, for the same reason.
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
  if model.concept_head is not None:
    # The pooled features share a large common part (mean ~100) and differ by ~15 per image:
    # small weights, and a bias that takes away the common part of images like write_jpegs's,
    # give logits of O(1).
    kernel = rng.normal(0.0, 0.003, model.concept_head.kernel.shape).astype(np.float32)
    features = model.image_features(smooth_images(8, config, seed=seed + 2000)).numpy()
    common = (features @ kernel).mean(axis=0)
    model.concept_head.kernel.assign(kernel)
    model.concept_head.bias.assign(
        (rng.normal(0.0, 1.0, common.shape) - common).astype(np.float32))
  return model


def random_images(n: int, config: configuration.Config, seed: int = 0) -> tf.Tensor:
  rng = np.random.default_rng(seed)
  shape = [n, config.model.image_height, config.model.image_width, 3]
  return tf.constant(rng.uniform(-1.0, 1.0, shape).astype(np.float32))


def smooth_images(n: int, config: configuration.Config, seed: int = 0) -> tf.Tensor:
  """n images of random smooth colours, as write_jpegs's look (model input, in [-1, 1])."""
  rng = np.random.default_rng(seed)
  small = rng.uniform(-1.0, 1.0, [n, 4, 4, 3]).astype(np.float32)
  return tf.image.resize(small, [config.model.image_height, config.model.image_width])


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


def write_concepts(path: str, words: Sequence[str] = CONCEPTS) -> str:
  concepts.write_concepts(path, [(w, 50 - i) for i, w in enumerate(words)])
  return path


class SavedConceptModel(NamedTuple):
  model: show_and_tell_model.ShowAndTellModel
  config: configuration.Config
  train_dir: str  # The checkpoint and its config.json.
  prefix: str  # The checkpoint's prefix.
  vocab_file: str
  concepts_file: str  # concepts.txt beside vocab_file, where the Beam job writes it.


def save_concept_model(directory: str, seed: int = 0, vocab_size: int = 8,
                       num_concepts: int = 9) -> SavedConceptModel:
  """A random model with a concept head, saved as training leaves it: directory/train, and
  directory/data/word_counts.txt with the concepts.txt of CONCEPTS beside it.

  num_concepts may exceed concepts.txt's lines (as vocab_size may exceed word_counts.txt's):
  the head's outputs past them get EXTRA_CONCEPT_BIAS, so a ranking that kept them shows.
  """
  config = concept_config(vocab_size, num_concepts)
  model = random_model(config, seed)
  bias = model.concept_head.bias
  bias.assign(tf.where(tf.range(num_concepts) < len(CONCEPTS), bias, EXTRA_CONCEPT_BIAS))
  train_dir = os.path.join(directory, "train")
  prefix = write_checkpoint(model, config, train_dir)
  data_dir = os.path.join(directory, "data")
  os.makedirs(data_dir, exist_ok=True)
  vocab_file = write_vocab(os.path.join(data_dir, "word_counts.txt"))
  concepts_file = write_concepts(os.path.join(data_dir, concepts.CONCEPTS_FILENAME))
  return SavedConceptModel(model, config, train_dir, prefix, vocab_file, concepts_file)


def expected_concepts(model: show_and_tell_model.ShowAndTellModel, images: tf.Tensor,
                      words: Sequence[str], k: int) -> List[List[Tuple[str, float]]]:
  """Per image, the top-k (word, probability), best first, ties to the lower id: computed apart
  from the code under test, by model.concept_probabilities and a Python sort.

  Compiled, and given the images batched as the code under test batches them: Inception's
  float rounding depends on both (eager and compiled convolutions differ), and the head's bias
  cancels most of its output, which turns those roundings into differences of ~1e-5.
  """
  top = []
  probabilities = tf.function(model.concept_probabilities)(images)
  for row in probabilities.numpy()[:, :len(words)]:
    order = sorted(range(len(words)), key=lambda i: (-row[i], i))[:k]
    top.append([(words[i], float(row[i])) for i in order])
  return top


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
