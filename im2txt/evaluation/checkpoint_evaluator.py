"""The concurrent evaluator: perplexity and COCO caption metrics of each new checkpoint.

    evaluator = CheckpointEvaluator(config, "DATA/val-?????-of-00004", vocab)
    result = evaluator.evaluate(CheckpointRef("MODEL/train/ckpt-5000", 5000))
    result.perplexity, result.caption_metrics["CIDEr"], ...

`run_evaluation_loop` is what //im2txt:evaluate runs beside the trainer: it polls the trainer's
`checkpoint` index file, evaluates every new checkpoint once, oldest first, and writes the
results to `eval_dir` for TensorBoard (scalars `Perplexity`, `Loss`, `BLEU-1`..`BLEU-4`,
`METEOR`, `ROUGE-L`, `CIDEr` and a text table of captions, at the checkpoint's global step).
The first `num_text_summary_images` captioned images are also image summaries, one card each
(`captions/image_<id>`, the table's image ids) at the same step, the caption in their
description.

Perplexity = exp(sum of the masked token losses / number of real tokens) over the first
`num_eval_examples` (image, caption) pairs of the val split, in eval mode (no dropout, central
crop); `Loss` is the mean token loss (its log). For the caption metrics, the first
`num_caption_images` distinct images of the val split are captioned by beam search and scored
against all their reference captions (caption_metrics).

With a concept head (model.num_concepts) and val records that carry image/concept_ids, the same
pass also scores the head on the distinct images of those examples (concept_metrics): scalars
`concepts/loss`, `concepts/precision_at_5`, `concepts/recall_at_5` and `concepts/mAP`.

One model is built and its functions compiled once; every checkpoint is restored into it, so
memory does not grow from one evaluation to the next.
"""

import dataclasses
import math
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from im2txt import checkpoint_files
from im2txt import configuration
from im2txt import file_io
from im2txt import sequence_example
from im2txt import vocabulary
from im2txt.data import feature_cache
from im2txt.data import inputs
from im2txt.evaluation import caption_metrics
from im2txt.evaluation import concept_metrics
from im2txt.inference import beam_search
from im2txt.model import concept_head
from im2txt.model import image_processing
from im2txt.model import show_and_tell_model

PERPLEXITY_TAG = "Perplexity"
LOSS_TAG = "Loss"
CAPTIONS_TAG = "Captions"
# One image card per sample image: captions/image_11, ...
SAMPLE_IMAGE_TAG = "captions/image_{image_id}"


class EvaluationError(Exception):
  """An evaluation that cannot be done; the message says why."""


class CheckpointDeletedError(EvaluationError):
  """The checkpoint was deleted (by the trainer's rotation) before it could be restored."""


class CheckpointMismatchError(EvaluationError):
  """The checkpoint's variables do not match the model built from the configuration."""


class EvaluationStopped(Exception):
  """Raised inside an evaluation when a stop was requested; nothing is written for it."""


class CheckpointRef(NamedTuple):
  """A checkpoint prefix (e.g. train/ckpt-5000) and its global step."""
  path: str
  step: int


@dataclasses.dataclass
class EvalResult:
  """What one evaluation found; the summaries are written from it."""
  checkpoint: str
  step: int
  perplexity: float
  loss: float
  num_examples: int
  num_tokens: int
  # {metric name: value}; empty when the caption metrics are off.
  caption_metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
  # (image id, generated caption, reference captions) of the first few images.
  caption_examples: List[Tuple[int, str, List[str]]] = dataclasses.field(default_factory=list)
  # {image id: uint8 [H, W, 3]}: what the model saw of those images (see sample_image).
  sample_images: Dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0
  # Seconds spent on each part: {"perplexity": 12.3, "captions": ..., "metrics": ...}.
  timings: Dict[str, float] = dataclasses.field(default_factory=dict)
  # {concepts/... tag: value} (concept_metrics); empty without a concept head.
  concept_metrics: Dict[str, float] = dataclasses.field(default_factory=dict)

  def scalars(self) -> Dict[str, float]:
    return {PERPLEXITY_TAG: self.perplexity, LOSS_TAG: self.loss, **self.concept_metrics,
            **self.caption_metrics}

  def summary_line(self) -> str:
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in self.scalars().items())
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
    return (f"Evaluated {self.checkpoint} (step {self.step}) in {self.seconds:.1f} s ({parts}): "
            f"{metrics} ({self.num_examples} examples, {self.num_tokens} tokens)")


