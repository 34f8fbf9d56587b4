"""The evaluator's loop: wait for the trainer's checkpoints and evaluate each new one once.

    results = run_evaluation_loop("MODEL/train", "MODEL/eval", "DATA/val-?????-of-00004",
                                  vocab_file="DATA/word_counts.txt",
                                  options=LoopOptions(number_of_steps=1000000))

Every `eval_interval_secs` the loop reads the trainer's `checkpoint` index file (the one
tf.train.CheckpointManager keeps) and evaluates the latest checkpoint it has not evaluated yet,
as the original's evaluator did: one evaluation can take longer than the trainer takes to write
the next checkpoint, and an evaluator working through a backlog oldest first would fall ever
further behind (and lose the checkpoints that rotation deletes meanwhile). Older unevaluated
checkpoints are skipped with a log line naming them, as are those below `min_global_step`
(except the final one, at `number_of_steps`).
A checkpoint deleted by the trainer's rotation (it keeps 5) before it could be restored is
skipped with a log line. Once restored, a checkpoint's weights are in memory, so deleting its
files later does not disturb its evaluation.

The last evaluated step is kept in `eval_dir/evaluation_state.json` (written atomically after
the event file is flushed), so a restarted evaluator does not redo checkpoints. A rollback of the
trainer (`train --resume_from=ckpt-M`, recorded in `train_dir/set_aside/resumes.json`) makes the
steps after M new again: the loop notices it at its next look, says so, and evaluates the
checkpoints trained again (their events join the set-aside steps' in `eval_dir`). A stop request
(`stop_event`, set by the binary on SIGTERM/SIGINT) abandons the current evaluation between two
batches and writes nothing for it.

The configuration is read from `checkpoint_dir/config.json` when the first checkpoint appears
(the trainer writes it), with `eval_overrides` applied to its `eval` section.
"""

import calendar
import dataclasses
import json
import os
import re
import time
from typing import Any, Dict, List, Optional

from absl import logging
import tensorflow as tf

from im2txt import checkpoint_files
from im2txt import configuration
from im2txt import file_io
from im2txt import vocabulary
from im2txt.evaluation import caption_metrics
from im2txt.evaluation import checkpoint_evaluator

STATE_FILENAME = "evaluation_state.json"
# Seconds between looks for the first checkpoint while config.json (and with it the configured
# eval_interval_secs) does not exist yet, unless eval_interval_secs is given as an override.
FIRST_CHECKPOINT_POLL_SECS = 10
# The vocabulary file the data job writes beside the shards.
VOCAB_FILENAME = "word_counts.txt"
# Attempts of `once` to evaluate the latest checkpoint when rotation deletes it meanwhile.
ONCE_ATTEMPTS = 3


@dataclasses.dataclass
class LoopOptions:
  """When the loop stops (by default: never, until a stop is requested)."""

  # Evaluate the latest checkpoint (whatever its step) and return; an error if there is none.
  once: bool = False
  # Return after evaluating a checkpoint at or past this global step (the trainer's
  # --number_of_steps); 0: no such stop.
  number_of_steps: int = 0
  # Return after this many seconds without a checkpoint to evaluate; 0: wait forever.
  max_wait_secs: float = 0.0


def vocab_beside_shards(shard: str) -> Optional[str]:
  """The data job's word_counts.txt in the folder of an input shard, if there is one."""
  candidate = os.path.join(os.path.dirname(shard), VOCAB_FILENAME)
  if not tf.io.gfile.exists(candidate):
    return None
  logging.info("No --vocab_file: using %s, beside the input shards, for the caption metrics",
               candidate)
  return candidate


def checkpoint_step(path: str) -> Optional[int]:
  """The global step in a checkpoint name (train/ckpt-5000 -> 5000), None if it has none."""
  match = re.search(r"-(\d+)$", path)
  return int(match.group(1)) if match else None


