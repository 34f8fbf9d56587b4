"""The two-phase Show and Tell trainer (library; `im2txt/train.py` is its command line).

Phase 1 (`train_inception=False`): InceptionV3 frozen and in inference mode, SGD at 2.0 halved
every 8 epochs. Phase 2 (`train_inception=True`, same train_dir): everything fine-tuned at
0.0005 with L2 on Inception's weights; it resumes from phase 1's last checkpoint and global step.
(The defaults are the original's; each phase's optimizer, SGD or Adam, and rate are in the
config's `training` section.) Phase 3 (`objective="scst"`, same train_dir, optional):
self-critical training on the CIDEr-D of sampled captions (self_critical.py), Adam at 5e-5.

    options = trainer.TrainOptions(input_file_pattern="data/train-?????-of-00256",
                                   train_dir="model/train", number_of_steps=1000000)
    result = trainer.train(configuration.default_config(), options)

`train_dir` holds `ckpt-N` (N = global step, the last `max_checkpoints_to_keep`) with their
`checkpoint` index, each a `tf.train.Checkpoint(step=, model=, optimizer=)`; `config.json`;
and the TensorBoard events. Running the same command again continues from the last checkpoint
with the same step count and learning-rate schedule.

Under a distribution strategy each replica sums its token losses and divides by the number of
real tokens in the *global* batch, so the replicas' losses (and gradients) add up to exactly the
single-device ones; gradients are summed across replicas, then clipped by their global norm.
Phase 2 on several replicas synchronises Inception's batch norms over the global batch.

Modules of im2txt/training: train_options (what a run is asked to do), cluster (the strategy,
its devices, the tasks of a cluster), optimization (schedules, optimizers, L2), train_state
(build, restore, Inception's initial weights), training_summaries (log lines, TensorBoard); this
one holds the step and the loop. Steps run `steps_per_loop` at a time inside one tf.function
(see TrainOptions).
"""

import contextlib
import dataclasses
import math
import shutil
import signal
import tempfile
import threading
import time
from typing import Optional, Sequence

from absl import logging
import tensorflow as tf

from im2txt import checkpoint_files
from im2txt import configuration
from im2txt.data import feature_cache
from im2txt.data import inputs
from im2txt.model import concept_head
from im2txt.model import show_and_tell_model
from im2txt.training import cider_reward
from im2txt.training import cluster
from im2txt.training import lease
from im2txt.training import optimization
from im2txt.training import self_critical
from im2txt.training import train_options
from im2txt.training import train_state
from im2txt.training import training_summaries

