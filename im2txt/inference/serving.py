"""A SavedModel that captions JPEG bytes: the library behind //im2txt:export_saved_model.

Its serving signature needs nothing of this project to run, only TensorFlow:

    m = tf.saved_model.load(export_dir)
    out = m.signatures["serving_default"](jpegs=tf.constant([jpeg_bytes, ...]))
    out["captions"]   # string [B, beam_size], best first, without <S> and </S>
    out["log_probs"]  # float32 [B, beam_size]; "" and -inf where an image has fewer captions
    out["valid"]      # bool [B]: False for a string that is not a decodable image

A model with a concept head also returns what the encoder sees (without one, only the two above):
    out["concepts"]       # string [B, k]: the top-k concept words, best first
    out["concept_probs"]  # float32 [B, k]: their probabilities
with k = min(5, the number of concepts in concepts.txt).

The images go through the same evaluation preprocessing, beam search and concept ranking as
run_inference, so both give the same captions and concepts. A string that does not decode (a
corrupt or truncated upload, not an image) fails alone: its row is valid False, captions "",
log_probs -inf, concepts "" and concept_probs 0, and the batch's other images are captioned as
if it were not there (under TF Serving's request batching, one client's bad upload does not fail
the others' requests). run_inference names such a file and its reason instead.

TF Serving's REST API takes the JPEGs base64-encoded (see README, "Serving"):
    POST /v1/models/im2txt:predict
    {"inputs": {"jpegs": [{"b64": "/9j/4AAQ..."}, {"b64": "..."}]}}
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from im2txt import concepts
from im2txt import configuration
from im2txt import file_io
from im2txt import vocabulary
from im2txt.inference import beam_search
from im2txt.inference import captioning
from im2txt.inference import top_concepts
from im2txt.model import image_processing

# Concepts returned per image (fewer if concepts.txt has fewer), as run_inference shows by
# default (--num_concepts_shown).
NUM_CONCEPTS_SERVED = 5
# What the outputs hold for a string that is not a decodable image.
INVALID_IMAGE_OUTPUTS = {"captions": "", "log_probs": np.float32(-np.inf), "concepts": "",
                         "concept_probs": np.float32(0.0)}


def caption_strings(result: beam_search.BeamSearchResult, words: tf.Tensor,
                    end_id: int) -> tf.Tensor:
  """The captions' text [B, K]: ids 1..length-1, minus a final </S>, joined by spaces."""
  ids, lengths = result.word_ids, result.lengths[:, :, tf.newaxis]
  positions = tf.range(tf.shape(ids)[-1])
  keep = (positions >= 1) & (positions < lengths)
  keep &= ~((positions == lengths - 1) & tf.equal(ids, end_id))
  kept_words = tf.ragged.boolean_mask(tf.gather(words, ids), keep)  # [B, (K), (words)]
  joined = tf.strings.reduce_join(kept_words, axis=-1, separator=" ")  # [B, (K)], K each
  return tf.reshape(joined.flat_values, tf.shape(ids)[:2])


