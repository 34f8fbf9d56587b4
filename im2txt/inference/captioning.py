"""Captioning JPEG files with a trained checkpoint: the library behind //im2txt:run_inference.

    model, config, checkpoint = load_model("MODEL/train")          # + config.json beside it
    vocab = load_vocabulary("word_counts.txt", config.model, checkpoint)
    captioner = Captioner(model, vocab, configuration.InferenceConfig(beam_size=3))
    reader = ImageReader(config.model)
    captions = captioner.caption_images(tf.stack([reader.read(f) for f in files]))
    print(format_text(files[0], captions[0], vocab), end="")

`caption_files` does all of it for the binary: comma-separated glob patterns in, the original's
text (or JSON lines) out, one batched compiled beam search per `batch_size` images.

A model with a concept head also shows each image's most probable concepts (what the encoder
sees), computed in the same compiled pass as the captions:

    concept_vocab = top_concepts.load_concepts("", "word_counts.txt", config.model, checkpoint)
    captioner = Captioner(model, vocab, inference_config, concept_vocab, num_concepts_shown=5)
    captions, shown = captioner.describe_images(images)
    # shown[0] == [Concept("red", 0.98), Concept("circle", 0.91), ...], best first
"""

import dataclasses
import json
import math
import os
import sys
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, TextIO, Tuple

from absl import logging
import tensorflow as tf

from im2txt import checkpoint_files
from im2txt import concepts
from im2txt import configuration
from im2txt import file_io
from im2txt import vocabulary
from im2txt.inference import beam_search
from im2txt.inference import caption_page
from im2txt.inference import top_concepts
from im2txt.model import image_processing
from im2txt.model import show_and_tell_model

OUTPUT_FORMATS = ("text", "json", "html")


class Caption(NamedTuple):
  """One caption of one image, as the original CaptionGenerator returned it."""

  # Word ids, <S> first (and </S> last for a complete caption).
  sentence: List[int]
  # Log-probability of the caption; the original prints p = exp(logprob).
  logprob: float
  # Ranking score (logprob, or logprob / len**length_normalization_factor when complete).
  score: float


# --- loading -------------------------------------------------------------------------------


def resolve_checkpoint(checkpoint_path: str) -> str:
  """A checkpoint prefix (e.g. train/ckpt-42) from a prefix or a directory with a `checkpoint`."""
  if tf.io.gfile.isdir(checkpoint_path):
    latest = tf.train.latest_checkpoint(checkpoint_path)
    if not latest:
      raise FileNotFoundError(f"No checkpoint found in directory {checkpoint_path} (expected a "
                              "`checkpoint` index file written by the trainer)")
    return latest
  if not tf.io.gfile.exists(checkpoint_path + ".index"):
    raise FileNotFoundError(f"No checkpoint at {checkpoint_path} (neither a directory nor a "
                            f"checkpoint prefix with a {checkpoint_path}.index file)")
  return checkpoint_path


def restore_model(model_config: configuration.ModelConfig,
                  checkpoint: str) -> show_and_tell_model.ShowAndTellModel:
  """Builds the model and restores its weights from a checkpoint prefix."""
  model = show_and_tell_model.ShowAndTellModel(model_config)
  model.build_all()
  try:
    status = tf.train.Checkpoint(model=model).restore(checkpoint)
  except checkpoint_files.READ_ERRORS as e:
    raise checkpoint_files.corrupt_checkpoint_error(checkpoint, e) from e
  try:
    # The trainer's checkpoint also holds the optimizer and the step, which inference ignores.
    status.expect_partial().assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(f"{checkpoint}: not a checkpoint of this model ({e})") from e
  logging.info("Restored %s", checkpoint)
  return model


def load_model(checkpoint_path: str) -> Tuple[show_and_tell_model.ShowAndTellModel,
                                              configuration.Config, str]:
  """Rebuilds the model from the config.json beside the checkpoint and restores its weights.

  Returns (model, config, checkpoint prefix).
  """
  checkpoint = resolve_checkpoint(checkpoint_path)
  config = configuration.load_config(os.path.dirname(checkpoint))
  return restore_model(config.model, checkpoint), config, checkpoint


def inference_config(checkpoint_path: str,
                     overrides: Mapping[str, Any]) -> configuration.InferenceConfig:
  """The `inference` section of the config.json beside the checkpoint, with `overrides` (the
  flags a user gave) applied: a model trained with beam_size 5 captions with 5 by default."""
  config = configuration.load_config(os.path.dirname(resolve_checkpoint(checkpoint_path)))
  return dataclasses.replace(config.inference, **overrides)


def load_vocabulary(vocab_file: str, model_config: configuration.ModelConfig,
                    checkpoint: str) -> vocabulary.Vocabulary:
  """Reads word_counts.txt; an error if it has more words (with <UNK>) than the model predicts."""
  vocab = vocabulary.Vocabulary.from_file(vocab_file)
  if len(vocab) > model_config.vocab_size:
    raise ValueError(
        f"Vocabulary {vocab_file} has {len(vocab)} words (with <UNK>) but the model in "
        f"{checkpoint} predicts {model_config.vocab_size} (vocab_size in its config.json): "
        "use the vocabulary the model was trained with")
  return vocab