def list_checkpoints(checkpoint_dir: str) -> List[checkpoint_evaluator.CheckpointRef]:
  """The checkpoints listed in checkpoint_dir's `checkpoint` index file, oldest first."""
  try:
    state = tf.train.get_checkpoint_state(checkpoint_dir)
  except (tf.errors.OpError, ValueError) as e:  # e.g. a transient file system error
    logging.warning("Cannot read the checkpoint index of %s (will retry): %s", checkpoint_dir, e)
    return []
  if state is None:
    return []
  paths = list(state.all_model_checkpoint_paths)
  if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
    paths.append(state.model_checkpoint_path)
  refs = {}
  for path in paths:
    step = checkpoint_step(path)
    if step is None:
      logging.log_first_n(logging.WARNING, "Ignoring checkpoint %s: no global step in its name "
                          "(the trainer saves ckpt-<step>)", 5, path)
      continue
    refs[path] = checkpoint_evaluator.CheckpointRef(path, step)
  return sorted(refs.values(), key=lambda ref: ref.step)


def _rollback_key(resume: dict) -> str:
  """One recorded resume (checkpoint_files.resumes) as it is kept in the state file."""
  return f"{resume.get('checkpoint')} at {resume.get('utc')} UTC"


def _recorded_at(resume: dict) -> float:
  """When a recorded resume was done (seconds since the epoch; 0 if its time is unreadable)."""
  try:
    return float(calendar.timegm(time.strptime(str(resume.get("utc")),
                                               checkpoint_files.RESUME_TIME_FORMAT)))
  except ValueError:
    return 0.0


def _modified(path: str, default: float) -> float:
  try:
    return tf.io.gfile.stat(path).mtime_nsec / 1e9
  except tf.errors.OpError:
    return default


def read_state(eval_dir: str) -> Dict[str, Any]:
  path = os.path.join(eval_dir, STATE_FILENAME)
  if not tf.io.gfile.exists(path):
    return {}
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      return json.loads(f.read())
  except (ValueError, tf.errors.OpError) as e:
    logging.warning("Ignoring unreadable %s: %s", path, e)
    return {}


def write_state(eval_dir: str, state: Dict[str, Any]) -> None:
  """eval_dir/evaluation_state.json, atomically (temp file + rename)."""
  file_io.write_json(os.path.join(eval_dir, STATE_FILENAME), state)


