r"""Trainer speed: phase 1 vs phase 2 at the same batch, and the input pipeline vs the trainer.

  bazel run //bench:bench_train -- --image_size=75 --batch_size=8 --steps=20

On generated data (textured JPEGs, random captions, in a temporary directory), with the small
preset's model at --image_size:
  1. the input pipeline alone (training mode: decode, distort, pad, batch): examples/s;
  2. phase 1 (Inception frozen) for --steps steps: steps/s and examples/s;
  3. phase 2 (everything trained), resumed from phase 1's checkpoint: the same.
Speeds exclude each run's first step (it also traces the step). Phase 1 should be clearly
faster (no gradient flows through Inception); the pipeline should outrun the trainer.
"""

import dataclasses
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from im2txt import configuration
from im2txt import inputs
from im2txt import sequence_example
from im2txt import training

flags.DEFINE_integer("image_size", 75, "Model input height and width (InceptionV3: >= 75).")
flags.DEFINE_integer("batch_size", 8, "Global batch of both phases and of the pipeline.")
flags.DEFINE_integer("steps", 20, "Measured steps per phase (after one warm-up step).")
flags.DEFINE_integer("num_images", 64, "Generated images (each with one caption).")
flags.DEFINE_integer("jpeg_size", 120, "Height and width of the generated JPEGs.")
flags.DEFINE_enum("mixed_precision", "none", sorted(training.MIXED_PRECISION_POLICIES),
                  "Mixed precision of both phases.")
FLAGS = flags.FLAGS


def _write_data(directory: str, num_images: int, jpeg_size: int, vocab_size: int) -> str:
  rng = np.random.default_rng(0)
  paths = [os.path.join(directory, f"train-{i:05d}-of-00004") for i in range(4)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  for i in range(num_images):
    image = rng.integers(0, 256, [jpeg_size, jpeg_size, 3], dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(image, quality=90).numpy()
    ids = [1] + rng.integers(3, vocab_size, rng.integers(8, 16)).tolist() + [2]
    record = sequence_example.make_sequence_example(i, jpeg, [f"w{t}" for t in ids], ids)
    writers[i % 4].write(record.SerializeToString())
  for w in writers:
    w.close()
  return os.path.join(directory, "train-?????-of-00004")


def _pipeline_examples_per_sec(pattern: str, config: configuration.Config, steps: int) -> float:
  iterator = iter(inputs.make_dataset(pattern, config, is_training=True))
  next(iterator)  # Warm-up: fills the shuffle buffer.
  start = time.time()
  for _ in range(steps):
    next(iterator)
  return steps * config.input.batch_size / (time.time() - start)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = configuration.small_config()
  size = FLAGS.image_size
  config.model = dataclasses.replace(config.model, image_height=size, image_width=size,
                                     resize_height=int(size * 346 / 299),
                                     resize_width=int(size * 346 / 299))
  config.input = dataclasses.replace(config.input, batch_size=FLAGS.batch_size)
  config.training = dataclasses.replace(config.training, save_checkpoint_steps=10**9,
                                        summary_every_n_steps=10**9)
  tmp = tempfile.mkdtemp(prefix="bench_train_")
  try:
    pattern = _write_data(tmp, FLAGS.num_images, FLAGS.jpeg_size, config.model.vocab_size)
    pipeline = _pipeline_examples_per_sec(pattern, config, max(FLAGS.steps, 20))
    options = training.TrainOptions(
        input_file_pattern=pattern, train_dir=os.path.join(tmp, "train"),
        number_of_steps=FLAGS.steps + 1, log_every_n_steps=10**9, seed=1,
        mixed_precision=FLAGS.mixed_precision)
    phase1 = training.train(config, options)
    options.train_inception, options.number_of_steps = True, 2 * (FLAGS.steps + 1)
    phase2 = training.train(config, options)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  batch = FLAGS.batch_size
  print(f"image {size}x{size}, batch {batch}, {FLAGS.steps} steps per phase, "
        f"LSTM {config.model.num_lstm_units}, mixed precision {FLAGS.mixed_precision}")
  print(f"input pipeline alone      {pipeline:9.1f} examples/s")
  for name, result in (("phase 1 (Inception frozen)", phase1),
                       ("phase 2 (all trained)     ", phase2)):
    rate = result.steady_steps_per_sec
    print(f"{name} {rate:9.2f} steps/s {rate * batch:9.1f} examples/s")
  ratio = phase1.steady_steps_per_sec / phase2.steady_steps_per_sec
  print(f"phase 1 / phase 2 speed: {ratio:.2f}x")
  headroom = pipeline / (phase1.steady_steps_per_sec * batch)
  print(f"input pipeline / phase 1 consumption: {headroom:.2f}x (above 1: the pipeline keeps up)")


if __name__ == "__main__":
  app.run(main)
