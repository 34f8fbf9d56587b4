r"""Trainer speed, each figure against a baseline measured in the same run.

  bazel run //bench:bench_train -- --compare=phases --image_size=75 --batch_size=8 --steps=20

On generated data (textured JPEGs, random captions, in a temporary directory), with the small
preset's model at --image_size, --compare picks what is measured:
  phases     the input pipeline alone (decode, distort, pad, batch: examples/s), then phase 1
             (Inception frozen) and phase 2 (everything trained, from phase 1's checkpoint);
  loops      phase 1 at --steps_per_loop 1 (a host sync every step) vs --fused_steps_per_loop;
  precision  phase 2 in float32 vs --mixed_precision=bf16 (AMX on recent Xeons), with the loss
             after the same steps from the same start;
  devices    phase 1 under MirroredStrategy on two logical CPU devices vs one device (same
             global batch): the cost of the replicas' collectives on one machine.
Speeds exclude each run's first two loops (they trace the step and the fused loop).
"""

import dataclasses
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from bench import bench_data
from im2txt import configuration
from im2txt.data import inputs
from im2txt.training import trainer

flags.DEFINE_integer("image_size", 75, "Model input height and width (InceptionV3: >= 75).")
flags.DEFINE_integer("batch_size", 8, "Global batch of both phases and of the pipeline.")
flags.DEFINE_integer("steps", 20, "Measured steps per phase (after one warm-up step).")
flags.DEFINE_integer("num_images", 64, "Generated images (each with one caption).")
flags.DEFINE_integer("jpeg_size", 120, "Height and width of the generated JPEGs.")
flags.DEFINE_enum("mixed_precision", "none", sorted(trainer.MIXED_PRECISION_POLICIES),
                  "Mixed precision of both phases (--compare=phases, loops, devices).")
flags.DEFINE_enum("compare", "phases", ["phases", "loops", "precision", "devices"],
                  "What to measure against what (see the module docstring).")
flags.DEFINE_integer("fused_steps_per_loop", 50, "--compare=loops: the fused loop's size.")
FLAGS = flags.FLAGS


def _pipeline_examples_per_sec(pattern: str, config: configuration.Config, steps: int) -> float:
  iterator = iter(inputs.make_dataset(pattern, config, is_training=True))
  next(iterator)  # Warm-up: fills the shuffle buffer.
  start = time.time()
  for _ in range(steps):
    next(iterator)
  return steps * config.input.batch_size / (time.time() - start)


def _config() -> configuration.Config:
  config = configuration.small_config()
  size = FLAGS.image_size
  # Without the small preset's concept head: the original's model, as README's figures were
  # measured (the head adds a 2048 x 32 layer).
  config.model = dataclasses.replace(configuration.without_concept_head(config.model),
                                     image_height=size, image_width=size,
                                     resize_height=int(size * 346 / 299),
                                     resize_width=int(size * 346 / 299))
  config.input = dataclasses.replace(config.input, batch_size=FLAGS.batch_size)
  config.training = dataclasses.replace(config.training, save_checkpoint_steps=10**9,
                                        summary_every_n_steps=10**9)
  return config


def _options(pattern: str, train_dir: str, **kwargs) -> trainer.TrainOptions:
  defaults = dict(input_file_pattern=pattern, train_dir=train_dir, log_every_n_steps=10**9,
                  seed=1, mixed_precision=FLAGS.mixed_precision, steps_per_loop=1)
  defaults.update(kwargs)
  return trainer.TrainOptions(**defaults)


def _print_rates(rows, batch: int) -> None:
  for name, result in rows:
    rate = result.steady_steps_per_sec
    print(f"{name:<34} {rate:9.2f} steps/s {rate * batch:9.1f} examples/s "
          f"(loss {result.last_loss:.4f} at step {result.global_step})")


def main(argv):
  del argv
  if FLAGS.compare == "devices":
    # Before TensorFlow initialises its devices.
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
  logging.set_verbosity(logging.WARNING)
  config = _config()
  batch, steps = FLAGS.batch_size, FLAGS.steps
  tmp = tempfile.mkdtemp(prefix="bench_train_")
  print(f"image {FLAGS.image_size}x{FLAGS.image_size}, batch {batch}, LSTM "
        f"{config.model.num_lstm_units}, --compare={FLAGS.compare}")
  try:
    pattern = bench_data.write_records(tmp, FLAGS.num_images, FLAGS.jpeg_size,
                                       config.model.vocab_size)
    if FLAGS.compare == "phases":
      pipeline = _pipeline_examples_per_sec(pattern, config, max(steps, 20))
      options = _options(pattern, os.path.join(tmp, "train"), number_of_steps=steps + 2)
      phase1 = trainer.train(config, options)
      options.train_inception, options.number_of_steps = True, 2 * (steps + 2)
      phase2 = trainer.train(config, options)
      print(f"input pipeline alone               {pipeline:9.1f} examples/s")
      _print_rates([("phase 1 (Inception frozen)", phase1),
                    ("phase 2 (all trained)", phase2)], batch)
      print(f"phase 1 / phase 2 speed: "
            f"{phase1.steady_steps_per_sec / phase2.steady_steps_per_sec:.2f}x")
      print(f"input pipeline / phase 1 consumption: "
            f"{pipeline / (phase1.steady_steps_per_sec * batch):.2f}x (above 1: it keeps up)")
    elif FLAGS.compare == "loops":
      fused = FLAGS.fused_steps_per_loop
      # Two loops of warm-up (the first traces the step, the second the fused loop), then
      # `steps` rounded up to whole loops.
      total = 1 + fused + fused * max(1, -(-steps // fused))
      rows = []
      for n in (1, fused):
        rows.append((f"phase 1, steps_per_loop {n}", trainer.train(config, _options(
            pattern, os.path.join(tmp, f"loop{n}"), number_of_steps=total, steps_per_loop=n))))
      _print_rates(rows, batch)
      print(f"steps_per_loop {fused} / 1 speed: "
            f"{rows[1][1].steady_steps_per_sec / rows[0][1].steady_steps_per_sec:.2f}x")
    elif FLAGS.compare == "precision":
      start = _options(pattern, os.path.join(tmp, "phase1"), number_of_steps=2)
      trainer.train(config, start)
      rows = []
      for policy in ("none", "bf16"):
        train_dir = os.path.join(tmp, policy)
        shutil.copytree(start.train_dir, train_dir)
        rows.append((f"phase 2, mixed precision {policy}", trainer.train(config, _options(
            pattern, train_dir, number_of_steps=2 + steps + 2, train_inception=True,
            mixed_precision=policy))))
      _print_rates(rows, batch)
      print(f"bf16 / float32 speed: "
            f"{rows[1][1].steady_steps_per_sec / rows[0][1].steady_steps_per_sec:.2f}x")
    else:
      rows = []
      for name, strategy, devices in (("one device", "default", None),
                                      ("two logical devices", "mirrored",
                                       ["/cpu:0", "/cpu:1"])):
        rows.append((f"phase 1, {name}", trainer.train(config, _options(
            pattern, os.path.join(tmp, name.replace(" ", "_")), number_of_steps=steps + 2,
            strategy=strategy, devices=devices))))
      _print_rates(rows, batch)
      print(f"two logical devices / one device speed: "
            f"{rows[1][1].steady_steps_per_sec / rows[0][1].steady_steps_per_sec:.2f}x")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