class EvaluationLoop:
  """State of one evaluator run; `run_evaluation_loop` is its usual entry point."""

  def __init__(self, checkpoint_dir: str, eval_dir: str, input_file_pattern: str,
               vocab_file: Optional[str] = None,
               eval_overrides: Optional[Dict[str, Any]] = None,
               options: Optional[LoopOptions] = None, stop_event=None,
               config: Optional[configuration.Config] = None,
               evaluator: Optional[checkpoint_evaluator.CheckpointEvaluator] = None):
    """Arguments as run_evaluation_loop's; `evaluator`: one to reuse (its own config then
    decides what is evaluated, e.g. num_eval_examples)."""
    # Normalised, so that the state file recognises the directory however it is written.
    self.checkpoint_dir = (checkpoint_dir.rstrip("/") if "://" in checkpoint_dir
                           else os.path.abspath(checkpoint_dir))
    self.eval_dir = eval_dir
    self.input_file_pattern = input_file_pattern
    self.options = options or LoopOptions()
    self.stop_event = stop_event
    self.eval_overrides = dict(eval_overrides or {})
    unknown = sorted(set(self.eval_overrides) -
                     {f.name for f in dataclasses.fields(configuration.EvalConfig)})
    if unknown:
      raise ValueError(f"Unknown eval config field(s) {unknown}")
    # Fail fast on what is wrong from the start, rather than when the first checkpoint comes.
    files = file_io.expand_patterns(input_file_pattern, "--input_file_pattern")
    vocab_file = vocab_file or vocab_beside_shards(files[0])
    self.vocab = vocabulary.Vocabulary.from_file(vocab_file) if vocab_file else None
    if self.vocab is None:
      logging.warning("No vocabulary file (no --vocab_file, no %s beside the input shards): the "
                      "caption metrics are off (perplexity only)", VOCAB_FILENAME)
    elif self.eval_overrides.get("num_caption_images",
                                 config.eval.num_caption_images if config else 1) > 0:
      caption_metrics.check_java()
    if config is None and evaluator is not None:
      config = evaluator.config
    self.config = self._with_overrides(config) if config is not None else None
    self.evaluator = evaluator
    self._writer = None
    self._attempted = set()
    state = read_state(eval_dir)
    self.last_step = -1
    # The trainer's recorded rollbacks (train --resume_from) that the evaluations so far have
    # followed. Without a record of them in the state file, the list is made at the first
    # reading of the trainer's record: the rollbacks recorded before `_rollbacks_since` (this
    # evaluator's start, or the time an older evaluator wrote the state file) need no following.
    self._rollbacks_followed: Optional[List[str]] = None
    self._rollbacks_since = time.time()
    self._resumes_problem = None
    if state.get("checkpoint_dir") == self.checkpoint_dir:
      self.last_step = int(state.get("last_evaluated_step", -1))
      if isinstance(state.get("rollbacks_followed"), list):
        self._rollbacks_followed = [str(key) for key in state["rollbacks_followed"]]
      elif isinstance(state.get("rollbacks_since"), (int, float)):
        self._rollbacks_since = float(state["rollbacks_since"])
      else:
        self._rollbacks_since = _modified(os.path.join(eval_dir, STATE_FILENAME),
                                          self._rollbacks_since)
      logging.info("Checkpoints of %s up to step %d were evaluated before (%s); not redoing "
                   "them", self.checkpoint_dir, self.last_step,
                   os.path.join(eval_dir, STATE_FILENAME))

  def _with_overrides(self, config: configuration.Config) -> configuration.Config:
    return dataclasses.replace(config, eval=dataclasses.replace(config.eval,
                                                                **self.eval_overrides))

  def _eval_config(self) -> configuration.EvalConfig:
    if self.config is None:
      self.config = self._with_overrides(configuration.load_config(self.checkpoint_dir))
    return self.config.eval

  def _config_ready(self) -> bool:
    """Whether the configuration is known (config.json may lag the first checkpoint)."""
    if self.config is None and not tf.io.gfile.exists(
        os.path.join(self.checkpoint_dir, configuration.CONFIG_FILENAME)):
      return False
    self._eval_config()
    return True

  def _stopped(self) -> bool:
    return self.stop_event is not None and self.stop_event.is_set()

  def _sleep(self, seconds: float) -> None:
    """Sleeps in short slices so that a stop request is seen quickly."""
    deadline = time.monotonic() + seconds
    while not self._stopped() and time.monotonic() < deadline:
      time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

  def _poll_interval(self) -> float:
    if "eval_interval_secs" in self.eval_overrides:
      return self.eval_overrides["eval_interval_secs"]
    return self.config.eval.eval_interval_secs if self.config else FIRST_CHECKPOINT_POLL_SECS

  def _is_final(self, step: int) -> bool:
    return 0 < self.options.number_of_steps <= step

  def _resumes(self) -> Optional[List[dict]]:
    """The trainer's record of rollbacks (checkpoint_files.resumes); None, with a warning when
    the problem is new, while it cannot be read."""
    try:
      done = checkpoint_files.resumes(self.checkpoint_dir)
    except (ValueError, tf.errors.OpError) as e:
      problem = file_io.tf_message(e)
      if problem != self._resumes_problem:
        logging.warning("Cannot read the trainer's record of rollbacks (a rollback is followed "
                        "once it reads again): %s", problem)
        self._resumes_problem = problem
      return None
    self._resumes_problem = None
    return done

  def _follow_rollbacks(self) -> None:
    """Makes the steps after a newly recorded rollback's checkpoint new again."""
    done = self._resumes()
    if done is None:
      return
    if self._rollbacks_followed is None:
      # A recorded time is rounded down to the second; in doubt a rollback is followed (one
      # evaluation more) rather than missed.
      self._rollbacks_followed = [_rollback_key(r) for r in done
                                  if _recorded_at(r) + 1 < self._rollbacks_since]
    for resume in done:
      key = _rollback_key(resume)
      if key in self._rollbacks_followed:
        continue
      self._rollbacks_followed.append(key)
      step = checkpoint_step(str(resume.get("checkpoint", "")))
      if step is None:
        continue
      # Its later checkpoints are new files under the old names, failed or skipped ones too.
      self._attempted = {path for path in self._attempted
                         if checkpoint_step(path) <= step}
      if step < self.last_step:
        logging.warning(
            "%s was rolled back to step %d (train --resume_from=%s at %s UTC): evaluating the "
            "checkpoints trained again after it (the events of the set-aside steps up to %d "
            "stay in %s)", self.checkpoint_dir, step, resume.get("checkpoint"),
            resume.get("utc"), self.last_step, self.eval_dir)
        self.last_step = step

  def pending_checkpoints(self) -> List[checkpoint_evaluator.CheckpointRef]:
    """Listed checkpoints not evaluated yet, oldest first; logs (once) those it skips."""
    checkpoints = list_checkpoints(self.checkpoint_dir)
    if checkpoints and not self._config_ready():
      logging.log_every_n_seconds(
          logging.INFO, "Checkpoints in %s but no %s yet (the trainer writes it); waiting", 600,
          self.checkpoint_dir, configuration.CONFIG_FILENAME)
      return []
    pending = []
    for ref in checkpoints:
      if ref.path in self._attempted or ref.step <= self.last_step:
        continue
      min_global_step = self._eval_config().min_global_step
      if ref.step < min_global_step and not self._is_final(ref.step):
        logging.info("Skipping %s: global step %d < min_global_step %d", ref.path, ref.step,
                     min_global_step)
        self._attempted.add(ref.path)
        continue
      pending.append(ref)
    return pending

  def evaluate(self, ref: checkpoint_evaluator.CheckpointRef) -> checkpoint_evaluator.EvalResult:
    """Evaluates one checkpoint and records it (events, state file, log line)."""
    self._eval_config()
    if self.evaluator is None:
      logging.info("Building the model and reading the val split %s", self.input_file_pattern)
      self.evaluator = checkpoint_evaluator.CheckpointEvaluator(
          self.config, self.input_file_pattern, self.vocab)
    logging.info("Evaluating %s", ref.path)
    result = self.evaluator.evaluate(ref, self.stop_event)
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self.eval_dir)
    checkpoint_evaluator.write_summaries(self._writer, result)
    self.last_step = max(self.last_step, result.step)
    state = {"checkpoint_dir": self.checkpoint_dir, "last_evaluated_step": self.last_step,
             "last_evaluated_checkpoint": result.checkpoint}
    if self._rollbacks_followed is not None:
      state["rollbacks_followed"] = self._rollbacks_followed
    else:  # The record was not readable yet: the time before which none needs following.
      state["rollbacks_since"] = self._rollbacks_since
    write_state(self.eval_dir, state)
    logging.info("%s", result.summary_line())
    return result

  def run_once(self) -> checkpoint_evaluator.EvalResult:
    """Evaluates the latest checkpoint; EvaluationError if there is none or it fails."""
    self._follow_rollbacks()  # For the state file: what a later loop need not follow.
    for attempt in range(ONCE_ATTEMPTS):
      checkpoints = list_checkpoints(self.checkpoint_dir)
      if not checkpoints:
        raise checkpoint_evaluator.EvaluationError(
            f"No checkpoint in {self.checkpoint_dir} (expected a `checkpoint` index file written "
            "by the trainer)")
      try:
        return self.evaluate(checkpoints[-1])
      except checkpoint_evaluator.CheckpointDeletedError as e:
        if attempt + 1 == ONCE_ATTEMPTS:
          raise
        logging.warning("%s; evaluating the new latest checkpoint", e)
      except checkpoint_evaluator.EvaluationStopped:
        raise checkpoint_evaluator.EvaluationError(
            f"Stopped before the evaluation of {checkpoints[-1].path} finished") from None
    raise AssertionError("unreachable")

  def run(self) -> List[checkpoint_evaluator.EvalResult]:
    """Evaluates new checkpoints until a stop condition; returns what was evaluated."""
    if self.options.once:
      return [self.run_once()]
    results = []
    idle_since = time.monotonic()
    last_message = None
    try:
      while not self._stopped():
        self._follow_rollbacks()
        if self._is_final(self.last_step):
          logging.info("The final step %d of training (number_of_steps %d) is evaluated; done",
                       self.last_step, self.options.number_of_steps)
          break
        pending = self.pending_checkpoints()
        if pending:
          last_message = None
          for older in pending[:-1]:
            logging.info("Skipping %s (step %d): a newer checkpoint, %s, is waiting (the "
                         "evaluator takes the latest)", older.path, older.step, pending[-1].path)
            self._attempted.add(older.path)
          result = self._evaluate_or_skip(pending[-1])
          if result is not None:
            results.append(result)
          idle_since = time.monotonic()
          continue
        waited = time.monotonic() - idle_since
        if self.options.max_wait_secs and waited >= self.options.max_wait_secs:
          logging.info("No new checkpoint in %s for %.0f s (max_wait_secs); done",
                       self.checkpoint_dir, waited)
          break
        message = self._waiting_message()
        if message != last_message:
          logging.info("%s", message)
          last_message = message
        self._sleep(self._poll_interval())
    except checkpoint_evaluator.EvaluationStopped:
      logging.info("Stop requested during an evaluation: abandoned it, nothing written for it")
    if self._stopped():
      logging.info("Stop requested; the evaluator stops after %d evaluation(s)", len(results))
    return results

  def _evaluate_or_skip(self, ref: checkpoint_evaluator.CheckpointRef
                        ) -> Optional[checkpoint_evaluator.EvalResult]:
    self._attempted.add(ref.path)
    try:
      return self.evaluate(ref)
    except checkpoint_evaluator.CheckpointDeletedError:
      logging.warning("Checkpoint %s was deleted before it could be evaluated (the trainer "
                      "keeps only its latest checkpoints); skipping", ref.path)
    except checkpoint_evaluator.CheckpointMismatchError:
      raise
    except checkpoint_evaluator.EvaluationError as e:
      logging.error("Skipping %s: %s", ref.path, e)
    return None

  def _waiting_message(self) -> str:
    every = f"(looking every {self._poll_interval():g} s)"
    if not tf.io.gfile.isdir(self.checkpoint_dir):
      return (f"Checkpoint directory {self.checkpoint_dir} does not exist yet; waiting for the "
              f"trainer's first checkpoint {every}")
    if self.last_step < 0 and not list_checkpoints(self.checkpoint_dir):
      return f"No checkpoint in {self.checkpoint_dir} yet; waiting for the trainer {every}"
    return (f"Waiting for a checkpoint newer than step {self.last_step} in "
            f"{self.checkpoint_dir} {every}")

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def run_evaluation_loop(checkpoint_dir: str, eval_dir: str, input_file_pattern: str,
                        vocab_file: Optional[str] = None,
                        eval_overrides: Optional[Dict[str, Any]] = None,
                        options: Optional[LoopOptions] = None, stop_event=None,
                        config: Optional[configuration.Config] = None
                        ) -> List[checkpoint_evaluator.EvalResult]:
  """Evaluates the checkpoints of `checkpoint_dir` into `eval_dir` until a stop condition.

  Args:
    checkpoint_dir: the trainer's train_dir (checkpoints, `checkpoint` index, config.json).
    eval_dir: where the TensorBoard events and evaluation_state.json go.
    input_file_pattern: the val split's TFRecord files (comma-separated globs).
    vocab_file: word_counts.txt; without it the caption metrics are off.
    eval_overrides: EvalConfig fields replacing config.json's (e.g. {"num_eval_examples": 500}).
    options: stop conditions (LoopOptions).
    stop_event: anything with is_set(); when set, the loop returns promptly.
    config: the configuration to use instead of checkpoint_dir/config.json.
  Returns:
    The results of the evaluations done, in order.
  Raises:
    EvaluationError: with `once`, if there is no checkpoint or its evaluation failed;
      CheckpointMismatchError: a checkpoint does not fit the configuration (in any mode).
  """
  loop = EvaluationLoop(checkpoint_dir, eval_dir, input_file_pattern, vocab_file,
                        eval_overrides, options, stop_event, config)
  try:
    return loop.run()
  finally:
    loop.close()
