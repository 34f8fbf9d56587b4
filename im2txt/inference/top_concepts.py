"""What the encoder sees: an image's most probable concepts, for a model with a concept head.

run_inference shows them under each image's captions and the SavedModel returns them beside the
captions. The words are concepts.txt's (im2txt/concepts.py), read by `load_concepts`; the
probabilities come from the same compiled pass as the captions, Inception run once for both:

    concept_vocab = load_concepts("", "DATA/word_counts.txt", config.model, checkpoint)
    search = ConceptSearch(model, vocab, inference_config, len(concept_vocab), num_shown=5)
    result, probabilities, ids = tf.function(search)(images)
    # ids[0] = [3, 0, 7, 1, 2]: concept_vocab.words[3] is image 0's most probable concept
"""

import os
from typing import NamedTuple, Optional

from absl import logging
import tensorflow as tf

from im2txt import concepts
from im2txt import configuration
from im2txt import vocabulary
from im2txt.inference import beam_search
from im2txt.model import show_and_tell_model


class Concept(NamedTuple):
  """One of an image's top concepts (a word of concepts.txt)."""
  word: str
  # The concept head's sigmoid output for the image.
  probability: float


def default_concepts_file(vocab_file: str) -> str:
  """concepts.txt beside word_counts.txt: the Beam job writes both to its output folder."""
  return os.path.join(os.path.dirname(vocab_file), concepts.CONCEPTS_FILENAME)


def load_concepts(concepts_file: str, vocab_file: str, model_config: configuration.ModelConfig,
                  checkpoint: str, alternative: str = "") -> Optional[concepts.ConceptVocabulary]:
  """The words of the model's concept head (None for a model without one).

  `concepts_file` "" means concepts.txt beside `vocab_file`. A model with a head needs the
  file, since its outputs mean nothing without their words: FileNotFoundError naming the path
  tried, the --concepts_file flag and `alternative` (another way out, e.g. a flag to show no
  concepts). Like vocab_size, num_concepts may exceed the file's lines (those outputs are never
  shown); a file with more lines than the head has outputs is a ValueError.
  """
  if not model_config.num_concepts:
    if concepts_file:
      logging.warning("The model in %s has no concept head: %s is not used", checkpoint,
                      concepts_file)
    return None
  path = concepts_file or default_concepts_file(vocab_file)
  if not tf.io.gfile.exists(path):
    where = "" if concepts_file else " (the default: beside --vocab_file)"
    raise FileNotFoundError(
        f"The model in {checkpoint} has a concept head (model.num_concepts "
        f"{model_config.num_concepts}) but no concepts file was found at {path}{where}: give "
        "the concepts.txt it was trained with by --concepts_file"
        + (f", or {alternative}" if alternative else ""))
  concept_vocab = concepts.ConceptVocabulary.from_file(path)
  if len(concept_vocab) > model_config.num_concepts:
    raise ValueError(
        f"Concepts file {path} has {len(concept_vocab)} concepts but the model in {checkpoint} "
        f"predicts {model_config.num_concepts} (num_concepts in its config.json): use the "
        "concepts.txt the model was trained with")
  return concept_vocab


class _FeaturesModel:
  """The model's two-method inference contract on Inception's pooled features instead of images
  (the beam search passes its input to `initial_state` untouched)."""

  def __init__(self, model: show_and_tell_model.ShowAndTellModel):
    self._model = model

  def initial_state(self, features):
    return self._model.initial_state_from_features(features)

  def step(self, word_ids, state):
    return self._model.step(word_ids, state)


class ConceptSearch:
  """The beam search and the top concepts of a batch of images, Inception run once for both.

  Uncompiled, for use inside a tf.function: images [B, H, W, 3] -> (BeamSearchResult,
  probabilities [B, k] float32 best first, concept ids [B, k] int32), k = min(num_shown,
  num_real). Only the head's first `num_real` outputs (the lines of concepts.txt) are ranked;
  equal probabilities go to the lower concept id (tf.math.top_k's order).
  """

  def __init__(self, model: show_and_tell_model.ShowAndTellModel,
               vocab: vocabulary.Vocabulary, inference_config: configuration.InferenceConfig,
               num_real: int, num_shown: int):
    self.model = model
    self.num_real = num_real
    self.k = min(num_shown, num_real)
    self.search = beam_search.BeamSearch(
        _FeaturesModel(model), vocab.start_id, vocab.end_id,
        beam_size=inference_config.beam_size,
        max_caption_length=inference_config.max_caption_length,
        length_normalization_factor=inference_config.length_normalization_factor)

  def __call__(self, images: tf.Tensor):
    features = self.model.image_features(images, training=False)
    probabilities = self.model.concept_probabilities_from_features(features)[:, :self.num_real]
    top_probabilities, top_ids = tf.math.top_k(probabilities, k=self.k)
    return self.search.search(features), top_probabilities, top_ids
