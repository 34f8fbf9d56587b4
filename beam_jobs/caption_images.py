r"""Captions a whole collection of images on Apache Beam: RunInference over the SavedModel.

  python -m beam_jobs.caption_images --input_patterns='photos/*.jpg,more/*.png' \
      --saved_model_dir=EXPORT --output_dir=CAPTIONS [--num_shards=8]
  python -m beam_jobs.caption_images --input_list=paths.txt --base_dir=/photos \
      --checkpoint_path=MODEL/train --vocab_file=DATA/word_counts.txt --output_dir=CAPTIONS

The model is export_saved_model's SavedModel (--saved_model_dir), or a checkpoint exported once
by the driver before the pipeline starts (--checkpoint_path, --vocab_file, and the beam settings,
as export_saved_model takes them). Each worker process loads it once.

OUTPUT_DIR gets, per shard (the inputs, sorted and split into --num_shards runs):
  captions-00000-of-0000N.jsonl  one JSON object per captioned image, sorted by path, as
      run_inference --output_format=json writes it plus the probabilities:
      {"file": ..., "captions": [best first], "log_probs": [...], "probabilities": [...],
       "concepts": [{"word": ..., "probability": ...}, ...]}  (concepts: a model with a head)
  failures-00000-of-0000N.jsonl  {"file", "reason", "detail"} of each image that could not be
      captioned (missing, unreadable, empty, not an image, corrupt, too many pixels, ...)
and summary.json: images captioned, failures by reason with examples, duplicates, images/s.
Each file is written atomically. A rerun into the same OUTPUT_DIR with the same inputs, model
and --num_shards writes only the shards that are missing; other settings are an error.

Bad inputs never fail the job: each file is read and checked before batching, and counted and
listed when it cannot be captioned. A path named twice is captioned once and counted as a
duplicate. --input_list is untrusted text: with --base_dir, its paths are relative to that folder,
and a path that leads out of it (`..`, absolute, a symlink out) is a failure, never read.

Any other flag is a Beam pipeline option: DirectRunner on all cores by default; e.g.
  --runner=apache_beam.runners.dask.dask_runner.DaskRunner --dask_client_address=HOST:PORT
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp \
      --setup_file=./setup.py (or an image with this package installed)
Exit status 0 when the job ran (whatever the images), 2 on bad flags, inputs or model.
"""

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
import tensorflow as tf

from beam_jobs import build_mscoco_data
from beam_jobs import caption_metadata
from beam_jobs import image_captioning
from im2txt import file_io

TMP_DIRNAME = ".caption_images_tmp"
JOB_FILENAME = "caption_job.json"
SUMMARY_FILENAME = "summary.json"
# Example paths per failure reason in summary.json (every failure is in the failures files).
MAX_EXAMPLES = 5
# PIL's own decompression-bomb limit: an image with more pixels is not decoded.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# Images per shard when --num_shards is not given.
IMAGES_PER_SHARD = 10_000
_LOGGER = logging.getLogger(__name__)


