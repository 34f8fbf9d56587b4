r"""Builds im2txt's training data with Apache Beam: sharded TFRecord SequenceExamples + vocabulary.

Same flags, splits and output formats as the original im2txt's build_mscoco_data.py:

  bazel run //beam_jobs:build_mscoco_data -- \
    --train_image_dir=$COCO/train2014 --val_image_dir=$COCO/val2014 \
    --train_captions_file=$COCO/annotations/captions_train2014.json \
    --val_captions_file=$COCO/annotations/captions_val2014.json \
    --output_dir=$OUT

or, with a Karpathy split file (its own train/restval/val/test splits, e.g. the 5000/5000
COCO evaluation splits, or Flickr8k/30k):

  ... --karpathy_split_file=dataset_coco.json --image_dir=$COCO --output_dir=$OUT

Beyond the original: concepts.txt beside word_counts.txt, and in every record its image's
concept ids (im2txt/concepts.py); --num_concepts=0 writes exactly the original's records. And
{split}_references.json: each image's captions together (im2txt/references.py), which
self-critical training scores its samples against.

Any other flag is a Beam pipeline option (--runner, --direct_num_workers, --project, ...).
Without runner options the job runs on the DirectRunner in multi-processing mode on all cores.
Other runners' workers import this code as the installed package (`pip install .`; Dataflow,
Flink and Spark: --setup_file=pyproject.toml); README "Scaling out" gives the commands.
The run ends with a summary (records per split, images dropped per reason with examples, ...)
and exits non-zero when no record at all could be written.
"""

import argparse
import collections
import logging
import os
import re
import sys
import time
from typing import List, Optional

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.options.pipeline_options import WorkerOptions

from beam_jobs import build_report
from beam_jobs import caption_metadata
from beam_jobs import shard_writer
from beam_jobs.build_report import Tally
from im2txt import concepts
from im2txt import references
from im2txt import vocabulary

# The job's temp directory inside output_dir: shard plans, per-shard reports, partial shards.
# Cleared at the start of every run and removed after a successful one.
TMP_DIRNAME = ".build_mscoco_data_tmp"
_LOGGER = logging.getLogger(__name__)
_SHARD_FILE_RE = re.compile(r"^(train|val|test)-\d{5}-of-\d{5}$")


