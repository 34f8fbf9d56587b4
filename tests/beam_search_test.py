"""Tests of the batched beam search (im2txt/inference/beam_search.py) and its reference loop."""

import itertools
import math

import numpy as np
import tensorflow as tf

from im2txt.inference import beam_search
from im2txt.inference import beam_search_reference
from tests import inference_testutil

START_ID, END_ID = 0, 1

# The original im2txt test's table: previous word -> {next word: probability}; 12 words.
ORIGINAL_TABLE = {
    0: {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4},
    2: {5: 0.1, 6: 0.9},
    3: {1: 0.1, 7: 0.4, 8: 0.5},
    4: {1: 0.3, 9: 0.3, 10: 0.4},
    5: {1: 1.0}, 6: {1: 1.0}, 7: {1: 1.0}, 8: {1: 1.0},
    9: {1: 0.5, 11: 0.5},
    10: {1: 1.0}, 11: {1: 1.0},
}

# A second table without equal probabilities among a word's successors; 8 words.
TABLE_2 = {
    0: {2: 0.5, 3: 0.3, 4: 0.15, 1: 0.05},
    2: {1: 0.2, 5: 0.45, 6: 0.35},
    3: {1: 0.6, 7: 0.4},
    4: {1: 0.9, 5: 0.1},
    5: {1: 0.7, 6: 0.3},
    6: {1: 1.0},
    7: {5: 0.8, 1: 0.2},
}


class FakeTableModel:
  """The initial_state/step contract with next-word probabilities from a fixed table."""

  def __init__(self, table, vocab_size):
    probabilities = np.zeros([vocab_size, vocab_size], np.float32)
    for word, successors in table.items():
      for next_word, p in successors.items():
        probabilities[word, next_word] = p
    with np.errstate(divide="ignore"):
      self.log_probs = tf.constant(np.log(probabilities))

  def initial_state(self, images):
    return (tf.zeros([tf.shape(images)[0], 1]),)

  def step(self, word_ids, state):
    return tf.gather(self.log_probs, word_ids), state


def _to_lists(result):
  """A BeamSearchResult -> per image [(sentence, logprob, score)], best first."""
  return [[(result.word_ids[i, j, :result.lengths[i, j]].numpy().tolist(),
            float(result.log_probs[i, j]), float(result.scores[i, j]))
           for j in range(result.word_ids.shape[1]) if result.valid[i, j]]
          for i in range(result.word_ids.shape[0])]


def _batched_captions(model, images, **kwargs):
  """Runs the compiled batched search -> per image [(sentence, logprob, score)]."""
  return _to_lists(beam_search.BeamSearch(model, START_ID, END_ID, **kwargs)(images))


def _reference_captions(model, image, **kwargs):
  return [(c.sentence, float(c.logprob), float(c.score))
          for c in beam_search_reference.beam_search_reference(model, image, START_ID, END_ID,
                                                               **kwargs)]