# --- images --------------------------------------------------------------------------------


class ImageReader:
  """Reads an image file into the model's input, preprocessed as for evaluation (central crop).

  Decoding is tf.io.decode_jpeg's, which also reads PNG and GIF files (image_processing: a huge
  JPEG is decoded at reduced scale, a huge PNG or GIF refused).
  """

  def __init__(self, model_config: configuration.ModelConfig):
    self._decode = tf.function(
        lambda encoded: image_processing.process_image(encoded, model_config, is_training=False),
        input_signature=[tf.TensorSpec([], tf.string)])

  def read(self, path: str) -> tf.Tensor:
    """float32 [image_height, image_width, 3] in [-1, 1]; ValueError naming the file if bad."""
    return self.decode(self.read_bytes(path), path)

  @staticmethod
  def read_bytes(path: str) -> bytes:
    try:
      with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()
    except (tf.errors.OpError, OSError) as e:
      raise ValueError(f"{path}: cannot read the file ({e})") from e

  def decode(self, encoded: bytes, path: str) -> tf.Tensor:
    """The model's input from a file's bytes; ValueError naming `path` if they do not decode."""
    try:
      return self._decode(tf.constant(encoded))
    except tf.errors.InvalidArgumentError as e:
      reason = image_processing.decode_error_message(e)
      raise ValueError(f"{path}: not a decodable image ({reason})") from e


# --- captioning ----------------------------------------------------------------------------


class Captioner:
  """Batched, compiled beam search over a model's images, returning the original's Captions
  (and, given the concept words of a model with a concept head, each image's top concepts)."""

  def __init__(self, model: show_and_tell_model.ShowAndTellModel,
               vocab: vocabulary.Vocabulary,
               inference_config: configuration.InferenceConfig,
               concept_vocab: Optional[concepts.ConceptVocabulary] = None,
               num_concepts_shown: int = 0):
    c = model.config
    self.vocab = vocab
    image_spec = tf.TensorSpec([None, c.image_height, c.image_width, 3], tf.float32)
    self.search = beam_search.BeamSearch(
        model, vocab.start_id, vocab.end_id, beam_size=inference_config.beam_size,
        max_caption_length=inference_config.max_caption_length,
        length_normalization_factor=inference_config.length_normalization_factor,
        input_signature=[image_spec])
    self.concept_words = concept_vocab.words if concept_vocab and num_concepts_shown else []
    self._concept_search = None
    if self.concept_words:
      self._concept_search = tf.function(
          top_concepts.ConceptSearch(model, vocab, inference_config, len(self.concept_words),
                                     num_concepts_shown), input_signature=[image_spec])

  def caption_images(self, images: tf.Tensor) -> List[List[Caption]]:
    """images [B, H, W, 3] in [-1, 1] -> per image, up to beam_size Captions, best first."""
    return captions_from_result(self.search(images))

  def describe_images(self, images: tf.Tensor) -> Tuple[List[List[Caption]],
                                                        List[List[top_concepts.Concept]]]:
    """As caption_images, and per image its top concepts, best first (none if not shown)."""
    if self._concept_search is None:
      return self.caption_images(images), [[] for _ in range(images.shape[0])]
    result, probabilities, ids = self._concept_search(images)
    shown = [[top_concepts.Concept(self.concept_words[i], float(p))
              for i, p in zip(row_ids, row_probs)]
             for row_ids, row_probs in zip(ids.numpy(), probabilities.numpy())]
    return captions_from_result(result), shown


def captions_from_result(result: beam_search.BeamSearchResult) -> List[List[Caption]]:
  """Splits a BeamSearchResult into per-image lists of Captions (best first)."""
  ids, lengths = result.word_ids.numpy(), result.lengths.numpy()
  log_probs, scores, valid = result.log_probs.numpy(), result.scores.numpy(), result.valid.numpy()
  return [[Caption(ids[i, j, :lengths[i, j]].tolist(), float(log_probs[i, j]),
                   float(scores[i, j]))
           for j in range(ids.shape[1]) if valid[i, j]]
          for i in range(ids.shape[0])]


# --- output --------------------------------------------------------------------------------


def caption_words(sentence: Sequence[int], vocab: vocabulary.Vocabulary) -> List[str]:
  """The caption's words without the leading <S> and, if complete, the final </S>."""
  ids = list(sentence[1:])
  if ids and ids[-1] == vocab.end_id:
    ids = ids[:-1]
  return [vocab.id_to_word(i) for i in ids]


def format_concepts(top: Sequence[top_concepts.Concept]) -> str:
  """"red (0.98), circle (0.91)": the concepts in order, probabilities to 2 decimals."""
  return ", ".join(f"{c.word} ({c.probability:.2f})" for c in top)


