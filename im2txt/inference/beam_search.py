"""Batched beam search with the original im2txt CaptionGenerator's semantics.

The search knows only the two-method inference contract of the model:
    initial_state(images)      -> state (a nest of [B, ...] tensors) after the image step
    step(word_ids [B], state)  -> (log_probs [B, vocab] float32, new state)

Rules (the original's, for every image independently):
  * The search starts from the single partial caption [<S>] with log-probability 0.
  * At each step every partial caption proposes its `beam_size` most probable next words;
    words with p < 1e-12 are skipped. A proposal's log-probability is its parent's plus log p.
  * Proposals ending in </S> compete for a separate top-`beam_size` set of complete captions,
    scored logprob / len**length_normalization_factor (len counts <S> and </S>) when the factor
    is > 0, else logprob. The others compete (by logprob) for the next top-`beam_size` partials.
  * At most max_caption_length - 1 steps run (a caption has at most max_caption_length ids,
    <S> included); the search ends early when no partial caption is left.
  * The complete captions are returned, best first; if none completed, the partial ones are
    (never a mixture: a partial caption may outscore every complete one).
Ties (equal scores; they need exactly equal floats) are broken deterministically: a complete
caption already in the set beats a new one; otherwise the earlier proposal wins, proposals being
ordered by parent (best first) and then by word probability (lower word id first on equal
probabilities), i.e. the order of `tf.math.top_k`. `beam_search_reference` follows the same rules.

Unlike the original, which ran one image at a time with one session call per word, this runs a
whole batch at once: the [B * beam_size] partial captions go through `step` together inside one
`tf.while_loop`, and `BeamSearch` compiles everything (image encoder included) with tf.function.
"""

from typing import NamedTuple, Optional, Sequence

import numpy as np
import tensorflow as tf

# Next words less probable than this are never proposed (the original's guard against log(0)).
MIN_WORD_PROBABILITY = 1e-12
# The same threshold on the log-probabilities that `step` returns.
MIN_WORD_LOG_PROB = float(np.log(MIN_WORD_PROBABILITY))


class BeamSearchResult(NamedTuple):
  """Up to beam_size captions per image, best first; tensors with leading dims [B, beam_size]."""

  # [B, K, max_caption_length] int32: <S>, the words, then </S> for a complete caption; the ids
  # past `lengths` are 0.
  word_ids: tf.Tensor
  # [B, K] int32: number of ids of each caption, <S> (and </S> if complete) included.
  lengths: tf.Tensor
  # [B, K] float32: log-probability of each caption (sum of its words' log p).
  log_probs: tf.Tensor
  # [B, K] float32: the ranking score (log_probs, or log_probs / len**factor if complete).
  scores: tf.Tensor
  # [B, K] bool: False for the slots of an image that has fewer than K captions.
  valid: tf.Tensor


def check_arguments(beam_size: int, max_caption_length: int,
                    length_normalization_factor: float) -> None:
  if beam_size < 1:
    raise ValueError(f"beam_size must be >= 1, got {beam_size}")
  if max_caption_length < 1:
    raise ValueError(f"max_caption_length must be >= 1, got {max_caption_length}")
  if length_normalization_factor < 0:
    # The original applies the factor only when > 0; a negative one would be silently ignored.
    raise ValueError("length_normalization_factor must be >= 0, got "
                     f"{length_normalization_factor}")


def length_normalizers(max_caption_length: int, length_normalization_factor: float) -> np.ndarray:
  """normalizers[t] divides the log-probability of a complete caption of t + 1 ids (float32)."""
  if length_normalization_factor > 0:
    return np.array([(t + 1) ** length_normalization_factor for t in range(max_caption_length)],
                    np.float32)
  return np.ones([max_caption_length], np.float32)