def decode_valid(jpegs: tf.Tensor, model_config: configuration.ModelConfig,
                 image_spec: tf.TensorSpec):
  """bool [B]: which strings decode; float32 [V, H, W, 3]: their model inputs, in order.

  Each string is decoded on its own in a tf.data pipeline that drops the ones whose decoding
  fails (ignore_errors), so an undecodable string costs its own row only.
  """
  count = tf.shape(jpegs)[0]
  decoded = tf.data.Dataset.from_tensor_slices((tf.range(count), jpegs)).map(
      lambda index, jpeg: (index, image_processing.process_image(jpeg, model_config,
                                                                 is_training=False)),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  decoded = decoded.ignore_errors().batch(tf.cast(tf.maximum(count, 1), tf.int64))
  # With no decodable string the batch is missing: this empty one stands in.
  none = tf.data.Dataset.from_tensors((tf.zeros([0], tf.int32),
                                       tf.zeros([0] + image_spec.shape.as_list(), tf.float32)))
  indices, images = decoded.concatenate(none).take(1).get_single_element()
  valid = tf.scatter_nd(indices[:, tf.newaxis], tf.ones_like(indices, tf.bool), [count])
  return valid, tf.ensure_shape(images, [None] + image_spec.shape.as_list())


def per_input(valid: tf.Tensor, rows: tf.Tensor, fill) -> tf.Tensor:
  """rows [V, ...] of the valid inputs -> [B, ...], `fill` in the rows of the invalid ones."""
  padded = tf.concat([rows, tf.fill(tf.concat([[1], tf.shape(rows)[1:]], 0),
                                    tf.constant(fill, rows.dtype))], axis=0)
  row = tf.cumsum(tf.cast(valid, tf.int32)) - 1
  return tf.gather(padded, tf.where(valid, row, tf.shape(rows)[0]))


class CaptionModule(tf.Module):
  """The model's variables, the id -> word tables and the `serve` function."""

  def __init__(self, model, vocab: vocabulary.Vocabulary,
               inference_config: configuration.InferenceConfig,
               concept_vocab: Optional[concepts.ConceptVocabulary] = None):
    super().__init__(name="im2txt")
    model_config = model.config
    if model.concept_head is not None and concept_vocab is None:
      raise ValueError("The model has a concept head: give its concept words (concepts.txt)")
    if model.concept_head is None and concept_vocab is not None:
      raise ValueError("Concept words given for a model without a concept head")
    # Every id the model can emit has a word: the ids past the vocabulary file are <UNK>.
    words = vocab.words + [vocabulary.UNK_WORD] * (model_config.vocab_size - len(vocab))
    self.words = tf.constant(words)
    # Tracked so that the SavedModel saves them (the Keras model itself is not exported).
    self.model_variables = list(model.variables)
    search = beam_search.BeamSearch(
        model, vocab.start_id, vocab.end_id, beam_size=inference_config.beam_size,
        max_caption_length=inference_config.max_caption_length,
        length_normalization_factor=inference_config.length_normalization_factor)
    image_spec = tf.TensorSpec([model_config.image_height, model_config.image_width, 3],
                               tf.float32)
    end_id = vocab.end_id
    concept_search = None
    if concept_vocab is not None:
      self.concept_words = tf.constant(concept_vocab.words, tf.string)
      concept_search = top_concepts.ConceptSearch(model, vocab, inference_config,
                                                  len(concept_vocab), NUM_CONCEPTS_SERVED)

    # Columns of each output: a caption per beam, k concepts.
    widths = {"captions": inference_config.beam_size, "log_probs": inference_config.beam_size}
    if concept_search is not None:
      widths.update(concepts=concept_search.k, concept_probs=concept_search.k)

    def describe(images):
      if concept_search is None:
        result = search.search(images)
      else:
        result, probabilities, ids = concept_search(images)
      outputs = {
          "captions": tf.where(result.valid, caption_strings(result, self.words, end_id), ""),
          "log_probs": tf.where(result.valid, result.log_probs, -np.inf),
      }
      if concept_search is not None:
        outputs["concepts"] = tf.gather(self.concept_words, ids)
        outputs["concept_probs"] = probabilities
      return outputs

    def nothing_to_describe():  # (Inception's convolutions fail on an empty batch.)
      return {name: tf.fill([0, width], tf.constant(INVALID_IMAGE_OUTPUTS[name]))
              for name, width in widths.items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="jpegs")])
    def serve(jpegs):
      valid, images = decode_valid(jpegs, model_config, image_spec)
      outputs = tf.cond(tf.reduce_any(valid), lambda: describe(images), nothing_to_describe)
      # Back to one row per input string, the fill values in the rows of the invalid ones.
      outputs = {name: per_input(valid, rows, INVALID_IMAGE_OUTPUTS[name])
                 for name, rows in outputs.items()}
      outputs["valid"] = valid
      return outputs

    self.serve = serve


def export_saved_model(checkpoint_path: str, vocab_file: str, export_dir: str,
                       inference_config: configuration.InferenceConfig,
                       concepts_file: str = "") -> str:
  """Writes the SavedModel of a checkpoint to export_dir (which must not exist); returns it.

  A model with a concept head needs its concepts.txt: `concepts_file`, or by default the one
  beside `vocab_file` (see top_concepts.load_concepts).
  """
  beam_search.check_arguments(inference_config.beam_size, inference_config.max_caption_length,
                              inference_config.length_normalization_factor)
  if tf.io.gfile.exists(export_dir):
    raise FileExistsError(f"--export_dir {export_dir} already exists; choose a new directory")
  model, config, checkpoint = captioning.load_model(checkpoint_path)
  vocab = captioning.load_vocabulary(vocab_file, config.model, checkpoint)
  concept_vocab = top_concepts.load_concepts(concepts_file, vocab_file, config.model, checkpoint)
  module = CaptionModule(model, vocab, inference_config, concept_vocab)
  # Written beside the target and renamed, so a reader never sees half a SavedModel.
  with file_io.atomic_path(export_dir) as tmp_dir:
    tf.saved_model.save(module, tmp_dir,
                        signatures={"serving_default": module.serve.get_concrete_function()})
  return export_dir