def format_text(path: str, captions: Sequence[Caption], vocab: vocabulary.Vocabulary,
                image_concepts: Sequence[top_concepts.Concept] = ()) -> str:
  """The original run_inference's output for one image (newline-terminated lines), then a
  "  concepts: red (0.98), ..." line if there are concepts."""
  lines = ["Captions for image %s:" % os.path.basename(path)]
  for i, caption in enumerate(captions):
    sentence = " ".join(caption_words(caption.sentence, vocab))
    lines.append("  %d) %s (p=%f)" % (i, sentence, math.exp(caption.logprob)))
  if image_concepts:
    lines.append("  concepts: " + format_concepts(image_concepts))
  return "\n".join(lines) + "\n"


def format_json(path: str, captions: Sequence[Caption], vocab: vocabulary.Vocabulary,
                image_concepts: Sequence[top_concepts.Concept] = ()) -> str:
  """One JSON object per line: {"file", "captions", "log_probs"} (captions best first), and
  "concepts": [{"word", "probability"}, ...] (best first) if there are concepts."""
  line = {
      "file": path,
      "captions": [" ".join(caption_words(c.sentence, vocab)) for c in captions],
      "log_probs": [c.logprob for c in captions],
  }
  if image_concepts:
    line["concepts"] = [{"word": c.word, "probability": c.probability} for c in image_concepts]
  return json.dumps(line) + "\n"


def caption_files(checkpoint_path: str, vocab_file: str, input_files: str,
                  inference_config: configuration.InferenceConfig,
                  output_format: str = "text", out: Optional[TextIO] = None,
                  err: Optional[TextIO] = None, concepts_file: str = "",
                  num_concepts_shown: int = 5) -> int:
  """Captions every file matching `input_files`; returns the exit code (1 if a file failed).

  Files that cannot be read or decoded are reported on `err` and skipped; the others are
  captioned in order, `inference_config.batch_size` images per beam search. `output_format`
  "text" and "json" write each image's lines as they come; "html" writes one page at the end
  (caption_page: every image inline with its captions, and the files that failed, with why).
  A model with a concept head also shows each image's `num_concepts_shown` most probable
  concepts in every format, their words from `concepts_file` ("": concepts.txt beside
  `vocab_file`; see top_concepts.load_concepts); a model without one, or num_concepts_shown 0,
  shows none.
  """
  out = out or sys.stdout
  err = err or sys.stderr
  if output_format not in OUTPUT_FORMATS:
    raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
  if inference_config.batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {inference_config.batch_size}")
  if num_concepts_shown < 0:
    raise ValueError(f"num_concepts_shown must be >= 0, got {num_concepts_shown}")
  beam_search.check_arguments(inference_config.beam_size, inference_config.max_caption_length,
                              inference_config.length_normalization_factor)
  # Everything that can be checked cheaply is, before the model is built.
  filenames = file_io.expand_patterns(input_files, "--input_files")
  checkpoint = resolve_checkpoint(checkpoint_path)
  config = configuration.load_config(os.path.dirname(checkpoint))
  vocab = load_vocabulary(vocab_file, config.model, checkpoint)
  concept_vocab = None
  if num_concepts_shown:
    concept_vocab = top_concepts.load_concepts(
        concepts_file, vocab_file, config.model, checkpoint,
        alternative="--num_concepts_shown=0 to show no concepts")
  model = restore_model(config.model, checkpoint)
  captioner = Captioner(model, vocab, inference_config, concept_vocab, num_concepts_shown)
  reader = ImageReader(config.model)
  formatter = {"text": format_text, "json": format_json}.get(output_format)
  logging.info("Running caption generation on %d files matching %s", len(filenames),
               input_files)
  num_failed, entries = 0, []
  for start in range(0, len(filenames), inference_config.batch_size):
    batch = [caption_page.Entry(name, None, []) for name in
             filenames[start:start + inference_config.batch_size]]
    images, decoded = [], []
    for entry in batch:
      try:
        entry.image = reader.read_bytes(entry.path)
        images.append(reader.decode(entry.image, entry.path))
        decoded.append(entry)
      except ValueError as e:
        num_failed += 1
        entry.error = str(e)
        err.write(f"Error: {e}\n")
        err.flush()
    if images:
      for entry, captions, top in zip(decoded, *captioner.describe_images(tf.stack(images))):
        if formatter:
          out.write(formatter(entry.path, captions, vocab, top))
        else:
          entry.captions = [(" ".join(caption_words(c.sentence, vocab)), math.exp(c.logprob))
                            for c in captions]
          entry.concepts = top
      out.flush()
    if not formatter:
      entries.extend(batch)
  if not formatter:
    out.write(caption_page.render(entries, title="im2txt captions",
                                  intro=f"Model {checkpoint}, files {input_files}:"))
    out.flush()
  if num_failed:
    err.write(f"Error: {num_failed} of {len(filenames)} files could not be captioned\n")
  return 1 if num_failed else 0