class HandTableTest(tf.test.TestCase):
  """Exact captions and probabilities computed by hand from the tables above."""

  def _assert_captions(self, table, vocab_size, expected, **kwargs):
    model = FakeTableModel(table, vocab_size)
    expected_sentences = [s for s, _ in expected]
    expected_probabilities = [p for _, p in expected]
    # A batch of 3 identical images: every image must get the same answer. The search runs
    # eagerly here (tracing each case would take a second); test_compiled_equals_eager and
    # RandomModelTest run it compiled.
    eager = beam_search.beam_search(model, tf.zeros([3]), START_ID, END_ID, **kwargs)
    for captions in _to_lists(eager):
      self.assertEqual(expected_sentences, [s for s, _, _ in captions])
      self.assertAllClose(expected_probabilities, [math.exp(lp) for _, lp, _ in captions])
    reference = _reference_captions(model, tf.zeros([]), **kwargs)
    self.assertEqual(expected_sentences, [s for s, _, _ in reference])
    self.assertAllClose(expected_probabilities, [math.exp(lp) for _, lp, _ in reference])

  def test_original_beam_sizes(self):
    self._assert_captions(ORIGINAL_TABLE, 12, [([0, 4, 10, 1], 0.16)], beam_size=1)
    self._assert_captions(ORIGINAL_TABLE, 12, [([0, 4, 10, 1], 0.16), ([0, 3, 8, 1], 0.15)],
                          beam_size=2)
    self._assert_captions(
        ORIGINAL_TABLE, 12,
        [([0, 2, 6, 1], 0.18), ([0, 4, 10, 1], 0.16), ([0, 3, 8, 1], 0.15)], beam_size=3)

  def test_original_max_lengths(self):
    # No step at all: the <S> caption alone.
    self._assert_captions(ORIGINAL_TABLE, 12, [([0], 1.0)], max_caption_length=1)
    # Nothing completed: the partial captions, never a mixture.
    self._assert_captions(ORIGINAL_TABLE, 12, [([0, 4], 0.4), ([0, 3], 0.3), ([0, 2], 0.2)],
                          max_caption_length=2)
    # Something completed: only the complete captions.
    self._assert_captions(ORIGINAL_TABLE, 12, [([0, 4, 1], 0.12), ([0, 3, 1], 0.03)],
                          max_caption_length=3)
    self._assert_captions(
        ORIGINAL_TABLE, 12,
        [([0, 2, 6, 1], 0.18), ([0, 4, 10, 1], 0.16), ([0, 3, 8, 1], 0.15)],
        max_caption_length=4)

  def test_original_length_normalization(self):
    # log(0.06) / 5**3 is the best score despite the lowest probability.
    self._assert_captions(
        ORIGINAL_TABLE, 12,
        [([0, 4, 9, 11, 1], 0.06), ([0, 2, 6, 1], 0.18), ([0, 4, 10, 1], 0.16),
         ([0, 3, 8, 1], 0.15)],
        beam_size=4, length_normalization_factor=3)

  def test_table2_beam_sizes(self):
    # beam 1: <S> 2 (.5) -> 5 (.45) -> </S> (.7).
    self._assert_captions(TABLE_2, 8, [([0, 2, 5, 1], 0.1575)], beam_size=1)
    # beam 2: [0,3,1] completes at step 2 (.18); [0,2,6,1] (.175) beats [0,2,5,1] (.1575).
    self._assert_captions(TABLE_2, 8, [([0, 3, 1], 0.18), ([0, 2, 6, 1], 0.175)], beam_size=2)
    self._assert_captions(
        TABLE_2, 8, [([0, 3, 1], 0.18), ([0, 2, 6, 1], 0.175), ([0, 2, 5, 1], 0.1575)],
        beam_size=3)

  def test_table2_max_lengths(self):
    self._assert_captions(TABLE_2, 8, [([0, 2], 0.5), ([0, 3], 0.3), ([0, 4], 0.15)],
                          max_caption_length=2)
    self._assert_captions(TABLE_2, 8, [([0, 3, 1], 0.18)], beam_size=2, max_caption_length=3)

  def test_table2_length_normalization(self):
    # beam 2, factor 1: log(.175)/4 = -.4357 > log(.1575)/4 = -.4621 > log(.0675)/5 = -.5391
    # > log(.18)/3 = -.5716.
    self._assert_captions(TABLE_2, 8, [([0, 2, 6, 1], 0.175), ([0, 2, 5, 1], 0.1575)],
                          beam_size=2, length_normalization_factor=1.0)
    # beam 3, factor 2, 3 steps: log(.175)/16 = -.1089 > log(.1575)/16 = -.1155
    # > log(.18)/9 = -.1905.
    self._assert_captions(
        TABLE_2, 8, [([0, 2, 6, 1], 0.175), ([0, 2, 5, 1], 0.1575), ([0, 3, 1], 0.18)],
        beam_size=3, length_normalization_factor=2.0, max_caption_length=4)
    # 4 steps: log(.0675)/25 = -.10782 > log(.0672)/25 = -.10800 > log(.175)/16.
    self._assert_captions(
        TABLE_2, 8, [([0, 2, 5, 6, 1], 0.0675), ([0, 3, 7, 5, 1], 0.0672), ([0, 2, 6, 1], 0.175)],
        beam_size=3, length_normalization_factor=2.0, max_caption_length=5)
    # Unlimited: log(.0288)/36 = -.09854 comes first.
    self._assert_captions(
        TABLE_2, 8,
        [([0, 3, 7, 5, 6, 1], 0.0288), ([0, 2, 5, 6, 1], 0.0675), ([0, 3, 7, 5, 1], 0.0672)],
        beam_size=3, length_normalization_factor=2.0)

  def test_improbable_words_are_skipped(self):
    # Word 3 (p = 5e-13 < 1e-12) is never proposed, word 3 at p = 2e-12 is.
    skipped = {0: {2: 0.6, 3: 5e-13, 4: 0.4 - 5e-13}}
    self._assert_captions(skipped, 5, [([0, 2], 0.6), ([0, 4], 0.4)], max_caption_length=2)
    kept = {0: {2: 0.6, 3: 2e-12, 4: 0.4 - 2e-12}}
    self._assert_captions(kept, 5, [([0, 2], 0.6), ([0, 4], 0.4), ([0, 3], 2e-12)],
                          max_caption_length=2)

  def test_ties_go_to_the_lower_word_id(self):
    # Successors of 4: </S> and 9 both at p = .3; with beam 2 the lower id (</S>) is proposed.
    self._assert_captions(ORIGINAL_TABLE, 12, [([0, 4, 1], 0.12)], beam_size=2,
                          max_caption_length=3)

  def test_beam_larger_than_vocabulary(self):
    table = {0: {1: 0.25, 2: 0.75}, 2: {1: 1.0}}
    self._assert_captions(table, 3, [([0, 2, 1], 0.75), ([0, 1], 0.25)], beam_size=5)

  def test_compiled_equals_eager(self):
    model = FakeTableModel(TABLE_2, 8)
    for kwargs in (dict(beam_size=3, length_normalization_factor=2.0),
                   dict(beam_size=2, max_caption_length=3)):
      eager = beam_search.beam_search(model, tf.zeros([2]), START_ID, END_ID, **kwargs)
      compiled = beam_search.BeamSearch(model, START_ID, END_ID, **kwargs)(tf.zeros([2]))
      for field in beam_search.BeamSearchResult._fields:
        self.assertAllEqual(getattr(eager, field), getattr(compiled, field), msg=field)

  def test_bad_arguments(self):
    model = FakeTableModel(ORIGINAL_TABLE, 12)
    for kwargs in (dict(beam_size=0), dict(max_caption_length=0),
                   dict(length_normalization_factor=-1.0)):
      with self.assertRaisesRegex(ValueError, list(kwargs)[0]):
        beam_search.BeamSearch(model, START_ID, END_ID, **kwargs)