MIXED_PRECISION_POLICIES = {"none": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
_SUM = tf.distribute.ReduceOp.SUM


# The trainer's options (in a module of their own: train_state reads them too).
TrainOptions = train_options.TrainOptions
ACCELERATOR_STEPS_PER_LOOP = train_options.ACCELERATOR_STEPS_PER_LOOP


@dataclasses.dataclass
class TrainResult:
  start_step: int  # Global step this run started from (restored from a checkpoint or 0).
  global_step: int  # Global step reached.
  first_loss: float  # Batch loss of this run's first step (nan if it ran none).
  last_loss: float  # Batch loss of this run's last step.
  stopped_by_signal: bool = False  # SIGTERM: checkpoint saved, stopped before number_of_steps.
  skipped_records: int = 0  # Undecodable records skipped (with skip_bad_images).
  last_checkpoint: Optional[str] = None
  # Steps per second after this run's first two loops (which trace the step and the fused loop);
  # nan if it ran fewer than three loops.
  steady_steps_per_sec: float = math.nan


def resolve_config(train_dir: str, preset: str = "default",
                   config_file: str = "") -> configuration.Config:
  """The configuration of a run: `config_file`, else train_dir's config.json, else `preset`.

  A run on an existing train_dir (a restart, or phase 2 after phase 1) reuses the configuration
  it was started with unless a config file is given explicitly; a config file whose model
  differs from the one train_dir's checkpoints were trained with is an error.
  """
  existing = None
  if tf.io.gfile.exists(f"{train_dir}/{configuration.CONFIG_FILENAME}"):
    existing = configuration.load_config(train_dir)
  if config_file:
    config = configuration.load_config(config_file)
    if (existing is not None and tf.train.latest_checkpoint(train_dir)
        and existing.model != config.model):
      raise ValueError(f"{config_file}: its model section differs from the one of the "
                       f"checkpoints in {train_dir} (see its config.json)")
    return config
  if existing is not None:
    logging.info("Using %s/config.json of the earlier run (--preset %s ignored; pass "
                 "--config_file to change it)", train_dir, preset)
    return existing
  if preset not in configuration.PRESETS:
    raise ValueError(f"Unknown preset {preset!r}; expected one of {sorted(configuration.PRESETS)}")
  return configuration.PRESETS[preset]()


def make_train_functions(strategy, state: train_state.TrainState, config: configuration.Config,
                         element_spec=None, objective: str = "cross_entropy",
                         scst: Optional[self_critical.Objective] = None):
  """The compiled training functions: (train_step, train_loop).

  `scst`: phase 3's objective (with objective "scst"); its metrics (self_critical.METRICS) are
  in train_step's dict under their names.

  train_step(batch, votes [2]) -> dict of scalars: one step on a batch the host holds (the
    summaries read it); increments the global step. `votes` (save, stop) are summed across all
    replicas with the token count, so every worker of a multi-worker run takes the same
    decisions without an extra collective.
  train_loop(iterator, num_steps) -> bool: `num_steps` steps reading the distributed iterator
    inside one tf.function (a tf.range loop, no host sync); False if any loss or gradient norm
    was not finite. Same ops and batches as num_steps train_step calls, so the same losses.
  """
  model, optimizer, step = state.model, state.optimizer, state.step
  # The concept head's loss (concept_head.py), beside the caption loss; 0: the original's step.
  # The "concepts" objective trains the head (and Inception, in phase 2) on it alone.
  concepts_only = objective == "concepts"
  # Self-critical training leaves the concept head as it is (its reward does not reach it).
  concept_weight = config.model.concept_loss_weight if scst is None else 0.0
  global_batch = config.input.batch_size  # Training batches are whole (drop_remainder).
  clip = config.training.clip_gradients
  decay = config.training.inception_weight_decay if model.train_inception else 0.0
  scaled = isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)

  # The caption loss does not reach the concept head (its probabilities enter the LSTM through a
  # stop_gradient): with concept_loss_weight 0 the head is left as it is, e.g. as the concept
  # pretraining (--objective=concepts) left it.
  head = set(id(v) for v in model.concept_head.trainable_variables) if (
      model.concept_head is not None and not concept_weight) else set()
  caption_variables = [v for v in model.trainable_variables if id(v) not in head]
  # With concept_loss_weight > 0, the head's variables have their own optimizer (see
  # train_state.needs_concept_optimizer) and their gradient is clipped on its own.
  concept_optimizer = state.concept_optimizer
  own = set(id(v) for v in model.concept_head.trainable_variables) if (
      concept_optimizer is not None and not concepts_only) else set()

  def objective_losses(batch, model_inputs, num_tokens, with_greedy):
    """([the objective's loss, the concept loss if added], the total to minimise without L2,
    [SCST's metrics]), as this replica's shares of the global batch's means."""
    if scst is not None:
      loss, metrics = scst.losses(model, batch, model_inputs, step, with_greedy)
      return [loss], loss, metrics
    if concepts_only:
      loss = _concept_loss(model.concept_logits(model_inputs, training=True), batch, global_batch)
      return [loss], loss, []
    if concept_weight:
      logits, concept_logits = model.caption_and_concept_logits(model_inputs, training=True)
    else:
      logits = model(model_inputs, training=True)
    token_losses = model.token_losses(logits, batch["target_seqs"], batch["input_mask"])
    # This replica's share of the global batch's mean token loss.
    batch_loss = tf.reduce_sum(token_losses) / num_tokens
    if not concept_weight:
      return [batch_loss], batch_loss, []
    concept_loss = _concept_loss(concept_logits, batch, global_batch)
    return [batch_loss, concept_loss], batch_loss + concept_weight * concept_loss, []

  def replica_step(batch, votes, with_greedy):
    context = tf.distribute.get_replica_context()
    mask = tf.cast(batch["input_mask"], tf.float32)
    totals = context.all_reduce(_SUM, tf.concat([[tf.reduce_sum(mask)], votes], 0))
    variables = model.concept_variables() if concepts_only else caption_variables
    with tf.GradientTape() as tape:
      # Images, or on feature records (phase 1 only) Inception's cached features.
      image_key = "images" if "images" in batch else "image_features"
      model_inputs = {image_key: batch[image_key], "input_seqs": batch["input_seqs"]}
      losses, total_loss, metrics = objective_losses(batch, model_inputs, totals[0],
                                                     with_greedy)
      if decay:
        total_loss += optimization.inception_l2_loss(model, decay) / context.num_replicas_in_sync
      loss = optimizer.get_scaled_loss(total_loss) if scaled else total_loss
    grads = tape.gradient(loss, variables)
    if scaled:
      grads = optimizer.get_unscaled_gradients(grads)
    grads = context.all_reduce(_SUM, grads)
    grad_norm = tf.linalg.global_norm(grads)
    groups = [(optimizer, [(g, v) for g, v in zip(grads, variables) if id(v) not in own])]
    if own:
      groups.append((concept_optimizer,
                     [(g, v) for g, v in zip(grads, variables) if id(v) in own]))
    for group_optimizer, pairs in groups:
      group_grads = [g for g, _ in pairs]
      if clip > 0:
        group_grads, _ = tf.clip_by_global_norm(
            group_grads, clip, use_norm=grad_norm if not own else None)
      group_optimizer.apply_gradients(zip(group_grads, [v for _, v in pairs]),
                                      experimental_aggregate_gradients=False)
    # (SCST's metrics ride along with the losses: summed over replicas, their global means.)
    return (tf.stack(losses + [total_loss] + metrics),
            tf.concat([[grad_norm], totals[1:]], 0))

  def run_step(batch, votes, with_greedy=False):
    losses, replicated = strategy.run(replica_step, args=(batch, votes, with_greedy))
    losses = strategy.reduce(_SUM, losses, axis=None)
    replicated = strategy.experimental_local_results(replicated)[0]
    step.assign_add(1)
    return losses, replicated

  def train_step(batch, votes):
    learning_rate = tf.cast(state.lr_fn(step), tf.float32)
    losses, replicated = run_step(batch, votes, with_greedy=True)
    out = {"batch_loss": losses[0], "grad_norm": replicated[0],
           "votes": replicated[1:], "learning_rate": learning_rate}
    if scst is not None:
      out["total_loss"] = losses[1]
      out.update(zip(self_critical.METRICS, tf.unstack(losses[2:])))
      return out
    out["total_loss"] = losses[-1]
    if losses.shape[0] > 2:  # The concept loss beside the caption loss.
      out["concept_loss"] = losses[1]
    return out

  def train_loop(iterator, num_steps):
    finite = tf.constant(True)
    no_votes = tf.zeros([2])
    for _ in tf.range(num_steps):
      losses, replicated = run_step(next(iterator), no_votes)
      # With fp16 loss scaling an overflowing step is expected: the optimizer skips it.
      step_finite = tf.math.is_finite(losses[0]) & (
          tf.math.is_finite(replicated[0]) | tf.constant(scaled))
      finite = finite & step_finite
    return finite

  signature = None
  if element_spec is not None:
    signature = [element_spec, tf.TensorSpec([2], tf.float32)]
  return tf.function(train_step, input_signature=signature), tf.function(train_loop)


