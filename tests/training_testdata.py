"""Tiny training data and configurations for the model, input-pipeline and trainer tests.

A "caption" here is a list of word ids without the <S> (1) and </S> (2) markers, which
`write_shards` adds. Images are solid-colour JPEGs, one colour per image id, so a model can
tell them apart even with a frozen, randomly initialised Inception.
"""

import dataclasses
import glob
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from im2txt import configuration
from im2txt import sequence_example

START_ID, END_ID = 1, 2

# Distinct, saturated colours (RGB).
COLOURS = [(230, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 40), (200, 40, 210),
           (40, 210, 220), (250, 140, 20), (120, 120, 120)]


def solid_jpeg(colour: Tuple[int, int, int], size: int = 40) -> bytes:
  image = np.zeros([size, size, 3], np.uint8) + np.array(colour, np.uint8)
  return tf.io.encode_jpeg(image, quality=95).numpy()


def textured_jpeg(colour: Tuple[int, int, int], seed: int, size: int = 40) -> bytes:
  """The colour with seeded uniform noise of +-60 levels: images with some texture."""
  rng = np.random.default_rng(seed)
  image = np.array(colour, np.float64) + rng.uniform(-60, 60, [size, size, 3])
  return tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=95).numpy()


def write_shards(directory: str, examples: Sequence[Tuple[int, bytes, List[int]]],
                 num_shards: int, name: str = "train") -> str:
  """Writes (image_id, jpeg, caption) round-robin into shards; returns their glob pattern."""
  tf.io.gfile.makedirs(directory)
  paths = [os.path.join(directory, f"{name}-{i:05d}-of-{num_shards:05d}")
           for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  for i, (image_id, jpeg, caption) in enumerate(examples):
    ids = [START_ID] + list(caption) + [END_ID]
    record = sequence_example.make_sequence_example(
        image_id, jpeg, [f"w{t}" for t in ids], ids)
    writers[i % num_shards].write(record.SerializeToString())
  for w in writers:
    w.close()
  return os.path.join(directory, f"{name}-?????-of-{num_shards:05d}")


def colour_examples(captions: Dict[int, List[int]], size: int = 40, textured: bool = False):
  """{image_id: caption} -> examples whose image is COLOURS[image_id] (plus noise if textured)."""
  return [(image_id, textured_jpeg(COLOURS[image_id], image_id, size) if textured
           else solid_jpeg(COLOURS[image_id], size), caption)
          for image_id, caption in sorted(captions.items())]


def tiny_config(vocab_size: int = 16, units: int = 32, batch_size: int = 4,
                lstm_keep: float = 0.7, **training) -> configuration.Config:
  """75x75 images (InceptionV3's minimum), tiny LSTM; `training` overrides TrainingConfig.

  The model and optimizers are the original's (dropout, colour distortions, Keras' batch-norm
  momentum in Inception, no image-embedding batch norm, SGD in both phases, no concept head); the
  small preset's own settings are exercised by tests/demo_test.py and their one-feature tests.
  """
  config = configuration.small_config()
  config.model = dataclasses.replace(
      configuration.without_concept_head(config.model), vocab_size=vocab_size, image_height=75,
      image_width=75, resize_height=80, resize_width=80, embedding_size=units, num_lstm_units=units,
      lstm_dropout_keep_prob=lstm_keep, inception_dropout_keep_prob=0.8, distort_colors=True,
      image_embedding_batch_norm=False, inception_batch_norm_momentum=0.99)
  config.input = dataclasses.replace(config.input, batch_size=batch_size,
                                     values_per_input_shard=16, num_parallel_reads=2)
  defaults = dict(save_checkpoint_steps=1000, save_checkpoint_secs=0, summary_every_n_steps=5,
                  train_inception_optimizer="SGD", train_inception_learning_rate=0.0005)
  defaults.update(training)
  config.training = dataclasses.replace(config.training, **defaults)
  return config


def repo_root() -> str:
  """The directory holding the im2txt package (the source tree, or Bazel's runfiles)."""
  import im2txt  # pylint: disable=g-import-not-at-top  (the package, for its path)
  return os.path.dirname(os.path.dirname(os.path.abspath(im2txt.__file__)))


def start_train_process(args: Sequence[str], log_path: str, env: Dict[str, str] = None):
  """Starts `python -m im2txt.train ARGS` with its output in log_path; returns the Popen."""
  full_env = dict(os.environ)
  full_env["PYTHONPATH"] = repo_root() + os.pathsep + full_env.get("PYTHONPATH", "")
  full_env.update(env or {})
  with open(log_path, "w") as log:
    return subprocess.Popen([sys.executable, "-m", "im2txt.train", *args], stdout=log,
                            stderr=subprocess.STDOUT, env=full_env, cwd=repo_root())


def read_log(path: str) -> str:
  """The text of a (process's) log file."""
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read()


def wait_for(test, predicate: Callable[[], bool], process, log_path: str, what: str,
             timeout: float) -> None:
  """Polls `predicate` until it holds; fails `test` with the end of the process's log if the
  process exits first or `timeout` seconds pass (killing it then)."""
  deadline = time.time() + timeout
  while not predicate():
    if process.poll() is not None:
      test.fail(f"im2txt.train exited ({process.returncode}) before {what}:\n"
                f"{read_log(log_path)[-5000:]}")
    if time.time() > deadline:
      process.kill()
      test.fail(f"timed out waiting for {what}:\n{read_log(log_path)[-5000:]}")
    time.sleep(0.2)


def write_config_file(config: configuration.Config, directory: str) -> str:
  return configuration.save_config(config, directory)


def read_scalars(logdir: str) -> dict:
  """{tag: {step: value}} of every summary in logdir (scalars as floats, others as arrays)."""
  scalars = {}
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        array = tf.make_ndarray(value.tensor)
        scalars.setdefault(value.tag, {})[event.step] = array.item() if array.ndim == 0 else array
  return scalars


def inception_values(checkpoint_path: str) -> dict:
  reader = tf.train.load_checkpoint(checkpoint_path)
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.startswith("model/inception/")}


def write_scst_files(directory: str, references: Dict[int, List[List[int]]],
                     num_words: int = 15) -> None:
  """Beside shards written by write_shards: word_counts.txt (id i is "w{i}", 1 and 2 the <S> and
  </S> markers) and train_references.json ({image id: [caption ids, ...]} as those words), as
  build_mscoco_data writes them for self-critical training."""
  from im2txt import references as references_lib  # pylint: disable=g-import-not-at-top
  from im2txt import vocabulary  # pylint: disable=g-import-not-at-top
  words = {START_ID: vocabulary.START_WORD, END_ID: vocabulary.END_WORD}
  vocabulary.write_word_counts(os.path.join(directory, "word_counts.txt"),
                               [(words.get(i, f"w{i}"), 1000 - i) for i in range(num_words)])
  references_lib.write_references(
      os.path.join(directory, references_lib.references_filename("train")), "train",
      {image: [" ".join(f"w{t}" for t in caption) for caption in captions]
       for image, captions in references.items()})
