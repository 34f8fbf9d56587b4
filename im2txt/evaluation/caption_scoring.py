"""A whole split captioned and scored as the COCO caption evaluation server does.

The library behind //im2txt:score_captions:

    result = caption_scoring.score_split(caption_scoring.ScoreOptions(
        checkpoint_path="MODEL/train", vocab_file="DATA/word_counts.txt",
        image_dir="COCO/val2014", annotations_file="captions_val2014.json",
        results_file="OUT/results.json"))
    result.metrics["BLEU-4"], result.metrics["CIDEr"], ...

Every image of the split (a COCO captions file, or one split of a Karpathy split file) is
captioned with the batched beam search (config.json's `inference` settings unless overridden);
the best caption per image goes to a COCO results file (`[{"image_id": ..., "caption": ...}]`),
which is scored against the annotation file's raw reference captions with the COCO evaluation's
PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L and CIDEr (caption_metrics, which the concurrent
evaluator uses too; SPICE needs a CoreNLP download and is left out). Per-image scores go beside
the results (`results.per_image.json`).
"""

import dataclasses
import json
import os
import re
import sys
import time
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from absl import logging
import tensorflow as tf

from beam_jobs import build_report
from beam_jobs import caption_metadata
from im2txt import configuration
from im2txt import file_io
from im2txt import vocabulary
from im2txt.evaluation import caption_metrics
from im2txt.inference import captioning

@dataclasses.dataclass
class ScoreOptions:
  """One scoring run; score_captions.py fills it from its flags (same names)."""

  # A checkpoint prefix, or a train_dir (its latest checkpoint), with config.json beside it.
  checkpoint_path: str
  vocab_file: str
  # The images' folder (a COCO split folder, or the COCO root for a Karpathy split file).
  image_dir: str
  # Where the COCO results JSON goes; the per-image scores go beside it.
  results_file: str
  # A COCO captions file (e.g. captions_val2014.json): every image it lists is scored ...
  annotations_file: str = ""
  # ... or a Karpathy split file (dataset_coco.json) and one of its splits: test, val or train
  # (with restval, as the data job's train split).
  karpathy_split_file: str = ""
  split: str = "test"
  # Score only the first this many images of the split (0: all).
  max_images: int = 0
  # Beam search settings overriding config.json's `inference` section (None: config.json's).
  beam_size: Optional[int] = None
  max_caption_length: Optional[int] = None
  length_normalization_factor: Optional[float] = None
  batch_size: Optional[int] = None


@dataclasses.dataclass
class ScoreResult:
  metrics: Dict[str, float]  # Corpus-level BLEU-1..4, METEOR, ROUGE-L, CIDEr.
  num_images: int  # Images captioned and scored.
  failed: List[str]  # "path: reason" of the images that could not be captioned.
  results_file: str
  per_image_file: str


def per_image_path(results_file: str) -> str:
  """OUT/results.json -> OUT/results.per_image.json."""
  stem, _ = os.path.splitext(results_file)
  return stem + ".per_image.json"


def load_split(options: ScoreOptions) -> List[caption_metadata.ImageCaptions]:
  """The split's images with their raw references; clear errors for a bad annotation file.

  An image listed with a path outside image_dir (`..`, an absolute path, a symlink out) is an
  error: an annotation file may not make this read files elsewhere.
  """
  if bool(options.annotations_file) == bool(options.karpathy_split_file):
    raise ValueError("Give exactly one of --annotations_file and --karpathy_split_file")
  tally = build_report.Tally()
  source = options.annotations_file or options.karpathy_split_file
  if not tf.io.gfile.exists(source):
    raise FileNotFoundError(f"No such annotation file: {source}")
  try:
    if options.annotations_file:
      images = caption_metadata.load_coco_captions(source, options.image_dir, tally)
    else:
      if options.split not in build_report.SPLITS:
        raise ValueError(f"--split must be one of {build_report.SPLITS}, not {options.split!r}")
      images = caption_metadata.load_karpathy_split(source, options.image_dir,
                                                    tally)[options.split]
  except json.JSONDecodeError as e:
    raise ValueError(f"{source}: not valid JSON ({e})") from e
  outside = build_report.IMAGES_DROPPED_OUTSIDE_IMAGE_DIR
  if tally.counts[outside]:
    raise ValueError(f"{source}: {tally.counts[outside]} image file(s) outside --image_dir "
                     f"{options.image_dir}, e.g. {tally.examples[outside][0].split(': ', 1)[1]}; "
                     "not read")
  if tally.counts:
    problems = "; ".join(f"{n} {name.replace('_', ' ')} (e.g. {', '.join(tally.examples[name])})"
                         for name, n in sorted(tally.counts.items()))
    raise ValueError(f"{source}: malformed annotation file: {problems}")
  without = [image.image_id for image in images
             if not [c for c in image.captions if isinstance(c, str) and c.strip()]]
  if without:
    raise ValueError(f"{source}: {len(without)} image(s) have no reference caption, e.g. image "
                     f"id {without[0]}")
  if options.max_images > 0:
    images = images[:options.max_images]
  if not images:
    raise ValueError(f"{source}: no image to score" + (
        f" in split {options.split!r}" if options.karpathy_split_file else ""))
  for image in images:
    if not tf.io.gfile.exists(image.path):
      raise FileNotFoundError(f"{source}: image {image.image_id}'s file {image.path} does not "
                              "exist (is --image_dir right?)")
  return images