def parse_args(argv: Optional[List[str]]):
  """Returns (job flags, remaining args for Beam's PipelineOptions)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--train_image_dir", default="/tmp/train2014/",
                      help="Training image directory.")
  parser.add_argument("--val_image_dir", default="/tmp/val2014",
                      help="Validation image directory.")
  parser.add_argument("--train_captions_file", default="/tmp/captions_train2014.json",
                      help="Training captions JSON file.")
  parser.add_argument("--val_captions_file", default="/tmp/captions_val2014.json",
                      help="Validation captions JSON file.")
  parser.add_argument("--karpathy_split_file", default="",
                      help="Karpathy split JSON (dataset_coco.json style: images with 'split' and "
                           "'sentences'); replaces the four flags above.")
  parser.add_argument("--image_dir", default="",
                      help="With --karpathy_split_file: the directory image 'filepath'/'filename' "
                           "are relative to.")
  parser.add_argument("--output_dir", default="/tmp/", help="Output data directory.")
  parser.add_argument("--train_shards", type=int, default=256,
                      help="Number of shards in training TFRecord files.")
  parser.add_argument("--val_shards", type=int, default=4,
                      help="Number of shards in validation TFRecord files.")
  parser.add_argument("--test_shards", type=int, default=8,
                      help="Number of shards in testing TFRecord files.")
  parser.add_argument("--min_word_count", type=int, default=4,
                      help="The minimum number of occurrences of each word in the training set "
                           "for inclusion in the vocabulary.")
  parser.add_argument("--word_counts_output_file", default="",
                      help="Output vocabulary file of word counts (default: "
                           "<output_dir>/word_counts.txt).")
  parser.add_argument("--num_concepts", type=int, default=concepts.DEFAULT_NUM_CONCEPTS,
                      help="Visual concepts (the most frequent training words that are not stop "
                           "words) written to concepts.txt and, per image, as each record's "
                           "image/concept_ids; 0 writes neither (the original's records).")
  parser.add_argument("--concepts_output_file", default="",
                      help="Output concept vocabulary file (default: <output_dir>/concepts.txt).")
  parser.add_argument("--max_caption_tokens", type=int, default=100,
                      help="Captions of more tokens (<S> and </S> included) are dropped as junk "
                           "(the longest COCO caption has about 50); 0 keeps all.")
  parser.add_argument("--num_threads", type=int, default=None,
                      help="The original's thread count; accepted for compatibility and used as "
                           "--direct_num_workers on the DirectRunner when that is not given.")
  args, pipeline_args = parser.parse_known_args(argv)
  for name in ("train_shards", "val_shards", "test_shards"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be at least 1")
  if args.num_concepts < 0:
    parser.error("--num_concepts must be at least 0")
  if args.karpathy_split_file and not args.image_dir:
    parser.error("--karpathy_split_file needs --image_dir")
  return args, pipeline_args


def pipeline_options(pipeline_args: List[str], num_threads: Optional[int] = None):
  """Beam options from the command line; DirectRunner multi-processing on all cores by default."""
  options = PipelineOptions(pipeline_args)
  # Flags given on the command line, even when equal to Beam's defaults (e.g. in_memory).
  explicit = {arg[2:].split("=", 1)[0] for arg in pipeline_args if arg.startswith("--")}
  runner = options.view_as(StandardOptions).runner
  if runner is None or "direct" in str(runner).lower():
    direct = options.view_as(DirectOptions)
    if "direct_running_mode" not in explicit:
      direct.direct_running_mode = "multi_processing"
    if "direct_num_workers" not in explicit:
      direct.direct_num_workers = num_threads or 0  # 0: one worker per core.
    if direct.direct_running_mode == "multi_processing":
      worker = options.view_as(WorkerOptions)
      if "sdk_harness_log_level_overrides" not in explicit:
        # Keeps the workers' progress lines (one per shard) and drops Beam's own INFO chatter.
        worker.sdk_harness_log_level_overrides = {"apache_beam": "WARNING"}
  return options


def load_splits(args, tally: Tally):
  """Tokenized images per split, from the COCO captions files or a Karpathy split file."""
  if args.karpathy_split_file:
    images = caption_metadata.load_karpathy_split(args.karpathy_split_file, args.image_dir, tally)
    return {split: caption_metadata.tokenize_images(images[split], args.max_caption_tokens, tally)
            for split in build_report.SPLITS}
  train = caption_metadata.tokenize_images(
      caption_metadata.load_coco_captions(args.train_captions_file, args.train_image_dir, tally),
      args.max_caption_tokens, tally)
  val = caption_metadata.tokenize_images(
      caption_metadata.load_coco_captions(args.val_captions_file, args.val_image_dir, tally),
      args.max_caption_tokens, tally)
  return caption_metadata.split_coco(train, val)


def _recreate_dir(path: str):
  if tf.io.gfile.exists(path):
    tf.io.gfile.rmtree(path)
  for sub in ("", shard_writer.SPEC_DIRNAME, shard_writer.REPORT_DIRNAME):
    tf.io.gfile.makedirs(os.path.join(path, sub))


def _remove_stale_shards(output_dir: str, expected: set) -> int:
  """Deletes shard files of an earlier run with other shard counts (they would mix in globs)."""
  removed = 0
  for path in tf.io.gfile.glob(os.path.join(output_dir, "*-of-*")):
    name = os.path.basename(path)
    if _SHARD_FILE_RE.match(name) and name not in expected:
      tf.io.gfile.remove(path)
      removed += 1
  return removed


def _write_concepts(concepts_file: str, word_counts, num_concepts: int):
  """Writes concepts.txt from the vocabulary and returns its ConceptVocabulary; with
  num_concepts 0, returns None and removes a concepts.txt of an earlier run instead (it would
  describe records that no longer carry concept ids)."""
  if not num_concepts:
    if tf.io.gfile.exists(concepts_file):
      tf.io.gfile.remove(concepts_file)
      _LOGGER.info("Removed %s of an earlier run (--num_concepts=0)", concepts_file)
    return None
  selected = concepts.select_concepts(word_counts, num_concepts)
  concepts.write_concepts(concepts_file, selected)
  _LOGGER.info("Wrote %d concepts to %s", len(selected), concepts_file)
  return concepts.ConceptVocabulary([word for word, _ in selected], source=concepts_file)


def _write_references(output_dir: str, split: str, images) -> None:
  """{split}_references.json: each image's captions (tokens without <S> and </S>)."""
  path = os.path.join(output_dir, references.references_filename(split))
  references.write_references(path, split, {
      image.image_id: [" ".join(line.split(" ")[1:-1]) for line in image.token_lines]
      for image in images})
  _LOGGER.info("Wrote the references of %d %s images to %s", len(images), split, path)


