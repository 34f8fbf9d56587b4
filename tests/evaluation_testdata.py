"""A tiny val split, vocabulary, configuration and checkpoints for the evaluator's tests.

Seven (image, caption) records of three images in two shards; the captions of one image are
spread over both shards, and one caption has a word missing from the vocabulary ("the").
Given concept words, the records also carry image/concept_ids, as the Beam job writes them.
"""

import dataclasses
import glob
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from im2txt import concepts
from im2txt import configuration
from im2txt import sequence_example
from im2txt import vocabulary

VOCAB_WORDS = ["<S>", "</S>", "a", "dog", "cat", "on", "grass", "."]
# (shard, image id, caption) in file order.
RECORDS = [
    (0, 11, "a dog on grass ."),
    (0, 12, "a cat ."),
    (0, 11, "dog on the grass"),
    (1, 13, "a cat on a dog ."),
    (1, 12, "cat on grass"),
    (1, 11, "a dog ."),
    (1, 13, "cat"),
]
NUM_SHARDS = 2
# Concepts for write_val_split(concept_words=...): dog = 0, cat = 1, grass = 2.
CONCEPT_WORDS = ["dog", "cat", "grass"]


def tiny_config() -> configuration.Config:
  """small_config with a 16-unit LSTM, 10 words, no concept head and tiny eval sizes."""
  config = configuration.small_config()
  return dataclasses.replace(
      config,
      model=dataclasses.replace(configuration.without_concept_head(config.model), vocab_size=10, embedding_size=16,
                                num_lstm_units=16),
      eval=configuration.EvalConfig(eval_interval_secs=1, num_eval_examples=5, min_global_step=0,
                                    batch_size=3, num_caption_images=2,
                                    num_text_summary_images=2),
      inference=configuration.InferenceConfig(beam_size=2, max_caption_length=6, batch_size=2))


def jpeg(image_id: int) -> bytes:
  """A noise image of a size that depends on the id (central crops differ from resizes)."""
  rng = np.random.RandomState(image_id)
  image = rng.randint(0, 256, size=[60 + image_id, 90 - image_id, 3]).astype(np.uint8)
  return tf.io.encode_jpeg(image, quality=90).numpy()


def write_vocab(directory: str) -> str:
  path = os.path.join(directory, "word_counts.txt")
  vocabulary.write_word_counts(path, [(w, 100 - i) for i, w in enumerate(VOCAB_WORDS)])
  return path


def image_concept_ids(concept_words: List[str]) -> Dict[int, List[int]]:
  """{image id: the sorted ids of the concepts named in any of its captions}."""
  concept_vocab = concepts.ConceptVocabulary(concept_words)
  captions = {}
  for _, image_id, caption in RECORDS:
    captions.setdefault(image_id, []).append(vocabulary.caption_tokens(caption))
  return {image_id: concept_vocab.concept_ids(tokens) for image_id, tokens in captions.items()}


def write_val_split(directory: str, concept_words: Optional[List[str]] = None) -> str:
  """Writes val-0000i-of-00002 (with image/concept_ids given concept words); returns their file
  pattern."""
  vocab = vocabulary.Vocabulary(VOCAB_WORDS)
  concept_ids = image_concept_ids(concept_words) if concept_words is not None else {}
  tf.io.gfile.makedirs(directory)
  paths = [os.path.join(directory, f"val-{i:05d}-of-{NUM_SHARDS:05d}") for i in range(NUM_SHARDS)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  for shard, image_id, caption in RECORDS:
    tokens = vocabulary.caption_tokens(caption)
    writers[shard].write(sequence_example.make_sequence_example(
        image_id, jpeg(image_id), tokens, vocab.ids(tokens),
        concept_ids=concept_ids.get(image_id)).SerializeToString())
  for writer in writers:
    writer.close()
  return os.path.join(directory, "val-?????-of-00002")


def save_checkpoint(train_dir: str, model: tf.keras.Model, step: int,
                    config: configuration.Config) -> str:
  """Saves as the trainer does: ckpt-<step> through a CheckpointManager, plus config.json."""
  configuration.save_config(config, train_dir)
  checkpoint = tf.train.Checkpoint(step=tf.Variable(step, dtype=tf.int64), model=model)
  manager = tf.train.CheckpointManager(checkpoint, train_dir, max_to_keep=5,
                                       checkpoint_name="ckpt")
  return manager.save(checkpoint_number=step)


def perturb_weights(model: tf.keras.Model, seed: int) -> None:
  """Gives the decoder's variables (and a concept head's) new random values (Inception's
  stay)."""
  rng = np.random.RandomState(seed)
  layers = [model.image_embedding, model.seq_embedding, model.lstm_cell, model.logits_layer]
  layers += [layer for layer in (model.concept_head, model.concept_embedding) if layer is not None]
  for layer in layers:
    for variable in layer.weights:
      variable.assign(rng.uniform(-0.5, 0.5, size=variable.shape).astype(np.float32))


def delete_checkpoint_files(path: str) -> None:
  for name in glob.glob(path + ".*"):
    os.remove(name)


def summary_values(eval_dir: str) -> Iterator[Tuple[int, tf.compat.v1.Summary.Value]]:
  """(step, summary value) of every summary in eval_dir's event files, in file order.

  The files are read as plain TFRecords of Event protos, as demo/run_demo.py does:
  tf.compat.v1.train.summary_iterator prints a deprecation warning.
  """
  for path in sorted(glob.glob(os.path.join(eval_dir, "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        yield int(event.step), value


def read_events(eval_dir: str) -> Tuple[Dict[str, List[Tuple[int, float]]],
                                        Dict[str, List[Tuple[int, str]]]]:
  """({scalar tag: [(step, value)]}, {text tag: [(step, text)]}) from eval_dir's event files."""
  scalars, texts = {}, {}
  for step, value in summary_values(eval_dir):
    plugin = value.metadata.plugin_data.plugin_name
    if plugin == "scalars":
      scalars.setdefault(value.tag, []).append((step, float(tf.make_ndarray(value.tensor))))
    elif plugin == "text":
      texts.setdefault(value.tag, []).append(
          (step, tf.make_ndarray(value.tensor).item().decode("utf-8")))
  return scalars, texts


def read_images(eval_dir: str) -> Dict[str, List[Tuple[int, List[bytes], str]]]:
  """{image tag: [(step, [PNG bytes per image], description)]} from eval_dir's event files.

  An image summary's tensor holds [width, height, PNG, ...] as strings.
  """
  images = {}
  for step, value in summary_values(eval_dir):
    if value.metadata.plugin_data.plugin_name == "images":
      strings = tf.make_ndarray(value.tensor).tolist()
      images.setdefault(value.tag, []).append(
          (step, strings[2:], value.metadata.summary_description))
  return images