class CaptionReferences(NamedTuple):
  """The val images captioned for the caption metrics, with all their references."""
  # The first distinct image ids of the val split, in file order.
  image_ids: List[int]
  # Their JPEG bytes, in the same order.
  image_data: List[bytes]
  # {image id: [reference caption, ...]}: tokens without <S> and </S>, joined by spaces.
  references: Dict[int, List[str]]


def load_caption_references(file_pattern: str, num_images: int,
                            vocab: Optional[vocabulary.Vocabulary] = None) -> CaptionReferences:
  """Reads the val split once: the first `num_images` distinct images and all their captions.

  References are the records' token strings. Records holding only what the original's reader
  reads have none: their caption ids are mapped back to words through `vocab` (so a word not in
  the vocabulary reads <UNK> there), and their images, without ids, are told apart by content.
  """
  files = file_io.expand_patterns(file_pattern, "--input_file_pattern")
  records = tf.data.TFRecordDataset(files).map(
      sequence_example.parse_sequence_example, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  image_ids, image_data, references, undecodable = [], [], {}, set()
  # Records without image/image_id (-1) are grouped by their image bytes, under ids -1, -2, ...
  unnamed_ids: Dict[bytes, int] = {}
  for record in inputs.naming_corrupt_shards(records, file_pattern):
    image_id = int(record["image_id"])
    if image_id == -1:
      image_id = unnamed_ids.setdefault(record["image_data"].numpy(), -1 - len(unnamed_ids))
    if image_id not in references:
      if len(image_ids) >= num_images or image_id in undecodable:
        continue
      try:
        image_processing.check_decodes(record["image_data"])
      except tf.errors.InvalidArgumentError as e:
        logging.warning("Not captioning val image %d: it does not decode as JPEG (%s)", image_id,
                        image_processing.decode_error_message(e))
        undecodable.add(image_id)
        continue
      image_ids.append(image_id)
      image_data.append(record["image_data"].numpy())
      references[image_id] = []
    tokens = [t.decode("utf-8") for t in record["caption"].numpy()]
    if not tokens:
      if vocab is None:
        raise ValueError(f"{file_pattern}: image {image_id} has a caption without token "
                         "strings (image/caption); a vocabulary is needed to read its ids")
      tokens = [vocab.id_to_word(i) for i in record["caption_ids"].numpy().tolist()]
    if tokens and tokens[0] == vocabulary.START_WORD:
      tokens = tokens[1:]
    if tokens and tokens[-1] == vocabulary.END_WORD:
      tokens = tokens[:-1]
    references[image_id].append(" ".join(tokens))
  return CaptionReferences(image_ids, image_data, references)


def sample_image(image_data: bytes, config: configuration.ModelConfig) -> np.ndarray:
  """A val JPEG as the model sees it when captioning (resize, central crop), uint8 [H, W, 3].

  The picture shown beside a caption is the model's input rather than the original: a shape
  that the central crop cut off then explains a caption that misses it, and the image is no
  bigger than image_height x image_width (small in memory and in the event file).
  """
  image = image_processing.process_image(image_data, config, is_training=False)  # [-1, 1]
  return tf.cast(tf.round((tf.clip_by_value(image, -1.0, 1.0) + 1.0) * 127.5), tf.uint8).numpy()


def records_carry_concept_ids(file_pattern: str) -> bool:
  """Whether the records hold image/concept_ids (the Beam job's), judged by the first one. The
  original builder's have none: the pipeline would read all their concept targets as zero."""
  files = file_io.expand_patterns(file_pattern, "--input_file_pattern")
  record = feature_cache.first_record_in(files)
  return record is not None and sequence_example.has_concept_ids(record)


def _stop_requested(stop_event) -> bool:
  return stop_event is not None and stop_event.is_set()


class CheckpointEvaluator:
  """One model, its compiled eval functions and the val data; evaluates checkpoints in turn."""

  def __init__(self, config: configuration.Config, input_file_pattern: str,
               vocab: Optional[vocabulary.Vocabulary] = None):
    """vocab: needed for the caption metrics, which are off without it or with
    config.eval.num_caption_images == 0."""
    self.config = config
    self._input_file_pattern = input_file_pattern
    c = config.model
    if vocab is not None and len(vocab) > c.vocab_size:
      raise EvaluationError(f"Vocabulary {vocab.source} has {len(vocab)} words (with <UNK>) but "
                            f"the model predicts {c.vocab_size} (vocab_size in config.json)")
    self.model = show_and_tell_model.ShowAndTellModel(c)
    self.model.build_all()
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self._checkpoint = tf.train.Checkpoint(step=self.step, model=self.model)
    # A val record whose image does not decode is skipped (with a warning from tf.data)
    # rather than stopping a long-running evaluator.
    self._dataset = inputs.make_dataset(input_file_pattern, config, is_training=False,
                                        batch_size=config.eval.batch_size, skip_bad_images=True)
    # The concept metrics need the records' concept ids; without them every target reads zero.
    self.evaluates_concepts = bool(c.num_concepts) and records_carry_concept_ids(
        input_file_pattern)
    if c.num_concepts and not self.evaluates_concepts:
      logging.warning("The val records of %s carry no %s (written by the original builder?): "
                      "no concept metrics", input_file_pattern,
                      sequence_example.CONCEPT_IDS_FEATURE)
    image_spec = tf.TensorSpec([None, c.image_height, c.image_width, 3], tf.float32)
    ids_spec = tf.TensorSpec([None, None], tf.int64)
    specs = [image_spec, ids_spec, ids_spec, tf.TensorSpec([None, None], tf.int32)]
    if self.evaluates_concepts:
      specs.append(tf.TensorSpec([None, c.num_concepts], tf.float32))
    self.loss_sums = tf.function(self._loss_sums, input_signature=specs)
    self.vocab = vocab
    self.caption_images = None
    self.sample_images: Dict[int, np.ndarray] = {}
    if vocab is not None and config.eval.num_caption_images > 0:
      self.caption_images = load_caption_references(input_file_pattern,
                                                    config.eval.num_caption_images, vocab)
      self._images = tf.data.Dataset.from_tensor_slices(self.caption_images.image_data).map(
          lambda data: image_processing.process_image(data, c, is_training=False),
          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
      ).batch(config.inference.batch_size).prefetch(1)
      # The few images shown in TensorBoard with their captions, decoded once.
      num_samples = config.eval.num_text_summary_images
      self.sample_images = {
          image_id: sample_image(data, c) for image_id, data in
          zip(self.caption_images.image_ids[:num_samples],
              self.caption_images.image_data[:num_samples])}
      # The dataset holds the JPEG bytes now; no second copy.
      self.caption_images = self.caption_images._replace(image_data=[])
      inference = config.inference
      self.search = beam_search.BeamSearch(
          self.model, vocab.start_id, vocab.end_id, beam_size=inference.beam_size,
          max_caption_length=inference.max_caption_length,
          length_normalization_factor=inference.length_normalization_factor,
          input_signature=[image_spec])

  def _loss_sums(self, images, input_seqs, target_seqs, input_mask, concept_targets=None):
    """(sum of the token losses, number of real tokens) of one batch, in float64; given
    concept_targets, also each example's concept loss [B] and probabilities [B, num_concepts],
    from the same Inception pass."""
    model_inputs = {"images": images, "input_seqs": input_seqs}
    if concept_targets is None:
      logits = self.model(model_inputs, training=False)
    else:
      logits, concept_logits = self.model.caption_and_concept_logits(model_inputs,
                                                                      training=False)
    losses = self.model.token_losses(logits, target_seqs, input_mask)
    sums = (tf.reduce_sum(tf.cast(losses, tf.float64)),
            tf.reduce_sum(tf.cast(input_mask, tf.float64)))
    if concept_targets is None:
      return sums
    return sums + (concept_head.concept_losses(concept_logits, concept_targets),
                   tf.sigmoid(tf.cast(concept_logits, tf.float32)))

  def restore(self, checkpoint: CheckpointRef) -> int:
    """Loads the checkpoint's weights into the model; returns the global step it holds."""
    try:
      status = self._checkpoint.restore(checkpoint.path).expect_partial()
      status.assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError, ValueError, AssertionError) as e:
      if not _checkpoint_files_exist(checkpoint.path):
        raise CheckpointDeletedError(f"{checkpoint.path} was deleted before it could be "
                                     "evaluated") from e
      if isinstance(e, checkpoint_files.READ_ERRORS):
        raise EvaluationError(str(checkpoint_files.corrupt_checkpoint_error(
            checkpoint.path, e))) from e
      m = self.config.model
      raise CheckpointMismatchError(
          f"{checkpoint.path}: its variables do not match the model of the configuration "
          f"(vocab_size {m.vocab_size}, embedding_size {m.embedding_size}, num_lstm_units "
          f"{m.num_lstm_units}, images {m.image_height}x{m.image_width}): "
          f"{_first_line(e)}") from e
    return int(self.step.numpy())

  def perplexity(self, stop_event=None) -> Tuple[float, float, int, int]:
    """(perplexity, mean token loss, examples, tokens) over num_eval_examples val examples."""
    return self.perplexity_and_concepts(stop_event)[0]

  def perplexity_and_concepts(self, stop_event=None
                              ) -> Tuple[Tuple[float, float, int, int], Dict[str, float]]:
    """(perplexity()'s tuple, the concept metrics of the same examples' distinct images); the
    metrics are {} unless evaluates_concepts."""
    limit = self.config.eval.num_eval_examples
    loss_sum, num_tokens, num_examples = 0.0, 0.0, 0
    concepts = concept_metrics.ConceptRows() if self.evaluates_concepts else None
    names = ["images", "input_seqs", "target_seqs", "input_mask"]
    if concepts is not None:
      names.append("concept_targets")
    for batch in inputs.naming_corrupt_shards(self._dataset, self._input_file_pattern):
      if _stop_requested(stop_event):
        raise EvaluationStopped()
      keep = min(limit - num_examples, int(batch["input_seqs"].shape[0]))
      batch_loss, batch_tokens, *concept_outputs = self.loss_sums(
          *[batch[name][:keep] for name in names])
      if concepts is not None:
        concepts.add(batch["image_ids"][:keep].numpy(), batch["concept_targets"][:keep].numpy(),
                     *[output.numpy() for output in concept_outputs])
      loss_sum += float(batch_loss)
      num_tokens += float(batch_tokens)
      num_examples += keep
      if num_examples >= limit:
        break
    if num_tokens == 0:
      raise EvaluationError("The val split has no caption to evaluate")
    if num_examples < limit:
      logging.warning("The val split has only %d examples (num_eval_examples is %d)",
                      num_examples, limit)
    loss = loss_sum / num_tokens
    return ((math.exp(loss), loss, num_examples, int(num_tokens)),
            concepts.metrics() if concepts is not None else {})

  def generate_captions(self, stop_event=None) -> Dict[int, str]:
    """{image id: best beam-search caption} for the caption images, with the current weights."""
    captions = {}
    ids = iter(self.caption_images.image_ids)
    for images in self._images:
      if _stop_requested(stop_event):
        raise EvaluationStopped()
      result = self.search(images)
      word_ids, lengths = result.word_ids.numpy(), result.lengths.numpy()
      for i in range(word_ids.shape[0]):
        captions[next(ids)] = self.vocab.sentence(word_ids[i, 0, :lengths[i, 0]].tolist())
    return captions

  def _start_scorer(self) -> Optional[caption_metrics.CaptionScorer]:
    if self.caption_images is None:
      return None
    try:
      return caption_metrics.CaptionScorer()
    except (RuntimeError, OSError) as e:  # e.g. no Java runtime any more
      logging.error("No caption metrics this time: cannot start the scorer: %s", e)
      return None

  def evaluate(self, checkpoint: CheckpointRef, stop_event=None) -> EvalResult:
    """Restores and evaluates one checkpoint (CheckpointDeletedError if it vanished).

    A failure of the caption scorer (Java) is logged and leaves the caption metrics out.
    """
    start = time.time()
    step = self.restore(checkpoint)
    if step != checkpoint.step:
      logging.warning("%s holds global step %d (its name says %d); using %d", checkpoint.path,
                      step, checkpoint.step, step)
    # Started first: METEOR's Java process loads its tables while the model works.
    scorer = self._start_scorer()
    metrics, examples, images = {}, [], {}
    try:
      (perplexity, loss, num_examples, num_tokens), concepts = self.perplexity_and_concepts(
          stop_event)
      timings = {"perplexity": time.time() - start}
      if self.caption_images is not None:
        captions = self.generate_captions(stop_event)
        timings["captions"] = time.time() - start - sum(timings.values())
        references = self.caption_images.references
        examples = [(i, captions[i], references[i]) for i in
                    self.caption_images.image_ids[:self.config.eval.num_text_summary_images]]
        images = {i: self.sample_images[i] for i, _, _ in examples}
        if scorer is not None:
          try:
            metrics = scorer.score(references, captions)
          except RuntimeError as e:
            logging.error("No caption metrics for %s: %s", checkpoint.path, e)
          timings["metrics"] = time.time() - start - sum(timings.values())
    finally:
      if scorer is not None:
        scorer.close()
    return EvalResult(checkpoint.path, step, perplexity, loss, num_examples, num_tokens,
                      metrics, examples, images, time.time() - start, timings, concepts)