def detokenize(words: Sequence[str]) -> str:
  """Model tokens -> a sentence as people write it (and the COCO server expects).

  >>> detokenize(["a", "man", ",", "riding", "a", "wave", "."])
  'a man, riding a wave.'
  """
  text = " ".join(w for w in words if w != vocabulary.UNK_WORD)
  text = re.sub(r" ([.,;:!?%)])", r"\1", text)
  return re.sub(r" ('s|'re|'ll|'ve|'m|'d|n't)\b", r"\1", text).strip()


def _inference_config(config: configuration.Config,
                      options: ScoreOptions) -> configuration.InferenceConfig:
  overrides = {name: getattr(options, name)
               for name in ("beam_size", "max_caption_length", "length_normalization_factor",
                            "batch_size") if getattr(options, name) is not None}
  return dataclasses.replace(config.inference, **overrides)


def caption_images(images: Sequence[caption_metadata.ImageCaptions], options: ScoreOptions,
                   err: TextIO) -> Tuple[Dict[int, str], List[str]]:
  """{image id: best caption, detokenised}, and "path: reason" for the images that failed."""
  model, config, checkpoint = captioning.load_model(options.checkpoint_path)
  vocab = captioning.load_vocabulary(options.vocab_file, config.model, checkpoint)
  inference_config = _inference_config(config, options)
  captioner = captioning.Captioner(model, vocab, inference_config)
  reader = captioning.ImageReader(config.model)
  captions, failed = {}, []
  start, done = time.time(), 0
  for first in range(0, len(images), inference_config.batch_size):
    batch, pixels = [], []
    for image in images[first:first + inference_config.batch_size]:
      try:
        pixels.append(reader.read(image.path))
        batch.append(image)
      except ValueError as e:
        failed.append(str(e))
        err.write(f"Error: image {image.image_id}: {e}; skipped\n")
    if batch:
      for image, found in zip(batch, captioner.caption_images(tf.stack(pixels))):
        words = captioning.caption_words(found[0].sentence, vocab) if found else []
        captions[image.image_id] = detokenize(words)
    done += len(images[first:first + inference_config.batch_size])
    rate = done / max(time.time() - start, 1e-9)
    logging.info("Captioned %d/%d images, %.1f images/s, ETA %.0f s", done, len(images), rate,
                 (len(images) - done) / rate)
  return captions, failed


def score_split(options: ScoreOptions, err: Optional[TextIO] = None) -> ScoreResult:
  """Captions and scores the split; writes the results and per-image files (see the module)."""
  err = err or sys.stderr
  images = load_split(options)
  logging.info("Scoring %d images of %s", len(images),
               options.annotations_file or f"{options.karpathy_split_file} ({options.split})")
  # Started first: METEOR's Java process loads its tables while the model captions.
  with caption_metrics.CaptionScorer() as scorer:
    captions, failed = caption_images(images, options, err)
    if not captions:
      raise ValueError(f"None of the {len(images)} images could be captioned")
    results = [{"image_id": image_id, "caption": caption}
               for image_id, caption in captions.items()]
    file_io.write_json(options.results_file, results, indent=1, sort_keys=False)
    references = {image.image_id: [c for c in image.captions if isinstance(c, str)]
                  for image in images if image.image_id in captions}
    metrics, per_image = scorer.score_images(references, captions)
  per_image_file = per_image_path(options.results_file)
  file_io.write_json(per_image_file, {
      "metrics": metrics,
      "images": [{"image_id": image_id, "caption": captions[image_id], **per_image[image_id]}
                 for image_id in captions]}, indent=1, sort_keys=False)
  return ScoreResult(metrics, len(captions), failed, options.results_file, per_image_file)
