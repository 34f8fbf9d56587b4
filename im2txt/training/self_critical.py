"""Self-critical sequence training (phase 3, train --objective=scst): the captions' CIDEr-D.

Rennie et al. (CVPR 2017), with Luo's baseline (2020, "A Better Variant of Self-Critical
Sequence Training") by default. Per image of a batch: `num_samples` captions are sampled from the
model (inference's max length), each rewarded with its CIDEr-D against all the image's
references (cider_reward.py); the baseline is the mean reward of the image's other samples
("mean"), or the reward of the model's greedy caption ("greedy", Rennie's test-time decode);
the loss is -sum (reward - baseline) * log p(sample word), over each sample's words up to and
including its </S>, divided by the number of such words in the global batch (as
self-critical.pytorch's RewardCriterion).

The random numbers of a step are a function of (seed, global step) and of a sample's row in the
global batch: a step gives the same samples on one device as on several replicas (each takes its
rows), and a resumed run draws what the uninterrupted one would have.
"""

from typing import List, Tuple

import tensorflow as tf

from im2txt.training import cider_reward

BASELINES = ("mean", "greedy")
# What a step reports, as means over the global batch (TensorBoard scst/...): the samples'
# reward, their baseline, the greedy caption's reward (steps that decode it), and the fraction of
# samples whose reward beats their baseline.
METRICS = ("sample_reward", "baseline", "greedy_cider", "beat_baseline")
_SUM = tf.distribute.ReduceOp.SUM
# A reward above its baseline by less is a tie (e.g. all of an image's samples alike, whose mean
# baseline differs from their reward by rounding).
_TIE = 1e-9


def caption_codes(ids: tf.Tensor, end_id: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """Sampled word ids [N, T] -> (CIDEr codes [N, T] int64: id + 1 up to and including the first
  </S>, then 0; the mask [N, T] float32 of those words)."""
  ids = tf.cast(ids, tf.int64)
  ended_before = tf.cumsum(tf.cast(tf.equal(ids, end_id), tf.int32), axis=1, exclusive=True)
  mask = tf.equal(ended_before, 0)
  return tf.where(mask, ids + 1, tf.zeros_like(ids)), tf.cast(mask, tf.float32)


def greedy_captions(model, model_inputs: dict, start_ids: tf.Tensor, steps: int) -> tf.Tensor:
  """The model's greedy captions [B, steps] int32, in inference mode (Rennie's baseline)."""
  if "image_features" in model_inputs:
    state = model.initial_state_from_features(model_inputs["image_features"])
  else:
    state = model.initial_state(model_inputs["images"])
  words, ids = tf.cast(start_ids, tf.int32), []
  for _ in range(steps):
    log_probs, state = model.step(words, state)
    words = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    ids.append(words)
  return tf.stack(ids, 1)


class Objective:
  """The SCST loss of a replica's share of the global batch (in a replica context)."""

  def __init__(self, cider: cider_reward.CiderD, end_id: int, num_samples: int, baseline: str,
               max_caption_length: int, seed: int, global_batch: int):
    if baseline not in BASELINES:
      raise ValueError(f"Unknown SCST baseline {baseline!r}; expected one of {BASELINES}")
    if baseline == "mean" and num_samples < 2:
      raise ValueError("The mean baseline (Luo's) needs at least 2 samples per image, not "
                       f"{num_samples}")
    if num_samples < 1 or max_caption_length < 2:
      raise ValueError("SCST needs at least one sample per image and a max caption length >= 2")
    self.cider, self.end_id, self.num_samples = cider, int(end_id), int(num_samples)
    self.baseline, self.steps = baseline, int(max_caption_length) - 1
    self.seed, self.global_batch = int(seed), int(global_batch)

  def _uniforms(self, step: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """This replica's rows of the step's uniforms [global batch * samples, steps]."""
    everything = tf.random.stateless_uniform(
        [self.global_batch * self.num_samples, self.steps],
        seed=tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)]))
    first = tf.distribute.get_replica_context().replica_id_in_sync_group * rows
    return everything[first:first + rows]

  def _rewards(self, codes: tf.Tensor, references: tf.Tensor, per_image: int) -> tf.Tensor:
    codes = tf.reshape(codes, [tf.shape(references)[0], per_image, self.steps])
    return self.cider.scores(codes, references)  # [B, per_image] float64

  def losses(self, model, batch: dict, model_inputs: dict, step: tf.Tensor,
             with_greedy: bool) -> Tuple[tf.Tensor, List[tf.Tensor]]:
    """(this replica's share of the loss, [its shares of METRICS' global means]); the greedy
    decode runs when the baseline needs it or `with_greedy` (steps whose metrics are logged)."""
    context = tf.distribute.get_replica_context()
    start_ids = batch["input_seqs"][:, 0]
    local = tf.shape(start_ids)[0]
    rows = local * self.num_samples
    ids, log_probs = model.sample_captions(model_inputs, start_ids, self.num_samples,
                                           self._uniforms(step, rows), training=True)
    codes, mask = caption_codes(tf.stop_gradient(ids), self.end_id)
    references = batch["references"]
    rewards = self._rewards(codes, references, self.num_samples)  # [B, S]
    greedy = None
    if self.baseline == "greedy" or with_greedy:
      greedy_codes, _ = caption_codes(
          greedy_captions(model, model_inputs, start_ids, self.steps), self.end_id)
      greedy = self._rewards(greedy_codes, references, 1)  # [B, 1]
    if self.baseline == "mean":
      baseline = (tf.reduce_sum(rewards, 1, keepdims=True) - rewards) / (self.num_samples - 1)
    else:
      baseline = tf.broadcast_to(greedy, tf.shape(rewards))
    advantage = tf.cast(tf.reshape(rewards - baseline, [-1]), tf.float32)
    tokens = context.all_reduce(_SUM, tf.reduce_sum(mask))
    loss = -tf.reduce_sum(advantage[:, tf.newaxis] * log_probs * mask) / tokens
    samples = float(self.global_batch * self.num_samples)
    metrics = [tf.reduce_sum(rewards) / samples, tf.reduce_sum(baseline) / samples,
               (tf.reduce_sum(greedy) / self.global_batch if greedy is not None
                else tf.constant(float("nan"), tf.float64)),
               tf.reduce_sum(tf.cast(rewards - baseline > _TIE, tf.float64)) / samples]
    return loss, [tf.cast(m, tf.float32) for m in metrics]