# Shown under the captions in TensorBoard: what the evaluator's caption metrics are, and are not.
MONITORING_NOTE = (
    "*Monitoring figures*: BLEU, METEOR, ROUGE-L and CIDEr here score the beam-search captions "
    "of the first `eval.num_caption_images` val images against their stored (tokenized) "
    "captions, and CIDEr's document frequencies come from those images alone. They follow "
    "training; to compare with published results, score a whole split (e.g. the Karpathy test "
    "split) against the raw COCO captions with `python -m im2txt.score_captions`.")


def captions_markdown(examples: List[Tuple[int, str, List[str]]]) -> str:
  """A markdown table (TensorBoard's text tab) of generated and reference captions."""
  def cell(text):
    return text.replace("|", "\\|") or " "
  lines = ["| image id | generated caption | reference captions |", "|---|---|---|"]
  for image_id, generated, references in examples:
    lines.append(f"| {image_id} | {cell(generated)} | "
                 f"{'<br>'.join(cell(r) for r in references)} |")
  return "\n".join(lines)


def sample_description(step: int, generated: str, references: List[str]) -> str:
  """An image card's description (markdown): the caption at `step` and the references.

  TensorBoard shows the description of a tag's first event on its card, whatever the step
  chosen, so the step is named; every step's caption is in the text tab's table.
  """
  lines = [f"**Generated at step {step}:** {generated or '(empty)'}", "", "**References:**", ""]
  return "\n".join(lines + [f"- {r}" for r in references] +
                   ["", f"Every step's caption: text tab, `{CAPTIONS_TAG}`."])


def write_summaries(writer: tf.summary.SummaryWriter, result: EvalResult) -> None:
  """The scalars, the caption table and the sample images at the checkpoint's step, flushed."""
  with writer.as_default():
    for tag, value in result.scalars().items():
      tf.summary.scalar(tag, value, step=result.step)
    if result.caption_examples:
      tf.summary.text(CAPTIONS_TAG, captions_markdown(result.caption_examples) + "\n\n"
                      + MONITORING_NOTE, step=result.step)
    for image_id, generated, references in result.caption_examples:
      if image_id in result.sample_images:
        tf.summary.image(SAMPLE_IMAGE_TAG.format(image_id=image_id),
                         result.sample_images[image_id][np.newaxis], step=result.step,
                         description=sample_description(result.step, generated, references))
  writer.flush()


def _checkpoint_files_exist(path: str) -> bool:
  return (tf.io.gfile.exists(path + ".index") and
          bool(tf.io.gfile.glob(path + ".data-?????-of-?????")))


def _first_line(error: Exception) -> str:
  line = file_io.tf_message(error)
  return line if len(line) <= 400 else line[:400] + " ..."

