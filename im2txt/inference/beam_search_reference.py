"""The original im2txt CaptionGenerator.beam_search, one image at a time, in plain Python.

A direct port of tensorflow/models research/im2txt/inference_utils/caption_generator.py onto the
`initial_state`/`step` contract: one `step` call per word for one image, the candidates handled
in a Python loop. It is the oracle of the batched search's tests and the baseline of
bench/bench_beam_search.py. Differences from the original, all deliberate:
  * `step` returns log-probabilities, so "p < 1e-12" is "log p < log(1e-12)".
  * Log-probabilities and scores are float32 sums, as in the batched search, so both rank
    candidates identically; ties are broken as `beam_search` documents (the original's heap left
    them to chance).
"""

from typing import Any, List, NamedTuple

import numpy as np
import tensorflow as tf

from im2txt.inference import beam_search


class Caption(NamedTuple):
  """A complete or partial caption."""

  # Word ids, <S> first.
  sentence: List[int]
  # Sum of the words' log-probabilities (float32).
  logprob: float
  # Ranking score: logprob, or logprob / len(sentence)**factor for a complete caption.
  score: float


class _Beam(NamedTuple):
  caption: Caption
  # The model state after the caption's last word but one (a nest of [units] numpy rows).
  state: Any


def _top(beams: List[_Beam], n: int) -> List[_Beam]:
  """The n best by score, best first; equal scores keep their order (the original's TopN)."""
  return sorted(beams, key=lambda b: -b.caption.score)[:n]


def beam_search_reference(model, image, start_id: int, end_id: int, beam_size: int = 3,
                          max_caption_length: int = 20,
                          length_normalization_factor: float = 0.0) -> List[Caption]:
  """Captions one image (no batch dimension); returns Captions sorted by descending score."""
  beam_search.check_arguments(beam_size, max_caption_length, length_normalization_factor)
  normalizers = beam_search.length_normalizers(max_caption_length, length_normalization_factor)
  min_log_prob = np.float32(beam_search.MIN_WORD_LOG_PROB)
  initial_state = model.initial_state(tf.expand_dims(image, 0))
  initial_state = tf.nest.map_structure(lambda s: s.numpy()[0], initial_state)
  partial = [_Beam(Caption([start_id], np.float32(0.0), np.float32(0.0)), initial_state)]
  complete = []
  for _ in range(max_caption_length - 1):
    words = tf.constant([b.caption.sentence[-1] for b in partial], tf.int32)
    states = tf.nest.map_structure(lambda *rows: tf.constant(np.stack(rows)),
                                   *[b.state for b in partial])
    log_probs, new_states = model.step(words, states)
    log_probs = log_probs.numpy()
    new_states = tf.nest.map_structure(lambda s: s.numpy(), new_states)
    new_partial, new_complete = [], []
    for i, beam in enumerate(partial):
      state = tf.nest.map_structure(lambda s, i=i: s[i], new_states)
      # The beam_size most probable words, most probable first (lower id first on ties).
      for w in np.argsort(-log_probs[i], kind="stable")[:beam_size]:
        word_log_prob = log_probs[i, w]
        if word_log_prob < min_log_prob:
          continue  # Avoid log(0).
        sentence = beam.caption.sentence + [int(w)]
        logprob = np.float32(beam.caption.logprob + word_log_prob)
        if w == end_id:
          score = np.float32(logprob / normalizers[len(sentence) - 1])
          new_complete.append(_Beam(Caption(sentence, logprob, score), state))
        else:
          new_partial.append(_Beam(Caption(sentence, logprob, logprob), state))
    partial = _top(new_partial, beam_size)
    complete = _top(complete + new_complete, beam_size)
    if not partial:
      break  # We have run out of partial candidates; happens when beam_size = 1.
  # Never a mixture of complete and partial captions: a partial one could outscore them all.
  return [b.caption for b in (complete or partial)]


class CompiledModel:
  """A model's initial_state and step, each compiled with tf.function.

  The original ran its two inference calls as session.run()s of a compiled graph; this is the
  same for the reference loop. It also makes the reference numerically comparable with the
  (compiled) batched search: TensorFlow's graph optimisations may round differently from eager.
  """

  def __init__(self, model):
    self.initial_state = tf.function(model.initial_state, reduce_retracing=True)
    self.step = tf.function(model.step, reduce_retracing=True)
