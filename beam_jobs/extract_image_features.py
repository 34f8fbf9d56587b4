r"""Computes InceptionV3's features of every image once, for a phase 1 at feature speed.

Phase 1 never changes Inception, yet on image records every step decodes, crops and runs each
image through it again, once per caption record. This Beam job does that once per image with
RunInference and writes feature records (same shard names, same records in the same order, the
JPEG bytes replaced by the pooled features; sequence_example) and image_features.json:

  python -m beam_jobs.extract_image_features --input_file_pattern='DATA/train-*' \
    --output_dir=FEATURES --inception_checkpoint_file=inception_v3.ckpt [--preset=default]
  python -m im2txt.train --input_file_pattern='FEATURES/train-*' --train_dir=MODEL/train \
    --inception_checkpoint_file=inception_v3.ckpt --number_of_steps=N        # phase 1
  python -m im2txt.train --input_file_pattern='DATA/train-*' --train_dir=MODEL/train \
    --train_inception --number_of_steps=M                                     # phase 2, images

`--train_dir=DIR` takes Inception (and the image settings) from DIR's latest checkpoint and
config.json instead, e.g. a random Inception initialised by `train --number_of_steps=0`.
By default each image gets the evaluation (central) crop's features; `--num_views=K` adds K
seeded training distortions (crop, flip, colours), of which phase 1 draws one per visit.
Records whose image does not decode are counted and skipped. Any other flag is a Beam pipeline
option (DirectRunner on all cores by default; the job runs on Beam's other runners, as
build_mscoco_data). A rerun with the same settings and output_dir writes only missing shards.
"""

import argparse
import logging
import os
import sys
import time
from typing import List, Optional

import apache_beam as beam
import tensorflow as tf

from beam_jobs import build_mscoco_data
from beam_jobs import image_features
from im2txt import concepts
from im2txt import configuration
from im2txt import file_io
from im2txt import references
from im2txt.data import feature_cache
from im2txt.training import train_state

TMP_DIRNAME = ".extract_image_features_tmp"
_LOGGER = logging.getLogger(__name__)