def run(argv: Optional[List[str]] = None) -> build_report.BuildSummary:
  """Runs the whole job; returns (and prints) its summary."""
  args, pipeline_args = parse_args(argv)
  start = time.time()
  output_dir = args.output_dir
  vocab_file = args.word_counts_output_file or os.path.join(output_dir, "word_counts.txt")
  concepts_file = args.concepts_output_file or os.path.join(output_dir,
                                                            concepts.CONCEPTS_FILENAME)
  num_shards = {"train": args.train_shards, "val": args.val_shards, "test": args.test_shards}

  # Metadata: captions, splits and vocabulary, in the driver (no image is read here).
  tally = Tally()
  splits = load_splits(args, tally)
  if not splits["train"]:
    raise ValueError("No training image with a usable caption: nothing to build a vocabulary "
                     "from (check the captions files and flags).")
  word_counts = caption_metadata.word_counts(splits["train"], args.min_word_count)
  vocabulary.write_word_counts(vocab_file, word_counts)
  _LOGGER.info("Wrote vocabulary of %d words to %s", len(word_counts), vocab_file)
  concept_vocab = _write_concepts(concepts_file, word_counts, args.num_concepts)
  for split in build_report.SPLITS:
    _write_references(output_dir, split, splits[split])

  tmp_dir = os.path.join(output_dir, TMP_DIRNAME)
  _recreate_dir(tmp_dir)
  spec_paths, expected = [], set()
  for split in build_report.SPLITS:
    for spec in caption_metadata.plan_shards(split, splits[split], num_shards[split],
                                             concept_vocab=concept_vocab):
      spec_paths.append(shard_writer.write_shard_spec(spec, tmp_dir))
      expected.add(spec.name)
    _LOGGER.info("Planned %s: %d images in %d shards", split, len(splits[split]),
                 num_shards[split])
  del splits

  pipeline = beam.Pipeline(options=pipeline_options(pipeline_args, args.num_threads))
  _ = pipeline | "BuildMscocoData" >> shard_writer.BuildMscocoData(
      spec_paths, output_dir, tmp_dir, vocab_file)
  result = pipeline.run()
  result.wait_until_finish()

  # Each event is counted once: metadata events by the driver (tally), image and record events
  # by the shard writers (Beam metrics; their report files where a runner has no metrics).
  reports = build_report.read_reports(os.path.join(tmp_dir, shard_writer.REPORT_DIRNAME))
  worker_counts = build_report.metric_counters(result) or dict(reports.counts)
  reports.merge(tally)  # For the examples.
  summary = build_report.BuildSummary(
      counts=dict(collections.Counter(worker_counts) + tally.counts),
      examples=dict(reports.examples), num_shards=num_shards,
      output_dir=output_dir, vocab_file=vocab_file, vocab_size=len(word_counts),
      min_word_count=args.min_word_count, max_caption_tokens=args.max_caption_tokens,
      concepts_file=concepts_file if concept_vocab is not None else "",
      num_concepts=len(concept_vocab) if concept_vocab is not None else 0)
  summary.stale_shards_removed = _remove_stale_shards(output_dir, expected)
  tf.io.gfile.rmtree(tmp_dir)
  summary.seconds = time.time() - start
  print(summary.format(), flush=True)
  return summary


def main(argv: Optional[List[str]] = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  try:
    summary = run(argv)
  except (ValueError, FileNotFoundError, tf.errors.NotFoundError) as e:
    print(f"build_mscoco_data: {e}", file=sys.stderr)
    return 1
  if summary.total_records == 0:
    print("build_mscoco_data: no record could be written (see the summary above)",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
