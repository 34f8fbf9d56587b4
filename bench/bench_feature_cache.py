r"""Phase 1 on cached Inception features vs on the images, measured in one run.

  python -m bench.bench_feature_cache --preset=default --batch_size=32 --steps=8
  python -m bench.bench_feature_cache --preset=small --batch_size=32 --steps=40

On generated records (noise JPEGs, --captions_per_image random captions each), with a random
Inception initialised by a 0-step run (ckpt-0): the feature job
(beam_jobs/extract_image_features, DirectRunner on all cores) computes every image's features,
then phase 1 runs from ckpt-0 on the image records and on the feature records, same batch and
model. Prints the job's images/s and both phase-1 speeds (excluding each run's first two steps,
which trace the step) and their ratio.
"""

import dataclasses
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from beam_jobs import extract_image_features
from bench import bench_data
from im2txt import configuration
from im2txt.training import train_state
from im2txt.training import trainer

flags.DEFINE_enum("preset", "default", sorted(configuration.PRESETS),
                  "Model sizes: default (InceptionV3 at 299, LSTM 512, vocabulary 12000) or "
                  "small (75, LSTM 128).")
flags.DEFINE_integer("batch_size", 32, "Global batch of phase 1.")
flags.DEFINE_integer("steps", 8, "Measured phase-1 steps on the images (after two warm-up "
                     "steps); the features run measures --feature_steps_factor times more.")
flags.DEFINE_integer("feature_steps_factor", 10, "Steps on features per step on images.")
flags.DEFINE_integer("num_images", 128, "Generated images.")
flags.DEFINE_integer("captions_per_image", 5, "Records per image (MSCOCO has 5).")
flags.DEFINE_integer("jpeg_size", 400, "Height and width of the generated JPEGs.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = configuration.PRESETS[FLAGS.preset]()
  config.model = configuration.without_concept_head(config.model)
  config.input = dataclasses.replace(config.input, batch_size=FLAGS.batch_size)
  config.training = dataclasses.replace(config.training, save_checkpoint_steps=10**9,
                                        save_checkpoint_secs=0, summary_every_n_steps=10**9)
  m = config.model
  print(f"preset {FLAGS.preset}: image {m.image_height}x{m.image_width}, LSTM "
        f"{m.num_lstm_units}, vocabulary {m.vocab_size}, batch {FLAGS.batch_size}; "
        f"{FLAGS.num_images} images x {FLAGS.captions_per_image} captions")
  tmp = tempfile.mkdtemp(prefix="bench_feature_cache_")
  try:
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    pattern = bench_data.write_records(data, FLAGS.num_images, FLAGS.jpeg_size, m.vocab_size,
                                       FLAGS.captions_per_image)
    init = os.path.join(tmp, "init")
    options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=init,
                                   number_of_steps=0, seed=1, log_every_n_steps=10**9,
                                   inception_checkpoint_file=train_state.RANDOM_INCEPTION)
    trainer.train(config, options)

    start = time.time()
    counts = extract_image_features.run([f"--input_file_pattern={pattern}",
                                         f"--output_dir={tmp}/features", f"--train_dir={init}"])
    job_seconds = time.time() - start
    images = counts.counts["images_computed"]

    rows = []
    for name, source, steps in (
        ("phase 1 on images", pattern, FLAGS.steps),
        ("phase 1 on cached features", f"{tmp}/features/train-*",
         FLAGS.steps * FLAGS.feature_steps_factor)):
      train_dir = os.path.join(tmp, name.replace(" ", "_"))
      shutil.copytree(init, train_dir)
      result = trainer.train(config, trainer.TrainOptions(
          input_file_pattern=source, train_dir=train_dir, number_of_steps=steps + 2, seed=1,
          log_every_n_steps=10**9, steps_per_loop=1))
      rows.append((name, result))
    busy = counts.counts[extract_image_features.INFERENCE_MILLISECONDS] / 1000
    print(f"feature job: {images} images in {job_seconds:.1f} s = "
          f"{images / job_seconds:.1f} images/s (whole job, with its start-up); InceptionV3 "
          f"batches {busy:.1f} s summed over the workers, {images / busy:.1f} images/s per "
          "worker")
    for name, result in rows:
      rate = result.steady_steps_per_sec
      print(f"{name:<28} {rate:8.2f} steps/s {rate * FLAGS.batch_size:9.1f} examples/s")
    ratio = rows[1][1].steady_steps_per_sec / rows[0][1].steady_steps_per_sec
    print(f"phase 1 on features / on images: {ratio:.1f}x")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