def _gather(values: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """values [B, N, ...], indices [B, M] -> [B, M, ...]."""
  return tf.gather(values, indices, batch_dims=1)


def _with_word(word_ids: tf.Tensor, position: tf.Tensor, words: tf.Tensor) -> tf.Tensor:
  """word_ids [B, K, L] with `words` [B, K] written at `position`."""
  at_position = tf.equal(tf.range(tf.shape(word_ids)[-1]), position)
  return tf.where(at_position, words[:, :, tf.newaxis], word_ids)


def beam_search(model, images, start_id: int, end_id: int, beam_size: int = 3,
                max_caption_length: int = 20,
                length_normalization_factor: float = 0.0) -> BeamSearchResult:
  """Captions a batch of images; see the module docstring for the rules.

  Works eagerly or inside tf.function (use `BeamSearch` for a compiled, reusable search).

  Args:
    model: has initial_state(images) and step(word_ids, state) (see the module docstring).
    images: whatever model.initial_state takes, with a leading batch dimension B.
    start_id, end_id: ids of <S> and </S>.
    beam_size, max_caption_length, length_normalization_factor: as the original's.
  Returns:
    A BeamSearchResult.
  """
  check_arguments(beam_size, max_caption_length, length_normalization_factor)
  k, max_len = beam_size, max_caption_length
  state = model.initial_state(images)
  batch_size = tf.shape(tf.nest.flatten(state)[0])[0]
  # Every image gets K partial-caption slots; only slot 0 ([<S>]) is live at the start.
  state = tf.nest.map_structure(lambda s: tf.repeat(s, k, axis=0), state)
  partial_ids = tf.pad(tf.fill([batch_size, k, 1], tf.constant(start_id, tf.int32)),
                       [[0, 0], [0, 0], [0, max_len - 1]])
  partial_log_probs = tf.zeros([batch_size, k], tf.float32)
  partial_valid = tf.tile(tf.range(k)[tf.newaxis, :] < 1, [batch_size, 1])
  complete_ids = tf.zeros([batch_size, k, max_len], tf.int32)
  complete_lengths = tf.zeros([batch_size, k], tf.int32)
  complete_log_probs = tf.zeros([batch_size, k], tf.float32)
  complete_scores = tf.zeros([batch_size, k], tf.float32)
  complete_valid = tf.zeros([batch_size, k], tf.bool)
  normalizers = tf.constant(length_normalizers(max_len, length_normalization_factor))
  neg_inf = tf.constant(-np.inf, tf.float32)

  def step(*loop_vars):
    # Dynamic-batch reshapes lose the static batch size; the loop needs it unchanged.
    new_loop_vars = append_word(*loop_vars)
    return tf.nest.map_structure(lambda new, old: tf.ensure_shape(new, old.shape),
                                 new_loop_vars, loop_vars)

  def append_word(t, state, partial_ids, partial_log_probs, partial_valid, complete_ids,
                  complete_lengths, complete_log_probs, complete_scores, complete_valid):
    """Appends word number t (position t, after <S> at 0) to every live partial caption."""
    log_probs, new_state = model.step(tf.reshape(partial_ids[:, :, t - 1], [-1]), state)
    # Each partial caption proposes its top words ([B, K * words_per_caption] proposals,
    # ordered by parent slot, then by probability): the original's argsort()[-beam_size:].
    words_per_caption = min(k, log_probs.shape[-1] or k)
    word_log_probs, words = tf.math.top_k(log_probs, k=words_per_caption)
    num_proposals = k * words_per_caption
    word_log_probs = tf.reshape(word_log_probs, [batch_size, num_proposals])
    words = tf.reshape(words, [batch_size, num_proposals])
    parents = tf.repeat(tf.range(k), words_per_caption)[tf.newaxis, :]
    parents = tf.broadcast_to(parents, [batch_size, num_proposals])
    log_probs = _gather(partial_log_probs, parents) + word_log_probs
    proposed = _gather(partial_valid, parents) & (word_log_probs >= MIN_WORD_LOG_PROB)
    ends = tf.equal(words, end_id)

    # Complete captions: those already kept first (they win ties), then the new ones.
    new_complete = proposed & ends
    all_scores = tf.concat([tf.where(complete_valid, complete_scores, neg_inf),
                            tf.where(new_complete, log_probs / normalizers[t], neg_inf)], 1)
    _, best = tf.math.top_k(all_scores, k=k)
    is_new = best >= k
    proposal = tf.maximum(best - k, 0)
    kept = tf.minimum(best, k - 1)
    new_ids = _with_word(_gather(partial_ids, _gather(parents, proposal)), t,
                         _gather(words, proposal))
    complete_ids = tf.where(is_new[:, :, tf.newaxis], new_ids, _gather(complete_ids, kept))
    complete_lengths = tf.where(is_new, t + 1, _gather(complete_lengths, kept))
    complete_log_probs = tf.where(is_new, _gather(log_probs, proposal),
                                  _gather(complete_log_probs, kept))
    complete_scores = _gather(all_scores, best)
    complete_valid = tf.where(is_new, _gather(new_complete, proposal),
                              _gather(complete_valid, kept))

    # Partial captions: the K best proposals not ending in </S>, ranked by log-probability.
    continuing = proposed & ~ends
    _, best = tf.math.top_k(tf.where(continuing, log_probs, neg_inf), k=k)
    best_parents = _gather(parents, best)
    partial_ids = _with_word(_gather(partial_ids, best_parents), t, _gather(words, best))
    partial_log_probs = _gather(log_probs, best)
    partial_valid = _gather(continuing, best)
    rows = tf.reshape(best_parents + k * tf.range(batch_size)[:, tf.newaxis], [-1])
    state = tf.nest.map_structure(lambda s: tf.gather(s, rows), new_state)
    return (t + 1, state, partial_ids, partial_log_probs, partial_valid, complete_ids,
            complete_lengths, complete_log_probs, complete_scores, complete_valid)

  def not_done(t, state, partial_ids, partial_log_probs, partial_valid, *unused_complete):
    return (t < max_len) & tf.reduce_any(partial_valid)

  (t, _, partial_ids, partial_log_probs, partial_valid, complete_ids, complete_lengths,
   complete_log_probs, complete_scores, complete_valid) = tf.while_loop(
       not_done, step,
       (tf.constant(1), state, partial_ids, partial_log_probs, partial_valid, complete_ids,
        complete_lengths, complete_log_probs, complete_scores, complete_valid))

  # Per image: the complete captions if any completed, else the partial ones (t ids each).
  use_complete = tf.reduce_any(complete_valid, axis=1, keepdims=True)
  partial_lengths = tf.fill([batch_size, k], t)
  ids = tf.where(use_complete[:, :, tf.newaxis], complete_ids, partial_ids)
  lengths = tf.where(use_complete, complete_lengths, partial_lengths)
  valid = tf.where(use_complete, complete_valid, partial_valid)
  ids = tf.where(tf.range(max_len) < lengths[:, :, tf.newaxis], ids, 0)
  return BeamSearchResult(
      word_ids=ids,
      lengths=tf.where(valid, lengths, 0),
      log_probs=tf.where(use_complete, complete_log_probs, partial_log_probs),
      scores=tf.where(use_complete, complete_scores, partial_log_probs),
      valid=valid)


class BeamSearch:
  """A compiled `beam_search` for one model and one set of search parameters.

  >>> search = BeamSearch(model, vocab.start_id, vocab.end_id, beam_size=3)
  >>> result = search(images)   # images [B, H, W, 3] in [-1, 1]; result: BeamSearchResult

  Traced once per input signature (give `input_signature` to trace exactly once).
  """

  def __init__(self, model, start_id: int, end_id: int, beam_size: int = 3,
               max_caption_length: int = 20, length_normalization_factor: float = 0.0,
               input_signature: Optional[Sequence[tf.TensorSpec]] = None):
    check_arguments(beam_size, max_caption_length, length_normalization_factor)
    self.model = model
    self.start_id = int(start_id)
    self.end_id = int(end_id)
    self.beam_size = int(beam_size)
    self.max_caption_length = int(max_caption_length)
    self.length_normalization_factor = float(length_normalization_factor)
    self._compiled = tf.function(self.search, input_signature=input_signature,
                                 reduce_retracing=True)

  def search(self, images) -> BeamSearchResult:
    """The uncompiled search (for use inside another tf.function)."""
    return beam_search(self.model, images, self.start_id, self.end_id, self.beam_size,
                       self.max_caption_length, self.length_normalization_factor)

  def __call__(self, images) -> BeamSearchResult:
    return self._compiled(images)
