"""The trainer's progress log line and TensorBoard summaries (events in train_dir).

Written between training loops (see TrainOptions.steps_per_loop), from the loop's last step:
  - every `summary_every_n_steps` (config.training) the scalars: losses/batch_loss (the step's
    mean token loss), losses/total_loss (with phase 2's L2), learning_rate, gradient_norm (before
    clipping), examples_per_sec and caption_length/mean (in target tokens);
  - every `image_summary_secs` (and at a run's first summary) the large ones: a few input images
    and the caption-length histogram. By time, as the original wrote all its summaries (every
    600 s): by steps they would grow the event files by gigabytes over a million fast steps.
  - every `log_every_n_steps` a log line: step, loss, steps/s, examples/s, ETA.
Self-critical training (--objective=scst) adds scst/sample_reward (the samples' mean CIDEr-D),
scst/baseline (their mean baseline), scst/greedy_cider (the greedy captions' mean CIDEr-D) and
scst/beat_baseline (the fraction of samples rewarded above their baseline), in the log line too.
"""

import time
from typing import Optional

from absl import logging
import tensorflow as tf

from im2txt import configuration

# Self-critical training's metrics (training/self_critical.METRICS).
_SCST_METRICS = ("sample_reward", "baseline", "greedy_cider", "beat_baseline")
# Number of input images written each time.
_MAX_IMAGES = 3


def _local_tensors(value, strategy) -> list:
  return list(strategy.experimental_local_results(value))


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class TrainingSummaries:
  """Call after_loop() after every training loop; close() at the end. logdir None: logs only."""

  def __init__(self, logdir: Optional[str], config: configuration.TrainingConfig,
               global_batch: int, number_of_steps: int, log_every_n_steps: int):
    self._writer = (tf.summary.create_file_writer(logdir) if logdir
                    else tf.summary.create_noop_writer())
    self._summary_every = max(1, config.summary_every_n_steps)
    self._image_secs = config.image_summary_secs
    self._global_batch = global_batch
    self._number_of_steps = number_of_steps
    self._log_every = max(1, log_every_n_steps)
    self._last_image_time = None
    # (time, step) of the last log line / summary; the step before the first loop ends.
    self._log_mark = self._summary_mark = None

  def _rate(self, mark, step: int, now: float) -> float:
    """Steps per second since `mark` (the first step of a run also pays for tracing)."""
    if mark is None or now <= mark[0]:
      return float("nan")
    return (step - mark[1]) / (now - mark[0])

  @staticmethod
  def _crossed(mark, step: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (mark's step, step]."""
    return step // every > mark[1] // every

  def after_loop(self, step: int, out: dict, batch: dict, strategy) -> None:
    """After the loop that ended at global step `step`: `out` and `batch` are its last step's."""
    now = time.time()
    if self._log_mark is None:
      self._log_mark = self._summary_mark = (now, step - 1)
    if self._crossed(self._log_mark, step, self._log_every):
      steps_per_sec = self._rate(self._log_mark, step, now)
      eta = ((self._number_of_steps - step) / steps_per_sec
             if steps_per_sec == steps_per_sec and steps_per_sec > 0 else float("nan"))
      scst = ""
      if "sample_reward" in out:
        scst = (f", reward {out['sample_reward']:.3f} (baseline {out['baseline']:.3f}, greedy "
                f"{out['greedy_cider']:.3f}, {100 * out['beat_baseline']:.0f}% above)")
      logging.info("step %d: loss = %.4f%s (%.2f steps/s, %.1f examples/s, ETA %s)", step,
                   out["batch_loss"], scst, steps_per_sec, steps_per_sec * self._global_batch,
                   _format_duration(eta) if eta == eta else "?")
      self._log_mark = (now, step)
    if self._crossed(self._summary_mark, step, self._summary_every):
      large = self._last_image_time is None or (
          self._image_secs > 0 and now - self._last_image_time >= self._image_secs)
      self._write(step, out, batch, strategy, self._rate(self._summary_mark, step, now), large)
      if large:
        self._last_image_time = now
      self._summary_mark = (now, step)

  def _write(self, step: int, out: dict, batch: dict, strategy, steps_per_sec: float,
             large: bool) -> None:
    masks = _local_tensors(batch["input_mask"], strategy)
    lengths = tf.concat([tf.reduce_sum(tf.cast(m, tf.int32), axis=1) for m in masks], 0)
    with self._writer.as_default(step=step):
      tf.summary.scalar("losses/batch_loss", out["batch_loss"])
      tf.summary.scalar("losses/total_loss", out["total_loss"])
      if "concept_loss" in out:
        tf.summary.scalar("losses/concept_loss", out["concept_loss"])
      for name in _SCST_METRICS:
        if name in out:
          tf.summary.scalar(f"scst/{name}", out[name])
      tf.summary.scalar("learning_rate", out["learning_rate"])
      tf.summary.scalar("gradient_norm", out["grad_norm"])
      if steps_per_sec == steps_per_sec:
        tf.summary.scalar("examples_per_sec", steps_per_sec * self._global_batch)
      tf.summary.scalar("caption_length/mean", tf.reduce_mean(tf.cast(lengths, tf.float32)))
      if large:
        tf.summary.histogram("caption_length", lengths)
        if "images" not in batch:
          return  # Feature records: no image to show.
        images = _local_tensors(batch["images"], strategy)[0][:_MAX_IMAGES]
        tf.summary.image("input_images", (tf.cast(images, tf.float32) + 1.0) / 2.0,
                         max_outputs=_MAX_IMAGES)

  def close(self) -> None:
    self._writer.flush()
    self._writer.close()
