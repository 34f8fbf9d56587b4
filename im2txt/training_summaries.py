"""The trainer's progress log line and TensorBoard summaries (events in train_dir).

Every `summary_every_n_steps`: losses/batch_loss (the step's mean token loss), losses/total_loss
(with phase 2's L2), learning_rate, gradient_norm (before clipping), examples_per_sec, and the
caption lengths (mean and histogram, in target tokens); every `_IMAGE_EVERY_N_SUMMARIES`-th time
a few input images. A log line every `log_every_n_steps`: step, loss, steps/s, examples/s, ETA.
"""

import time
from typing import Optional

from absl import logging
import tensorflow as tf

# Input images are written this many times less often than the scalars (they are large).
_IMAGE_EVERY_N_SUMMARIES = 10
# Number of input images written each time.
_MAX_IMAGES = 3


def _local_tensors(value, strategy) -> list:
  return list(strategy.experimental_local_results(value))


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class TrainingSummaries:
  """Call after_step() after every step; close() at the end. logdir None: logging only."""

  def __init__(self, logdir: Optional[str], summary_every_n_steps: int, global_batch: int,
               number_of_steps: int, log_every_n_steps: int):
    self._writer = (tf.summary.create_file_writer(logdir) if logdir
                    else tf.summary.create_noop_writer())
    self._summary_every = max(1, summary_every_n_steps)
    self._global_batch = global_batch
    self._number_of_steps = number_of_steps
    self._log_every = max(1, log_every_n_steps)
    self._num_summaries = 0
    self._log_mark = self._summary_mark = None  # (time, step) of the last log line / summary.

  def _rate(self, mark, step: int, now: float) -> float:
    """Steps per second since `mark` (the first step of a run also pays for tracing)."""
    if mark is None or now <= mark[0]:
      return float("nan")
    return (step - mark[1]) / (now - mark[0])

  def after_step(self, step: int, out: dict, batch: dict, strategy) -> None:
    now = time.time()
    if self._log_mark is None:
      self._log_mark = self._summary_mark = (now, step)
    if step % self._log_every == 0:
      steps_per_sec = self._rate(self._log_mark, step, now)
      eta = ((self._number_of_steps - step) / steps_per_sec
             if steps_per_sec == steps_per_sec and steps_per_sec > 0 else float("nan"))
      logging.info("step %d: loss = %.4f (%.2f steps/s, %.1f examples/s, ETA %s)", step,
                   out["batch_loss"], steps_per_sec, steps_per_sec * self._global_batch,
                   _format_duration(eta) if eta == eta else "?")
      self._log_mark = (now, step)
    if step % self._summary_every == 0:
      self._write(step, out, batch, strategy, self._rate(self._summary_mark, step, now))
      self._summary_mark = (now, step)

  def _write(self, step: int, out: dict, batch: dict, strategy, steps_per_sec: float) -> None:
    masks = _local_tensors(batch["input_mask"], strategy)
    lengths = tf.concat([tf.reduce_sum(tf.cast(m, tf.int32), axis=1) for m in masks], 0)
    with self._writer.as_default(step=step):
      tf.summary.scalar("losses/batch_loss", out["batch_loss"])
      tf.summary.scalar("losses/total_loss", out["total_loss"])
      tf.summary.scalar("learning_rate", out["learning_rate"])
      tf.summary.scalar("gradient_norm", out["grad_norm"])
      if steps_per_sec == steps_per_sec:
        tf.summary.scalar("examples_per_sec", steps_per_sec * self._global_batch)
      tf.summary.scalar("caption_length/mean", tf.reduce_mean(tf.cast(lengths, tf.float32)))
      tf.summary.histogram("caption_length", lengths)
      if self._num_summaries % _IMAGE_EVERY_N_SUMMARIES == 0:
        images = _local_tensors(batch["images"], strategy)[0][:_MAX_IMAGES]
        tf.summary.image("input_images", (tf.cast(images, tf.float32) + 1.0) / 2.0,
                         max_outputs=_MAX_IMAGES)
    self._num_summaries += 1

  def close(self) -> None:
    self._writer.flush()
    self._writer.close()