def parse_args(argv: Optional[List[str]]):
  """Returns (job flags, remaining args for Beam's PipelineOptions)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input_patterns", default="",
                      help="Comma-separated globs of image files (any tf.io.gfile path).")
  parser.add_argument("--input_list", default="",
                      help="Instead: a text file of image paths, one per line.")
  parser.add_argument("--base_dir", default="",
                      help="With --input_list: its paths are relative to this folder and may not "
                           "lead out of it.")
  parser.add_argument("--saved_model_dir", default="",
                      help="The model: export_saved_model's output.")
  parser.add_argument("--checkpoint_path", default="",
                      help="Instead: a checkpoint (file or train_dir), exported once before the "
                           "pipeline starts; needs --vocab_file.")
  parser.add_argument("--vocab_file", default="", help="With --checkpoint_path: word_counts.txt.")
  parser.add_argument("--concepts_file", default="",
                      help="With --checkpoint_path, for a model with a concept head: its "
                           "concepts.txt (default: beside --vocab_file).")
  for name, kind in (("beam_size", int), ("max_caption_length", int),
                     ("length_normalization_factor", float)):
    parser.add_argument(f"--{name}", type=kind, default=None,
                        help="With --checkpoint_path (default: the checkpoint's config.json).")
  parser.add_argument("--output_dir", required=True, help="Where the shards and summary go.")
  parser.add_argument("--num_shards", type=int, default=0,
                      help=f"Output shards (default: one per {IMAGES_PER_SHARD:,} images).")
  parser.add_argument("--batch_size", type=int, default=32,
                      help="Most images per SavedModel call.")
  parser.add_argument("--max_image_pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                      help="Images with more pixels (width x height, read from the header) are "
                           "failures, never decoded.")
  args, pipeline_args = parser.parse_known_args(argv)
  if bool(args.input_patterns) == bool(args.input_list):
    parser.error("give exactly one of --input_patterns and --input_list")
  if args.base_dir and not args.input_list:
    parser.error("--base_dir goes with --input_list")
  if bool(args.saved_model_dir) == bool(args.checkpoint_path):
    parser.error("give exactly one of --saved_model_dir and --checkpoint_path")
  if args.checkpoint_path and not args.vocab_file:
    parser.error("--checkpoint_path needs --vocab_file")
  if args.saved_model_dir and (args.vocab_file or args.concepts_file or any(
      getattr(args, n) is not None
      for n in ("beam_size", "max_caption_length", "length_normalization_factor"))):
    parser.error("--vocab_file, --concepts_file and the beam settings go with --checkpoint_path "
                 "(a SavedModel has its own)")
  if args.num_shards < 0 or args.batch_size < 1 or args.max_image_pixels < 1:
    parser.error("--num_shards must be >= 0, --batch_size and --max_image_pixels >= 1")
  return args, pipeline_args


def _listed_path(line: str, base_dir: str) -> Tuple[str, str]:
  """(path, "") for one line of --input_list, or (the line, "outside_base_dir")."""
  if not base_dir:
    return line, ""
  path = caption_metadata.image_path(base_dir, line)
  return (path, "") if path is not None else (line, "outside_base_dir")


def collect_inputs(args) -> Tuple[List[Tuple[str, str]], List[str]]:
  """([(path, failure reason or "")] sorted by path, each once; [the duplicate paths])."""
  if args.input_list:
    try:
      with tf.io.gfile.GFile(args.input_list) as f:
        lines = [line.strip() for line in f.read().splitlines()]
    except (tf.errors.OpError, UnicodeDecodeError) as e:
      raise ValueError(f"--input_list {args.input_list}: cannot read it as text ({e})") from e
    listed = [_listed_path(line, args.base_dir) for line in lines if line]
    if not listed:
      raise ValueError(f"--input_list {args.input_list} names no file")
  else:
    listed = []
    for pattern in (p.strip() for p in args.input_patterns.split(",")):
      if not pattern:
        continue
      matches = [m for m in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(m)]
      if not matches:
        raise FileNotFoundError(f"--input_patterns pattern {pattern!r} matches no file")
      listed.extend((m, "") for m in sorted(matches))
    if not listed:
      raise ValueError(f"--input_patterns names no pattern (got {args.input_patterns!r})")
  entries, duplicates = {}, []
  for path, failure in listed:
    if path in entries:
      duplicates.append(path)
    else:
      entries[path] = failure
  return sorted(entries.items()), duplicates


def plan_shards(entries: List[Tuple[str, str]],
                num_shards: int) -> List[Tuple[int, List[Tuple[str, str]]]]:
  """Contiguous runs of the sorted entries, shard k the k-th; as even as can be."""
  return [(k, entries[k * len(entries) // num_shards:(k + 1) * len(entries) // num_shards])
          for k in range(num_shards)]


def _digest_files(paths: List[str], extra: str = "") -> str:
  digest = hashlib.sha256(extra.encode("utf-8"))
  for path in paths:
    with tf.io.gfile.GFile(path, "rb") as f:
      digest.update(os.path.basename(path).encode("utf-8") + b"\0" + f.read())
  return digest.hexdigest()[:32]


def prepare_model(args, tmp_dir: str) -> Tuple[str, Dict[str, str]]:
  """(the SavedModel directory the workers load, the model's identity for caption_job.json)."""
  if args.saved_model_dir:
    pb = os.path.join(args.saved_model_dir, "saved_model.pb")
    if not tf.io.gfile.exists(pb):
      raise FileNotFoundError(f"--saved_model_dir {args.saved_model_dir}: no saved_model.pb "
                              "(export one with export_saved_model)")
    index = os.path.join(args.saved_model_dir, "variables", "variables.index")
    files = [pb] + ([index] if tf.io.gfile.exists(index) else [])
    return args.saved_model_dir, {"saved_model": _digest_files(files)}
  # The checkpoint: exported once, here, with export_saved_model's checks.
  from im2txt.inference import captioning  # pylint: disable=g-import-not-at-top
  from im2txt.inference import serving  # pylint: disable=g-import-not-at-top
  given = {name: getattr(args, name) for name in ("beam_size", "max_caption_length",
                                                  "length_normalization_factor")
           if getattr(args, name) is not None}
  inference_config = captioning.inference_config(args.checkpoint_path, given)
  checkpoint = captioning.resolve_checkpoint(args.checkpoint_path)
  export_dir = os.path.join(tmp_dir, "saved_model")
  serving.export_saved_model(checkpoint, args.vocab_file, export_dir, inference_config,
                             concepts_file=args.concepts_file)
  settings = json.dumps({k: getattr(inference_config, k) for k in (
      "beam_size", "max_caption_length", "length_normalization_factor")}, sort_keys=True)
  files = [checkpoint + ".index", args.vocab_file]
  concepts_file = args.concepts_file or os.path.join(os.path.dirname(args.vocab_file),
                                                     "concepts.txt")
  if tf.io.gfile.exists(concepts_file):
    files.append(concepts_file)
  return export_dir, {"checkpoint": _digest_files(files, settings)}


def _check_job(output_dir: str, job: dict, num_shards: int) -> List[int]:
  """The shards already written by an earlier run of the same job (an error for another job)."""
  path = os.path.join(output_dir, JOB_FILENAME)
  done = [k for k in range(num_shards) if tf.io.gfile.exists(
      os.path.join(output_dir, image_captioning.captions_name(k, num_shards)))]
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      text = f.read()
    try:
      existing = json.loads(text)
    except ValueError as e:
      existing = f"not JSON ({e})"
    if not isinstance(existing, dict):
      raise ValueError(f"{path}: {existing if isinstance(existing, str) else 'not a JSON object'}"
                       f", so this --output_dir's job is unknown (caption_images writes this file "
                       "whole): use a new --output_dir")
    if existing != job:
      changed = sorted(k for k in set(job) | set(existing) if job.get(k) != existing.get(k))
      raise ValueError(f"--output_dir {output_dir} holds captions of another job (its "
                       f"{JOB_FILENAME} differs in: {', '.join(changed)}): use a new --output_dir")
  elif tf.io.gfile.exists(output_dir) and any(
      name.startswith(("captions-", "failures-")) for name in tf.io.gfile.listdir(output_dir)):
    raise ValueError(f"--output_dir {output_dir} already holds caption shards without "
                     f"{JOB_FILENAME}: use a new --output_dir")
  return done


def _read_shard(output_dir: str, k: int, num_shards: int) -> Tuple[List[dict], List[dict]]:
  """(captions, failures) of shard k: its two files' JSON lines. A file changed or removed by
  hand is an error naming it (and the line) and saying how to caption the shard again."""
  paths = [os.path.join(output_dir, name(k, num_shards)) for name in (
      image_captioning.captions_name, image_captioning.failures_name)]
  redo = (f"remove {paths[0]} and {paths[1]} and rerun the job, which captions the shard's "
          "images again")
  shard = []
  for path, needed in zip(paths, ((), ("file", "reason", "detail"))):
    try:
      with tf.io.gfile.GFile(path) as f:
        lines = f.read().splitlines()
    except tf.errors.NotFoundError as e:
      raise ValueError(f"{path}: missing, though the shard's other file is there: {redo}") from e
    records = []
    for number, line in enumerate(lines, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        problem = None if isinstance(record, dict) else "not a JSON object"
      except ValueError as e:
        problem = f"not JSON ({e})"
      if problem is None and not all(key in record for key in needed):
        problem = f"a record without {', '.join(needed)}"
      if problem:
        raise ValueError(f"{path} line {number}: {problem}; the file was changed after "
                         f"caption_images wrote it: {redo}")
      records.append(record)
    shard.append(records)
  return shard[0], shard[1]


def summarize(output_dir: str, num_shards: int, num_listed: int, duplicates: List[str],
              written_now: List[int], seconds: float) -> dict:
  """summary.json's contents, from the shard files on disk (this run's, `written_now`, and
  earlier runs')."""
  captioned, captioned_now, converted, failures = 0, 0, {}, {}
  for k in range(num_shards):
    records, shard_failures = _read_shard(output_dir, k, num_shards)
    for record in records:
      captioned += 1
      captioned_now += k in written_now
      if image_captioning.CONVERTED_FROM in record:
        fmt = record[image_captioning.CONVERTED_FROM]
        converted[fmt] = converted.get(fmt, 0) + 1
    for failure in shard_failures:
      failures.setdefault(failure["reason"], []).append(failure)
  failed = {}
  for reason, description in image_captioning.FAILURE_REASONS.items():
    if reason in failures:
      items = failures[reason]
      failed[reason] = {"count": len(items), "description": description,
                        "examples": [{"file": f["file"], "detail": f["detail"]}
                                     for f in items[:MAX_EXAMPLES]]}
  return {
      "images_listed": num_listed,
      "images_captioned": captioned,
      "images_failed": sum(len(items) for items in failures.values()),
      # Formats TensorFlow does not decode, given to the model as an RGB JPEG.
      "images_converted_to_jpeg": dict(sorted(converted.items())),
      "failed": failed,
      "duplicates": {"count": len(duplicates), "description": "named more than once, "
                     "captioned once", "examples": sorted(set(duplicates))[:MAX_EXAMPLES]},
      "shards": {"total": num_shards, "written_now": len(written_now),
                 "already_there": num_shards - len(written_now)},
      "this_run": {"images_captioned": captioned_now, "seconds": round(seconds, 3),
                   "images_per_second": round(captioned_now / max(seconds, 1e-9), 2)},
  }


def format_summary(summary: dict, output_dir: str) -> str:
  run = summary["this_run"]
  lines = [f"caption_images summary (output {output_dir})",
           f"  images listed: {summary['images_listed']} (duplicates: "
           f"{summary['duplicates']['count']})",
           f"  images captioned: {summary['images_captioned']}"
           + (" (converted to JPEG: " + ", ".join(
               f"{n} {fmt}" for fmt, n in summary["images_converted_to_jpeg"].items()) + ")"
              if summary["images_converted_to_jpeg"] else ""),
           f"  images failed: {summary['images_failed']}"]
  for reason, entry in summary["failed"].items():
    lines.append(f"    {entry['description']}: {entry['count']}  e.g. "
                 + ", ".join(e["file"] for e in entry["examples"][:3]))
  shards = summary["shards"]
  lines.append(f"  shards written: {shards['written_now']} (already there: "
               f"{shards['already_there']})")
  lines.append(f"  this run: {run['images_captioned']} images captioned in {run['seconds']:.1f} "
               f"s, {run['images_per_second']:.1f} images/s")
  return "\n".join(lines)


def run(argv: Optional[List[str]] = None) -> dict:
  """Runs the job; returns (and prints) summary.json's contents."""
  args, pipeline_args = parse_args(argv)
  start = time.time()
  entries, duplicates = collect_inputs(args)
  num_shards = args.num_shards or max(1, math.ceil(len(entries) / IMAGES_PER_SHARD))
  output_dir = args.output_dir
  tf.io.gfile.makedirs(output_dir)
  tmp_dir = os.path.join(output_dir, TMP_DIRNAME)
  if tf.io.gfile.exists(tmp_dir):
    tf.io.gfile.rmtree(tmp_dir)
  tf.io.gfile.makedirs(tmp_dir)
  saved_model_dir, model_identity = prepare_model(args, tmp_dir)
  job = {"inputs": hashlib.sha256("\n".join(f"{p}\t{r}" for p, r in entries).encode(
             "utf-8")).hexdigest()[:32],
         "num_inputs": len(entries), "num_shards": num_shards, "model": model_identity,
         "max_image_pixels": args.max_image_pixels}
  done = _check_job(output_dir, job, num_shards)
  job_file = os.path.join(output_dir, JOB_FILENAME)
  if not tf.io.gfile.exists(job_file):  # (An earlier run's is the same: _check_job.)
    file_io.write_json(job_file, job)
  pending = [shard for shard in plan_shards(entries, num_shards) if shard[0] not in done]
  total = sum(len(paths) for _, paths in pending)
  _LOGGER.info("Captioning %d images in %d shard(s) (%d done by an earlier run) with %s",
               total, len(pending), len(done), args.saved_model_dir or args.checkpoint_path)
  if pending:
    pipeline = beam.Pipeline(options=build_mscoco_data.pipeline_options(pipeline_args))
    _ = pipeline | "CaptionImages" >> image_captioning.CaptionImages(
        pending, num_shards, saved_model_dir, output_dir, tmp_dir, args.batch_size,
        args.max_image_pixels, total)
    result = pipeline.run()
    result.wait_until_finish()
  seconds = time.time() - start
  summary = summarize(output_dir, num_shards, len(entries) + len(duplicates), duplicates,
                      [k for k, _ in pending], seconds)
  file_io.write_json(os.path.join(output_dir, SUMMARY_FILENAME), summary)
  tf.io.gfile.rmtree(tmp_dir)
  print(format_summary(summary, output_dir), flush=True)
  return summary


def main(argv: Optional[List[str]] = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  try:
    run(argv)
  except (ValueError, FileNotFoundError, FileExistsError, tf.errors.NotFoundError) as e:
    print(f"caption_images: Error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
