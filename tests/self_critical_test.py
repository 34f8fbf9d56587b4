"""The SCST loss, recomputed another way: the samples from the teacher-forced model's softmax
(numpy's inverse CDF), their log-probabilities from the teacher-forced pass, their rewards from
pycocoevalcap's Cider, and the baselines and loss by hand."""

import dataclasses
import os

import numpy as np
from pycocoevalcap.cider.cider import Cider
import tensorflow as tf

from im2txt import configuration
from im2txt import references
from im2txt import vocabulary
from im2txt.model import show_and_tell_model
from im2txt.training import cider_reward
from im2txt.training import self_critical

WORDS = ["a", "red", "blue", "circle", "square", ".", "<S>", "</S>", "big"]
REFS = {11: ["a red circle .", "a big red circle", "red circle"],
        12: ["a blue square .", "blue square"],
        13: ["a red square .", "a red square on white", "square"]}  # "on", "white": unknown.
SAMPLES, LENGTH = 4, 8


class SelfCriticalTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    tmp = self.create_tempdir().full_path
    self.vocab_file = os.path.join(tmp, "word_counts.txt")
    vocabulary.write_word_counts(self.vocab_file, [(w, 20 - i) for i, w in enumerate(WORDS)])
    refs_file = os.path.join(tmp, "train_references.json")
    references.write_references(refs_file, "train", REFS)
    self.vocab = vocabulary.Vocabulary.from_file(self.vocab_file)
    config = configuration.small_config().model
    self.config = dataclasses.replace(
        configuration.without_concept_head(config), vocab_size=12, embedding_size=16,
        num_lstm_units=16, image_embedding_batch_norm=False, lstm_dropout_keep_prob=1.0,
        initializer_scale=0.3)
    self.data = cider_reward.load(refs_file, self.vocab_file, self.config.vocab_size, tmp)
    tf.keras.utils.set_random_seed(1)
    self.model = show_and_tell_model.ShowAndTellModel(self.config)
    self.model.build_all()
    lookup = cider_reward.ReferenceLookup(self.data)
    refs = [lookup.references_of(lookup.row(tf.constant(i, tf.int64))[0]) for i in sorted(REFS)]
    width = max(r.shape[1] for r in refs)
    self.batch = {
        "input_seqs": tf.fill([3, 2], tf.cast(self.vocab.start_id, tf.int64)),
        "references": tf.stack([tf.pad(r, [[0, 3 - r.shape[0]], [0, width - r.shape[1]]])
                                for r in refs])}
    self.inputs = {"image_features": tf.random.stateless_normal([3, 2048], [4, 5])}

  def _words(self, ids) -> str:
    """A sample as the reward reads it: its words up to and including </S>."""
    out = []
    for i in ids:
      out.append(self.vocab.id_to_word(int(i)) if i < len(self.vocab) - 1 else f"#{int(i)}")
      if i == self.vocab.end_id:
        break
    return " ".join(out)

  def _objective(self, baseline):
    return self_critical.Objective(
        cider_reward.CiderD.from_data(self.data), self.vocab.end_id, SAMPLES, baseline,
        LENGTH, seed=9, global_batch=3)

  def test_loss_equals_its_recomputation(self):
    step = tf.constant(17, tf.int64)
    for baseline in ("mean", "greedy"):
      objective = self._objective(baseline)
      loss, metrics = objective.losses(self.model, self.batch, self.inputs, step, True)
      uniforms = objective._uniforms(step, 3 * SAMPLES).numpy()
      ids, log_probs = self.model.sample_captions(
          self.inputs, self.batch["input_seqs"][:, 0], SAMPLES, tf.constant(uniforms))
      ids = ids.numpy()

      # The teacher-forced pass over the samples gives their words (inverse CDF of its softmax
      # at the same uniforms) and their log-probabilities.
      input_seqs = np.concatenate([np.full([3 * SAMPLES, 1], self.vocab.start_id), ids[:, :-1]],
                                  1)
      logits = self.model({"image_features": tf.repeat(self.inputs["image_features"], SAMPLES, 0),
                           "input_seqs": tf.constant(input_seqs)}).numpy().astype(np.float64)
      probs = np.exp(logits - logits.max(-1, keepdims=True))
      cdf = np.cumsum(probs / probs.sum(-1, keepdims=True), -1)
      self.assertAllEqual(ids, (cdf < uniforms[..., None]).sum(-1))
      teacher = np.log(np.take_along_axis(probs / probs.sum(-1, keepdims=True),
                                          ids[..., None], -1))[..., 0]
      self.assertAllClose(log_probs, teacher, rtol=1e-4, atol=1e-5)

      # Rewards: pycocoevalcap's Cider over the same corpus (the references, each with </S>).
      gts = {i: [r + " </S>" for r in REFS[i]] for i in REFS}
      images = sorted(REFS)
      rewards = np.zeros([3, SAMPLES])
      for k in range(SAMPLES):
        res = {image: [self._words(ids[n * SAMPLES + k])] for n, image in enumerate(images)}
        rewards[:, k] = Cider().compute_score(gts, res)[1]
      self.assertGreater(rewards.max(), 0.0)
      if baseline == "mean":
        base = (rewards.sum(1, keepdims=True) - rewards) / (SAMPLES - 1)
      else:
        greedy = self_critical.greedy_captions(self.model, self.inputs,
                                               self.batch["input_seqs"][:, 0], LENGTH - 1).numpy()
        greedy_rewards = Cider().compute_score(
            gts, {image: [self._words(greedy[n])] for n, image in enumerate(images)})[1]
        base = np.repeat(greedy_rewards[:, None], SAMPLES, 1)
        self.assertAllClose(metrics[2], greedy_rewards.mean(), rtol=1e-5)
      # Words up to and including the first </S> count; the later ones are masked.
      is_end = ids == self.vocab.end_id
      mask = (np.cumsum(is_end, 1) - is_end) == 0
      advantage = (rewards - base).reshape(-1)
      expected = -(advantage[:, None] * teacher * mask).sum() / mask.sum()
      self.assertAllClose(loss, expected, rtol=1e-4, msg=baseline)
      self.assertAllClose(metrics[0], rewards.mean(), rtol=1e-5)
      self.assertAllClose(metrics[1], base.mean(), rtol=1e-5)
      self.assertAllClose(metrics[3], (rewards - base > 1e-9).mean())

  def test_samples_follow_the_global_step(self):
    objective = self._objective("mean")
    first = objective._uniforms(tf.constant(3, tf.int64), 12)
    self.assertAllEqual(first, objective._uniforms(tf.constant(3, tf.int64), 12))
    self.assertNotAllClose(first, objective._uniforms(tf.constant(4, tf.int64), 12))

  def test_bad_options(self):
    cider = cider_reward.CiderD.from_data(self.data)
    with self.assertRaisesRegex(ValueError, "at least 2 samples"):
      self_critical.Objective(cider, 7, 1, "mean", 20, 0, 4)
    with self.assertRaisesRegex(ValueError, "Unknown SCST baseline"):
      self_critical.Objective(cider, 7, 5, "best", 20, 0, 4)


if __name__ == "__main__":
  tf.test.main()