def parse_args(argv: Optional[List[str]]):
  """Returns (job flags, remaining args for Beam's PipelineOptions)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input_file_pattern", required=True,
                      help="Comma-separated globs of the image records (build_mscoco_data's).")
  parser.add_argument("--output_dir", required=True,
                      help="Where the feature shards go (not the input's directory).")
  parser.add_argument("--inception_checkpoint_file", default="",
                      help="InceptionV3's weights: a TF-slim inception_v3.ckpt or a Keras no-top "
                           ".h5 file (the one phase 1 then starts from).")
  parser.add_argument("--train_dir", default="",
                      help="Instead: take Inception from this train_dir's latest checkpoint and "
                           "the image settings from its config.json.")
  parser.add_argument("--preset", default="default", choices=sorted(configuration.PRESETS),
                      help="With --inception_checkpoint_file: the configuration preset whose "
                           "image settings (size, crop, distortions) the features are for.")
  parser.add_argument("--config_file", default="",
                      help="With --inception_checkpoint_file: a config.json instead of --preset.")
  parser.add_argument("--num_views", type=int, default=0,
                      help="Seeded training distortions stored per image besides the evaluation "
                           "crop (phase 1 then draws one of them per visit).")
  parser.add_argument("--seed", type=int, default=0, help="Seeds the distortions' views.")
  parser.add_argument("--batch_size", type=int, default=32,
                      help="Largest batch of images RunInference gives InceptionV3.")
  args, pipeline_args = parser.parse_known_args(argv)
  if bool(args.inception_checkpoint_file) == bool(args.train_dir):
    parser.error("give exactly one of --inception_checkpoint_file and --train_dir")
  if args.num_views < 0 or args.batch_size < 1:
    parser.error("--num_views must be >= 0 and --batch_size >= 1")
  return args, pipeline_args


def _inception_source(args):
  """(model config, checkpoint path or "", weights file or "", description) for the flags."""
  if args.train_dir:
    checkpoint = tf.train.latest_checkpoint(args.train_dir)
    if not checkpoint:
      raise ValueError(f"--train_dir {args.train_dir} has no checkpoint (a train run with "
                       "--number_of_steps=0 writes the initial one)")
    # The checkpoint as a file name inside train_dir: its index may name another machine's path.
    checkpoint = os.path.join(args.train_dir, os.path.basename(checkpoint))
    config = configuration.load_config(args.train_dir)
    return config.model, checkpoint, "", checkpoint
  if args.inception_checkpoint_file == train_state.RANDOM_INCEPTION:
    raise ValueError("--inception_checkpoint_file=random: a random Inception's features would "
                     "not match the trainer's; initialise a train_dir with `train "
                     "--number_of_steps=0 --inception_checkpoint_file=random` and pass "
                     "--train_dir")
  config = (configuration.load_config(args.config_file) if args.config_file
            else configuration.PRESETS[args.preset]())
  return config.model, "", args.inception_checkpoint_file, args.inception_checkpoint_file


def _shards(input_file_pattern: str, output_dir: str):
  """(name, path) of every input shard, in name order; the names must be distinct, the records
  image records and the output elsewhere."""
  files = file_io.expand_patterns(input_file_pattern, "--input_file_pattern")
  names = {}
  for path in files:
    name = os.path.basename(path)
    if name in names:
      raise ValueError(f"--input_file_pattern: two shards named {name} ({names[name]}, {path}); "
                       "their feature shards would overwrite each other")
    if os.path.abspath(os.path.dirname(path)) == os.path.abspath(output_dir):
      raise ValueError(f"--output_dir {output_dir} holds the input shard {path}: write the "
                       "features elsewhere")
    names[name] = path
  if feature_cache.files_feature_shape(files) is not None:
    raise ValueError(f"{input_file_pattern}: these are feature records already")
  return sorted(names.items())


def _pending(shards, output_dir: str, info: dict):
  """The shards to write: all, or on a rerun with the same settings the missing ones."""
  existing = feature_cache.read_info(output_dir)
  done = [name for name, _ in shards if tf.io.gfile.exists(os.path.join(output_dir, name))]
  if existing is not None and existing != info:
    raise ValueError(f"{output_dir} holds features of other settings or another Inception (see "
                     f"its {feature_cache.INFO_FILENAME}): use a new --output_dir")
  if existing is None and done:
    raise ValueError(f"{output_dir} already holds {done[0]} without "
                     f"{feature_cache.INFO_FILENAME}: use a new --output_dir")
  return [(name, path) for name, path in shards if name not in done], len(done)


def _copy_vocabulary(input_shard: str, output_dir: str) -> None:
  """word_counts.txt travels with the shards: the trainer checks the records' ids against it
  (the one beside `input_shard`, the input's first shard). So does concepts.txt, when there is
  one: the records' image/concept_ids are its line numbers. And the split's references file."""
  names = [train_state.VOCAB_FILENAME, concepts.CONCEPTS_FILENAME]
  split_references = references.beside_shards(input_shard)
  if split_references:  # Self-critical training reads them (im2txt/references.py).
    names.append(os.path.basename(split_references))
  for name in names:
    source = os.path.join(os.path.dirname(input_shard), name)
    if tf.io.gfile.exists(source):
      with tf.io.gfile.GFile(source, "rb") as f:
        file_io.write_file(os.path.join(output_dir, name), f.read())


def run(argv: Optional[List[str]] = None):
  """Runs the job; returns (and prints) its counts (a build_report.Tally)."""
  args, pipeline_args = parse_args(argv)
  start = time.time()
  model_config, checkpoint, inception_file, source = _inception_source(args)
  shards = _shards(args.input_file_pattern, args.output_dir)
  model = image_features.load_inception_model(model_config, checkpoint, inception_file)
  fingerprint = feature_cache.inception_fingerprint(model.inception)
  dim = int(model.inception.output_shape[-1])
  del model
  info = {"views": 1 + args.num_views, "dim": dim, "seed": args.seed,
          "inception_fingerprint": fingerprint, "inception_source": source,
          "model": {name: getattr(model_config, name) for name in feature_cache.MODEL_FIELDS}}
  tf.io.gfile.makedirs(args.output_dir)
  pending, done = _pending(shards, args.output_dir, info)
  feature_cache.write_info(args.output_dir, info)
  _copy_vocabulary(shards[0][1], args.output_dir)
  tmp_dir = os.path.join(args.output_dir, TMP_DIRNAME)
  if tf.io.gfile.exists(tmp_dir):
    tf.io.gfile.rmtree(tmp_dir)
  tf.io.gfile.makedirs(os.path.join(tmp_dir, image_features.REPORT_DIRNAME))
  _LOGGER.info("Computing %d view(s) per image for %d shard(s) (%d done by an earlier run), "
               "Inception from %s", 1 + args.num_views, len(pending), done, source)

  pipeline = beam.Pipeline(options=build_mscoco_data.pipeline_options(pipeline_args))
  _ = pipeline | "ExtractImageFeatures" >> image_features.ExtractImageFeatures(
      pending, model_config, checkpoint, inception_file, fingerprint, args.num_views, args.seed,
      args.batch_size, args.output_dir, tmp_dir)
  result = pipeline.run()
  result.wait_until_finish()
  counts = image_features.read_counts(result, tmp_dir)
  counts.add(INFERENCE_MILLISECONDS, n=int(1000 * image_features.inference_seconds(result)))
  tf.io.gfile.rmtree(tmp_dir)
  seconds = time.time() - start
  print(format_summary(counts, args.output_dir, done, seconds), flush=True)
  return counts


# The job's counts also hold the time InceptionV3 ran (RunInference's batch latencies).
INFERENCE_MILLISECONDS = "inference_milliseconds"


def format_summary(counts, output_dir: str, done: int, seconds: float) -> str:
  c = counts.counts
  images = c.get(image_features.IMAGES_COMPUTED, 0)
  views = c.get(image_features.VIEWS_COMPUTED, 0)
  busy = c.get(INFERENCE_MILLISECONDS, 0) / 1000
  lines = [f"extract_image_features summary (output {output_dir})",
           f"  shards written: {c.get(image_features.SHARDS_WRITTEN, 0)} "
           f"(already there: {done})",
           f"  records written: {c.get(image_features.RECORDS_WRITTEN, 0)}",
           f"  images through InceptionV3: {images} ({views} views), "
           f"{images / max(seconds, 1e-9):.1f} images/s over the whole job"]
  if busy:
    lines.append(f"  InceptionV3 batches took {busy:.1f} s summed over the workers: "
                 f"{views / busy:.1f} views/s per worker")
  for name, description in image_features.SKIP_REASONS.items():
    examples = counts.examples.get(name) or []
    lines.append(f"  skipped {description}: {c.get(name, 0)}"
                 + (("  e.g. " + ", ".join(examples)) if examples else ""))
  lines.append(f"  {seconds:.1f} s")
  return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  try:
    run(argv)
  except (ValueError, FileNotFoundError, tf.errors.NotFoundError) as e:
    print(f"extract_image_features: Error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