class _Decoder:
  """The model's decoder alone: its "images" are precomputed initial states [B, 2 * units].

  The encoder (a random InceptionV3) is the slow part and not what these tests are about; it runs
  once, for every image, in setUpClass.
  """

  def __init__(self, model):
    self.units = model.config.num_lstm_units
    self.step = tf.function(model.step, reduce_retracing=True)

  def initial_state(self, encoded):
    return (encoded[:, :self.units], encoded[:, self.units:])


class RandomModelTest(tf.test.TestCase):
  """A tiny random Show and Tell model with 6 words (<S> = 0, </S> = 1)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = inference_testutil.tiny_config(vocab_size=6)
    c = cls.config.model
    cls.model = inference_testutil.random_model(cls.config, seed=1)
    cls.images = inference_testutil.random_images(5, cls.config, seed=2)
    # Eager, as the teacher forcing below: TensorFlow's graph optimisations may change the
    # random encoder's rounding, not what is compared here.
    cls.encoded = tf.concat(cls.model.initial_state(cls.images), axis=1)
    cls.decoder = _Decoder(cls.model)

  def _assert_same(self, expected, actual):
    self.assertEqual([s for s, _, _ in expected], [s for s, _, _ in actual])
    self.assertAllClose([lp for _, lp, _ in expected], [lp for _, lp, _ in actual],
                        rtol=1e-5, atol=1e-5)
    self.assertAllClose([sc for _, _, sc in expected], [sc for _, _, sc in actual],
                        rtol=1e-5, atol=1e-5)

  def test_equals_reference_loop(self):
    for kwargs in (dict(beam_size=1), dict(beam_size=2, max_caption_length=4),
                   dict(beam_size=3), dict(beam_size=3, length_normalization_factor=1.5),
                   dict(beam_size=4, max_caption_length=2)):
      batched = _batched_captions(self.decoder, self.encoded, **kwargs)
      for i in range(self.encoded.shape[0]):
        with self.subTest(image=i, **kwargs):
          self._assert_same(_reference_captions(self.decoder, self.encoded[i], **kwargs),
                            batched[i])

  def _teacher_forced_log_probs(self, image, sentences):
    """Sum of log p(word | previous words) of each sentence, by the training forward pass."""
    length = max(len(s) for s in sentences)
    padded = np.array([s + [0] * (length - len(s)) for s in sentences], np.int32)
    images = tf.repeat(image[tf.newaxis], len(sentences), axis=0)
    logits = self.model({"images": images, "input_seqs": padded[:, :-1]})
    log_probs = tf.nn.log_softmax(logits).numpy()
    return [float(sum(log_probs[i, t, s[t + 1]] for t in range(len(s) - 1)))
            for i, s in enumerate(sentences)]

  def test_exhaustive_search(self):
    # With max length 4 at most 1 + 5 + 25 captions complete and 25 partials survive a step, so
    # beam 36 prunes nothing: the result must be the best of every caption, by brute force.
    max_length, vocab_size = 4, self.config.model.vocab_size
    sentences = [[START_ID] + list(middle) + [END_ID]
                 for n in range(max_length - 1)
                 for middle in itertools.product(
                     [w for w in range(vocab_size) if w != END_ID], repeat=n)]
    self.assertLen(sentences, 31)
    log_probs_per_image = [self._teacher_forced_log_probs(self.images[i], sentences)
                           for i in range(2)]
    for factor in (0.0, 0.7):
      batched = _batched_captions(self.decoder, self.encoded[:2], beam_size=36,
                                  max_caption_length=max_length,
                                  length_normalization_factor=factor)
      for i, log_probs in enumerate(log_probs_per_image):
        scores = [lp / (len(s) ** factor if factor > 0 else 1.0)
                  for s, lp in zip(sentences, log_probs)]
        expected = sorted(zip(sentences, log_probs, scores), key=lambda c: -c[2])
        with self.subTest(image=i, factor=factor):
          self._assert_same(expected, batched[i])

  def test_batch_equals_one_image_at_a_time(self):
    # The whole model, encoder included, traced once for both batch sizes.
    kwargs = dict(beam_size=3, max_caption_length=8)
    c = self.config.model
    search = beam_search.BeamSearch(
        self.model, START_ID, END_ID, **kwargs,
        input_signature=[tf.TensorSpec([None, c.image_height, c.image_width, 3], tf.float32)])
    batched = _to_lists(search(self.images))
    for i in range(self.images.shape[0]):
      self._assert_same(_to_lists(search(self.images[i:i + 1]))[0], batched[i])
    # Different images get different captions: the images really are used.
    self.assertGreater(len({str(c[0][0]) for c in batched}), 1)

  def test_probability_is_product_of_teacher_forced_steps(self):
    batched = _batched_captions(self.decoder, self.encoded, beam_size=3, max_caption_length=10)
    for i, captions in enumerate(batched):
      sentences = [s for s, _, _ in captions]
      self.assertLen(sentences, 3)
      self.assertAllClose(self._teacher_forced_log_probs(self.images[i], sentences),
                          [lp for _, lp, _ in captions], rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
  tf.test.main()