def _concept_loss(concept_logits, batch, global_batch: int) -> tf.Tensor:
  """This replica's share of the global batch's mean (per image) concept loss."""
  return tf.reduce_sum(concept_head.concept_losses(
      concept_logits, batch["concept_targets"])) / global_batch


@contextlib.contextmanager
def _stop_on_sigterm():
  """Yields a one-element list that becomes [True] on SIGTERM (graceful stop with a save)."""
  requested = [False]
  if threading.current_thread() is not threading.main_thread():
    yield requested
    return

  def handler(signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint and stopping.")
    requested[0] = True

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield requested
  finally:
    signal.signal(signal.SIGTERM, previous)


def _validate(options: TrainOptions) -> None:
  if options.strategy not in cluster.STRATEGIES:
    raise ValueError(f"Unknown strategy {options.strategy!r}; expected one of "
                     f"{cluster.STRATEGIES}")
  if options.mixed_precision not in MIXED_PRECISION_POLICIES:
    raise ValueError(f"Unknown mixed_precision {options.mixed_precision!r}; expected one of "
                     f"{sorted(MIXED_PRECISION_POLICIES)}")
  if options.log_every_n_steps < 1 or options.number_of_steps < 0:
    raise ValueError("log_every_n_steps must be >= 1 and number_of_steps >= 0")
  if options.steps_per_loop < 0:
    raise ValueError(f"steps_per_loop must be >= 0 (0: automatic), not {options.steps_per_loop}")
  if not options.train_dir:
    raise ValueError("train_dir is required")
  if options.objective not in train_options.OBJECTIVES:
    raise ValueError(f"Unknown objective {options.objective!r}; expected one of "
                     f"{train_options.OBJECTIVES}")


def train(config: configuration.Config, options: TrainOptions) -> TrainResult:
  """Trains until the global step reaches options.number_of_steps (or SIGTERM); see the module."""
  _validate(options)
  # Config errors are reported before anything is written (a phase-2 typo fails in phase 1).
  optimization.check_optimizer_names(config.training)
  show_and_tell_model.check_config(config.model)
  train_state.check_inception_source(config, options)
  train_state.check_vocabulary_fits(config, options)
  train_state.check_objective(config, options)
  concept_table = train_state.concept_table(config, options)
  reward_data = (train_state.scst_reward_data(config, options) if options.objective == "scst"
                 else None)
  # Feature records or image records, read once from the first record.
  features = feature_cache.feature_shape(options.input_file_pattern)
  train_state.check_feature_records(options, features)
  resume = (checkpoint_files.resume_prefix(options.train_dir, options.resume_from)
            if options.resume_from else None)
  # MultiWorkerMirroredStrategy must exist before TensorFlow runs anything else.
  strategy = cluster.make_strategy(options.strategy, options.devices)
  cluster.check_accelerators(strategy, options.require_accelerator)
  previous_policy = tf.keras.mixed_precision.global_policy()
  policy = MIXED_PRECISION_POLICIES[options.mixed_precision]
  if policy:
    tf.keras.mixed_precision.set_global_policy(policy)
  try:
    return _train(strategy, config, options, features, concept_table, reward_data, resume)
  except tf.errors.UnavailableError as e:
    lost = cluster.lost_contact(strategy, e)
    if lost is None:
      raise
    raise lost from e
  finally:
    tf.keras.mixed_precision.set_global_policy(previous_policy)


def steps_per_loop(options: TrainOptions) -> int:
  """options.steps_per_loop, or for 0 the automatic choice (see TrainOptions)."""
  if options.steps_per_loop:
    return options.steps_per_loop
  accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
  return ACCELERATOR_STEPS_PER_LOOP if accelerators else 1


def _loop_size(step: int, options: TrainOptions, save_steps: int, first: bool) -> int:
  """Steps in the next loop: steps_per_loop, cut at number_of_steps and at the next multiple of
  save_checkpoint_steps (checkpoints stay at exact steps); a run's first loop is one step."""
  n = 1 if first else steps_per_loop(options)
  n = min(n, options.number_of_steps - step)
  if save_steps:
    n = min(n, save_steps - step % save_steps)
  return n


def _train(strategy, config: configuration.Config, options: TrainOptions,
           features: Optional[feature_cache.FeatureShape],
           concept_table: Optional[Sequence[int]],
           reward_data: Optional[cider_reward.RewardData] = None,
           resume: Optional[str] = None) -> TrainResult:
  """Trains holding train_dir's lease (the chief; see cluster.take_lease), released at the
  end; from the checkpoint `resume` (--resume_from), made train_dir's latest, if given."""
  prepare = None
  if resume is not None:

    def prepare():
      checkpoint_files.make_latest(resume, time.time())

  held = cluster.take_lease(strategy, options.train_dir, prepare)
  try:
    return _train_held(strategy, config, options, features, concept_table, held, reward_data)
  finally:
    if held is not None:
      held.release()


def _train_held(strategy, config: configuration.Config, options: TrainOptions,
                features: Optional[feature_cache.FeatureShape],
                concept_table: Optional[Sequence[int]],
                held: Optional[lease.Lease],
                reward_data: Optional[cider_reward.RewardData]) -> TrainResult:
  if options.seed is not None:
    tf.keras.utils.set_random_seed(options.seed)
  this = cluster.task(strategy)
  is_chief, task_id, num_workers = this.is_chief, this.task_id, this.num_workers
  global_batch = config.input.batch_size
  if global_batch % strategy.num_replicas_in_sync:
    raise ValueError(f"batch_size {global_batch} is not divisible by the "
                     f"{strategy.num_replicas_in_sync} replicas")
  if is_chief:
    configuration.save_config(config, options.train_dir)
    if reward_data is not None:
      cider_reward.write_cache(reward_data)
  # Other workers write their (required) copies of each checkpoint to a temporary directory.
  checkpoint_dir = options.train_dir if is_chief else tempfile.mkdtemp(
      prefix=f"im2txt_worker{task_id}_")
  pattern, source = options.input_file_pattern, train_state.config_source(options.train_dir)

  skipped = inputs.count_skipped_records(pattern, features) if options.skip_bad_images else 0
  seed = train_state.input_seed(options.seed, train_state.restored_step(options.train_dir))
  lookup = scst = None
  if reward_data is not None:
    lookup = cider_reward.ReferenceLookup(reward_data)
    scst = self_critical.Objective(
        cider_reward.CiderD.from_data(reward_data), reward_data.end_code - 1,
        options.scst_samples, options.scst_baseline, config.inference.max_caption_length,
        options.seed or 0, global_batch)
  dataset = strategy.distribute_datasets_from_function(
      lambda context: inputs.make_dataset(
          pattern, config, is_training=True, batch_size=global_batch, input_context=context,
          skip_bad_images=options.skip_bad_images, seed=seed, features=features,
          concept_table=concept_table, references=lookup))
  iterator = iter(dataset)
  state = train_state.build(strategy, config, options, global_batch, checkpoint_dir, features)
  with strategy.scope():
    train_step, train_loop = make_train_functions(strategy, state, config,
                                                  iterator.element_spec, options.objective, scst)
  model, step = state.model, state.step

  start_step = int(step.numpy())
  result = TrainResult(start_step=start_step, global_step=start_step, first_loss=math.nan,
                       last_loss=math.nan, skipped_records=skipped,
                       last_checkpoint=state.restored)
  summaries = training_summaries.TrainingSummaries(
      options.train_dir if is_chief else None, config.training, global_batch,
      options.number_of_steps, options.log_every_n_steps)
  phase = ("phase 2 (Inception fine-tuned)" if options.train_inception else
           "phase 1 (Inception frozen)")
  if scst is not None:
    phase = (f"phase 3, self-critical (CIDEr-D reward of {options.scst_samples} samples per "
             f"image, {options.scst_baseline} baseline, Inception "
             f"{'fine-tuned' if options.train_inception else 'frozen'})")
  if options.objective == "concepts":
    phase = ("the concept head and Inception on the concept loss" if options.train_inception
             else "the concept head on the concept loss (Inception frozen)")
  logging.info("Training %s from step %d to %d on %d replica(s), global batch %d, %d steps "
               "per loop.", phase, start_step, options.number_of_steps,
               strategy.num_replicas_in_sync, global_batch, steps_per_loop(options))

  def diverged(what: str) -> FloatingPointError:
    return FloatingPointError(
        f"Step {int(step.numpy())}: {what}; training stopped without saving. The last good "
        f"checkpoint is {result.last_checkpoint}. Try a lower learning rate.")

  def save():
    # A finite loss can still come with an update that overflowed: never save such weights.
    if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.trainable_variables):
      raise diverged("the weights are no longer finite")
    if held is not None:
      held.check()  # Another trainer took train_dir over: do not write over its checkpoints.
    needed = checkpoint_files.checkpoint_bytes(
        result.last_checkpoint, model.variables + state.optimizer.variables() + (
            state.concept_optimizer.variables() if state.concept_optimizer else []))
    result.last_checkpoint = checkpoint_files.save(state.manager, int(step.numpy()), needed,
                                                   result.last_checkpoint)
    return time.time()

  def run_loop(n: int, want_save: bool, want_stop: bool):
    """n - 1 fused steps, then one on a batch the host holds (the summaries read it), which
    carries this worker's votes to save and to stop."""
    try:
      if n > 1 and not bool(train_loop(iterator, tf.constant(n - 1))):
        raise diverged(f"a loss or gradient norm was not finite within the last {n} steps")
      batch = next(iterator)
    except tf.errors.InvalidArgumentError as e:
      raise (reward_data is not None and inputs.references_error(e, reward_data.source)
             or inputs.input_error(e, pattern, config.model.vocab_size, source)) from e
    except tf.errors.DataLossError as e:
      found = inputs.corrupt_shard_error(e, pattern)
      raise inputs.BadInputError(
          f"{found}\nTraining stopped at step {int(step.numpy())} without saving; the last "
          f"checkpoint, {result.last_checkpoint}, is intact: rerun the same command once the "
          "files are whole, and training resumes from it.") from e
    out = train_step(batch, tf.constant([float(want_save), float(want_stop)]))
    return batch, {k: v.numpy() for k, v in out.items()}

  step_value, last_save_step, last_save_time = start_step, start_step, time.time()
  loops, steady_mark = 0, None
  save_secs = config.training.save_checkpoint_secs
  save_steps = config.training.save_checkpoint_steps
  try:
    with _stop_on_sigterm() as stop_requested:
      while step_value < options.number_of_steps:
        n = _loop_size(step_value, options, save_steps, first=step_value == start_step)
        want_save = bool(save_secs) and time.time() - last_save_time >= save_secs
        batch, out = run_loop(n, want_save, stop_requested[0])
        step_value += n
        loss = float(out["batch_loss"])
        if not math.isfinite(loss) or not (math.isfinite(float(out["grad_norm"]))
                                           or options.mixed_precision == "fp16"):
          raise diverged(f"the loss is {loss} (gradient norm {out['grad_norm']})")
        loops += 1
        if math.isnan(result.first_loss):
          result.first_loss = loss
        if loops == 2:
          steady_mark = (time.time(), step_value)
        elif loops > 2:
          result.steady_steps_per_sec = (step_value - steady_mark[1]) / max(
              1e-9, time.time() - steady_mark[0])
        result.last_loss, result.global_step = loss, step_value
        summaries.after_loop(step_value, out, batch, strategy)
        stop = out["votes"][1] > 0
        if (save_steps and step_value % save_steps == 0) or out["votes"][0] > 0 or stop:
          last_save_time, last_save_step = save(), step_value
        if stop:
          result.stopped_by_signal = True
          break
    if step_value != last_save_step or result.last_checkpoint is None:
      # (A fresh run of 0 steps saves its initial state: e.g. a random Inception, calibrated,
      # for the feature job to compute phase 1's features with.)
      save()
  except KeyboardInterrupt:
    # A lone worker cannot save a multi-worker checkpoint (the others would not join in); a step
    # interrupted before its loss was checked is not saved.
    if step_value != last_save_step and step_value == int(step.numpy()) and num_workers == 1:
      save()
      logging.warning("Interrupted: saved %s", result.last_checkpoint)
    raise
  finally:
    summaries.close()
    if not is_chief:
      shutil.rmtree(checkpoint_dir, ignore_errors=True)
  logging.info("Stopped at step %d; last checkpoint %s", step_value, result.last_checkpoint)
  return result
