"""The two-phase Show and Tell trainer (library; `im2txt/train.py` is its command line).

Phase 1 (`train_inception=False`): InceptionV3 frozen and in inference mode, SGD at 2.0 halved
every 8 epochs. Phase 2 (`train_inception=True`, same train_dir): everything fine-tuned at
0.0005 with L2 on Inception's weights; it resumes from phase 1's last checkpoint and global step.
(The defaults are the original's; each phase's optimizer, SGD or Adam, and rate are in the
config's `training` section.)

    options = training.TrainOptions(input_file_pattern="data/train-?????-of-00256",
                                    train_dir="model/train", number_of_steps=1000000)
    result = training.train(configuration.default_config(), options)

`train_dir` holds `ckpt-N` (N = global step, the last `max_checkpoints_to_keep`) with their
`checkpoint` index, each a `tf.train.Checkpoint(step=, model=, optimizer=)`; `config.json`;
and the TensorBoard events. Running the same command again continues from the last checkpoint
with the same step count and learning-rate schedule.

Under a distribution strategy each replica sums its token losses and divides by the number of
real tokens in the *global* batch, so the replicas' losses (and gradients) add up to exactly the
single-device ones; gradients are summed across replicas, then clipped by their global norm.
"""

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Callable, Optional, Sequence

from absl import logging
import tensorflow as tf

from im2txt import configuration
from im2txt import file_io
from im2txt import inputs
from im2txt import show_and_tell_model
from im2txt import slim_inception
from im2txt import training_summaries
from im2txt import vocabulary

STRATEGIES = ("mirrored", "multi_worker", "default")
OPTIMIZERS = ("SGD", "Adam")
MIXED_PRECISION_POLICIES = {"none": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
_SUM = tf.distribute.ReduceOp.SUM
# --inception_checkpoint_file value asking for a randomly initialised Inception.
RANDOM_INCEPTION = "random"
# The vocabulary file the Beam job writes beside the shards.
VOCAB_FILENAME = "word_counts.txt"
# Number of training images on which a random Inception's batch-norm statistics are calibrated.
_CALIBRATION_IMAGES = 64


@dataclasses.dataclass
class TrainOptions:
  """One training run; train.py fills it from its flags (same names)."""

  # Comma-separated glob patterns of the training TFRecord shards.
  input_file_pattern: str
  # Directory of the checkpoints, config.json and TensorBoard events.
  train_dir: str
  # Phase 2: fine-tune InceptionV3 too (otherwise it is frozen).
  train_inception: bool = False
  # Global step at which training stops (a total, not a count for this run).
  number_of_steps: int = 1000000
  # A progress line is logged every this many steps.
  log_every_n_steps: int = 1
  # Inception's initial weights, used only when train_dir has no checkpoint yet: a TF-slim
  # InceptionV3 checkpoint (the original's inception_v3.ckpt), a Keras no-top `.h5` weights file,
  # or RANDOM_INCEPTION; empty: random only if config.training.allow_random_inception.
  inception_checkpoint_file: str = ""
  # "mirrored" (all local GPUs, or the CPU), "multi_worker" (TF_CONFIG) or "default" (none).
  strategy: str = "mirrored"
  # Devices of the mirrored strategy (None: all local GPUs, or the CPU); tests use logical CPUs.
  devices: Optional[Sequence[str]] = None
  # "none", "bf16" or "fp16" (GPUs; fp16 uses dynamic loss scaling).
  mixed_precision: str = "none"
  # Skip records whose image does not decode (counted and reported first) instead of stopping.
  skip_bad_images: bool = False
  # Seeds the initialisation, the input order and the distortions (reproducible runs).
  seed: Optional[int] = None


@dataclasses.dataclass
class TrainResult:
  start_step: int  # Global step this run started from (restored from a checkpoint or 0).
  global_step: int  # Global step reached.
  first_loss: float  # Batch loss of this run's first step (nan if it ran none).
  last_loss: float  # Batch loss of this run's last step.
  stopped_by_signal: bool = False  # SIGTERM: checkpoint saved, stopped before number_of_steps.
  skipped_records: int = 0  # Undecodable records skipped (with skip_bad_images).
  last_checkpoint: Optional[str] = None
  # Steps per second after this run's first step (which also pays for tracing); nan if < 2 steps.
  steady_steps_per_sec: float = math.nan


class BadInputError(ValueError):
  """Input records that cannot be decoded, named."""


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


def learning_rate_fn(config: configuration.TrainingConfig, batch_size: int,
                     train_inception: bool) -> Callable[[tf.Tensor], tf.Tensor]:
  """global step -> learning rate: phase 1's staircase decay, or phase 2's constant."""
  if train_inception:
    rate = config.train_inception_learning_rate
    return lambda step: tf.constant(rate, tf.float32)
  if config.learning_rate_decay_factor > 0:
    batches_per_epoch = config.num_examples_per_epoch / batch_size
    return tf.keras.optimizers.schedules.ExponentialDecay(
        config.initial_learning_rate,
        decay_steps=max(1, int(batches_per_epoch * config.num_epochs_per_decay)),
        decay_rate=config.learning_rate_decay_factor, staircase=True)
  rate = config.initial_learning_rate
  return lambda step: tf.constant(rate, tf.float32)


class _GlobalStepSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
  """The learning rate as a function of the checkpointed global step, not optimizer.iterations."""

  def __init__(self, fn, step: tf.Variable):
    super().__init__()
    self._fn, self._step = fn, step

  def __call__(self, unused_iterations):
    return tf.cast(self._fn(self._step), tf.float32)

  def get_config(self):
    return {}


def make_optimizer(config: configuration.TrainingConfig, train_inception: bool,
                   learning_rate) -> tf.keras.optimizers.legacy.Optimizer:
  """The phase's optimizer (config.optimizer, or config.train_inception_optimizer in phase 2).

  Keras' legacy optimizers: their slot variables (Adam's moments) are created per variable on
  its first update and restored lazily from a checkpoint, so a phase 2 with Adam after a phase 1
  with Adam resumes the decoder's moments and starts Inception's afresh (Keras 2.15's new SGD
  would also make momentum slots, which then would not follow the variables across phases).
  """
  check_optimizer_names(config)
  name = config.train_inception_optimizer if train_inception else config.optimizer
  if name == "SGD":
    return tf.keras.optimizers.legacy.SGD(learning_rate=learning_rate)
  # check_optimizer_names leaves Adam as the only other name.
  return tf.keras.optimizers.legacy.Adam(learning_rate=learning_rate)


def check_optimizer_names(config: configuration.TrainingConfig) -> None:
  """Both phases' optimizers are known: a typo in phase 2's fails when phase 1 starts."""
  for field in ("optimizer", "train_inception_optimizer"):
    name = getattr(config, field)
    if name not in OPTIMIZERS:
      raise ValueError(f"Unknown training.{field} {name!r}; expected one of {OPTIMIZERS}")


def inception_l2_loss(model: show_and_tell_model.ShowAndTellModel,
                      weight_decay: float) -> tf.Tensor:
  """slim's l2_regularizer on every Inception conv kernel: decay * sum(w^2) / 2."""
  kernels = [layer.kernel for layer in model.inception.layers
             if isinstance(layer, tf.keras.layers.Conv2D)]
  return weight_decay * tf.add_n([tf.nn.l2_loss(k) for k in kernels])


def make_strategy(name: str, devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "default":
    return tf.distribute.get_strategy()
  raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}")


def _worker(strategy) -> tuple:
  """(is_chief, task_id, number of workers) of this process; a single machine is the chief."""
  resolver = strategy.cluster_resolver
  if resolver is None or resolver.task_type is None:
    return True, 0, 1
  jobs = resolver.cluster_spec().jobs
  is_chief = resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in jobs)
  num_workers = sum(resolver.cluster_spec().num_tasks(j) for j in jobs if j in ("chief", "worker"))
  return is_chief, resolver.task_id, num_workers


def make_train_step(strategy, model, optimizer, step: tf.Variable, lr_fn,
                    config: configuration.Config, element_spec=None):
  """A compiled step: (distributed batch, votes [2]) -> dict of scalars; increments `step`.

  `votes` (save, stop) are summed across all replicas with the token count, so every worker of
  a multi-worker run takes the same decisions without an extra collective.
  """
  clip = config.training.clip_gradients
  decay = config.training.inception_weight_decay if model.train_inception else 0.0
  scaled = isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)

  def replica_step(batch, votes):
    context = tf.distribute.get_replica_context()
    mask = tf.cast(batch["input_mask"], tf.float32)
    totals = context.all_reduce(_SUM, tf.concat([[tf.reduce_sum(mask)], votes], 0))
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
      logits = model({"images": batch["images"], "input_seqs": batch["input_seqs"]},
                     training=True)
      token_losses = model.token_losses(logits, batch["target_seqs"], batch["input_mask"])
      # This replica's share of the global batch's mean token loss.
      batch_loss = tf.reduce_sum(token_losses) / totals[0]
      total_loss = batch_loss
      if decay:
        total_loss += inception_l2_loss(model, decay) / context.num_replicas_in_sync
      loss = optimizer.get_scaled_loss(total_loss) if scaled else total_loss
    grads = tape.gradient(loss, variables)
    if scaled:
      grads = optimizer.get_unscaled_gradients(grads)
    grads = context.all_reduce(_SUM, grads)
    grad_norm = tf.linalg.global_norm(grads)
    if clip > 0:
      grads, _ = tf.clip_by_global_norm(grads, clip, use_norm=grad_norm)
    optimizer.apply_gradients(zip(grads, variables), experimental_aggregate_gradients=False)
    return tf.stack([batch_loss, total_loss]), tf.concat([[grad_norm], totals[1:]], 0)

  def train_step(batch, votes):
    learning_rate = tf.cast(lr_fn(step), tf.float32)
    losses, replicated = strategy.run(replica_step, args=(batch, votes))
    losses = strategy.reduce(_SUM, losses, axis=None)
    replicated = strategy.experimental_local_results(replicated)[0]
    step.assign_add(1)
    return {"batch_loss": losses[0], "total_loss": losses[1], "grad_norm": replicated[0],
            "votes": replicated[1:], "learning_rate": learning_rate}

  signature = None
  if element_spec is not None:
    signature = [element_spec, tf.TensorSpec([2], tf.float32)]
  return tf.function(train_step, input_signature=signature)


def _bad_input_error(pattern: str, error: tf.errors.InvalidArgumentError) -> Exception:
  logging.error("An input record failed (%s); scanning %s for undecodable records...",
                error.message.splitlines()[0], pattern)
  total, bad, descriptions = inputs.find_undecodable_records(pattern)
  if not bad:
    return error
  more = "\n  ..." if bad > len(descriptions) else ""
  return BadInputError(
      f"{bad} of {total} input records have an image that does not decode:\n  "
      + "\n  ".join(descriptions) + more
      + "\nRemove or rebuild them, or pass --skip_bad_images to skip such records.")


def _next(iterator, pattern: str, config: configuration.Config, train_dir: str):
  try:
    return next(iterator)
  except tf.errors.InvalidArgumentError as e:
    error = inputs.caption_id_error(e, config.model.vocab_size,
                                    f"{train_dir}/{configuration.CONFIG_FILENAME}")
    raise (error or _bad_input_error(pattern, e)) from e


def check_vocabulary_fits(config: configuration.Config, options: TrainOptions) -> None:
  """The data's word_counts.txt (the Beam job writes it beside the shards) has no more words than
  the model predicts; checked before the first step, as its ids would be out of range."""
  first_shard = file_io.expand_patterns(options.input_file_pattern, "--input_file_pattern")[0]
  vocab_file = os.path.join(os.path.dirname(first_shard), VOCAB_FILENAME)
  if not tf.io.gfile.exists(vocab_file):
    return
  size = len(vocabulary.Vocabulary.from_file(vocab_file))
  if size > config.model.vocab_size:
    raise ValueError(
        f"{vocab_file} (beside the input shards) has {size} words with <UNK>, more than the "
        f"model's vocab_size {config.model.vocab_size} (model.vocab_size in the run's "
        f"configuration, {options.train_dir}/{configuration.CONFIG_FILENAME} or "
        f"--config_file): its records hold caption ids the model cannot predict. Set "
        f"model.vocab_size to at least {size}.")


def input_seed(seed: Optional[int], restored_step: int) -> Optional[int]:
  """The input pipeline's seed: `seed` with the restored global step folded in, so that a
  restarted run reads a new order instead of replaying the first run's (and a fresh run's order
  is `seed`'s)."""
  if seed is None:
    return None
  return (seed + restored_step * 1_000_003) % (2 ** 31 - 1)


def _restored_step(train_dir: str) -> int:
  """The global step of train_dir's latest checkpoint (0 without one), read from the file."""
  latest = tf.train.latest_checkpoint(train_dir)
  if not latest:
    return 0
  return int(tf.train.load_checkpoint(latest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def _count_skipped_records(pattern: str) -> int:
  """--skip_bad_images: scans the records once, reports and returns how many will be skipped."""
  total, skipped, descriptions = inputs.find_undecodable_records(pattern)
  if skipped == total:
    raise BadInputError(f"None of the {total} records of {pattern} has an image that decodes:"
                        "\n  " + "\n  ".join(descriptions))
  if skipped:
    logging.warning("--skip_bad_images: %d of %d records will be skipped:\n  %s", skipped, total,
                    "\n  ".join(descriptions))
  return skipped


def check_inception_source(config: configuration.Config, options: TrainOptions) -> None:
  """A fresh run knows where Inception's weights come from, before anything is written."""
  source = options.inception_checkpoint_file
  if source == RANDOM_INCEPTION or tf.train.latest_checkpoint(options.train_dir):
    return
  if not source and not config.training.allow_random_inception:
    raise ValueError(
        f"{options.train_dir} has no checkpoint yet and no --inception_checkpoint_file was given: "
        "training would start from a random InceptionV3. Pass a TF-slim inception_v3.ckpt (as "
        "the original im2txt) or a Keras no-top .h5 weights file, or "
        f"--inception_checkpoint_file={RANDOM_INCEPTION} to start from random weights on purpose.")
  if source:
    slim_inception.weights_file_format(source)  # Its errors name the file and what it lacks.


def _initialise_inception(model, config, options, global_batch: int) -> None:
  """A fresh run's Inception: the weights file, or random weights with calibrated batch norm."""
  if options.inception_checkpoint_file not in ("", RANDOM_INCEPTION):
    model.load_inception_weights(options.inception_checkpoint_file)
    logging.info("Inception weights loaded from %s", options.inception_checkpoint_file)
    return
  # The same images on every worker (seeded), so their Inception statistics agree; at least
  # _CALIBRATION_IMAGES of them, as a channel nearly constant over a small batch would blow up.
  dataset = inputs.make_dataset(options.input_file_pattern, config, is_training=True,
                                batch_size=max(global_batch, _CALIBRATION_IMAGES),
                                skip_bad_images=options.skip_bad_images,
                                seed=options.seed if options.seed is not None else 0)
  images = _next(iter(dataset), options.input_file_pattern, config,
                 options.train_dir)["images"]
  model.calibrate_inception_batch_norm(images)
  logging.warning("Inception starts from random weights (--inception_checkpoint_file=%s); its "
                  "batch-norm statistics were calibrated on %d training images.",
                  options.inception_checkpoint_file or "<none>", images.shape[0])


def _restore_or_initialise(model, step, optimizer, config, options: TrainOptions,
                           global_batch: int) -> Optional[str]:
  """Restores train_dir's last checkpoint (returns its path), or initialises Inception."""
  latest = tf.train.latest_checkpoint(options.train_dir)
  if not latest:
    _initialise_inception(model, config, options, global_batch)
    return None
  # The model must match exactly; the optimizer (SGD: its iteration count) may differ, e.g. when
  # the mixed-precision setting changes between phases.
  status = tf.train.Checkpoint(step=step, model=model).restore(latest)
  status.assert_existing_objects_matched().expect_partial()
  if _optimizer_state_matches(optimizer, latest):
    tf.train.Checkpoint(optimizer=optimizer).restore(latest).expect_partial()
  else:
    # E.g. phase 2 with Adam after phase 1 with SGD: Adam starts afresh (iteration 0, so its
    # bias correction holds the first steps to the learning rate), not at SGD's iteration count.
    logging.info("%s holds no Adam state (an earlier phase used SGD): Adam starts afresh",
                 latest)
  logging.info("Restored %s: global step %d", latest, int(step.numpy()))
  if options.inception_checkpoint_file:
    logging.info("--inception_checkpoint_file ignored: %s already has a checkpoint",
                 options.train_dir)
  return latest


def _optimizer_state_matches(optimizer, checkpoint_path: str) -> bool:
  """False when `optimizer` is Adam and the checkpoint holds no Adam moments (SGD wrote it)."""
  inner = getattr(optimizer, "inner_optimizer", optimizer)  # Under a LossScaleOptimizer.
  if not isinstance(inner, tf.keras.optimizers.legacy.Adam):
    return True
  return any(".OPTIMIZER_SLOT/" in name and "/m/.ATTRIBUTES/" in name
             for name, _ in tf.train.list_variables(checkpoint_path))


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
  if options.strategy not in STRATEGIES:
    raise ValueError(f"Unknown strategy {options.strategy!r}; expected one of {STRATEGIES}")
  if options.mixed_precision not in MIXED_PRECISION_POLICIES:
    raise ValueError(f"Unknown mixed_precision {options.mixed_precision!r}; expected one of "
                     f"{sorted(MIXED_PRECISION_POLICIES)}")
  if options.log_every_n_steps < 1 or options.number_of_steps < 0:
    raise ValueError("log_every_n_steps must be >= 1 and number_of_steps >= 0")
  if not options.train_dir:
    raise ValueError("train_dir is required")


def train(config: configuration.Config, options: TrainOptions) -> TrainResult:
  """Trains until the global step reaches options.number_of_steps (or SIGTERM); see the module."""
  _validate(options)
  # Config errors are reported before anything is written (a phase-2 typo fails in phase 1).
  check_optimizer_names(config.training)
  show_and_tell_model.check_config(config.model)
  check_inception_source(config, options)
  check_vocabulary_fits(config, options)
  # MultiWorkerMirroredStrategy must exist before TensorFlow runs anything else.
  strategy = make_strategy(options.strategy, options.devices)
  previous_policy = tf.keras.mixed_precision.global_policy()
  policy = MIXED_PRECISION_POLICIES[options.mixed_precision]
  if policy:
    tf.keras.mixed_precision.set_global_policy(policy)
  try:
    return _train(strategy, config, options)
  finally:
    tf.keras.mixed_precision.set_global_policy(previous_policy)


def _train(strategy, config: configuration.Config, options: TrainOptions) -> TrainResult:
  if options.seed is not None:
    tf.keras.utils.set_random_seed(options.seed)
  is_chief, task_id, num_workers = _worker(strategy)
  global_batch = config.input.batch_size
  if global_batch % strategy.num_replicas_in_sync:
    raise ValueError(f"batch_size {global_batch} is not divisible by the "
                     f"{strategy.num_replicas_in_sync} replicas")
  if is_chief:
    configuration.save_config(config, options.train_dir)
  # Other workers write their (required) copies of each checkpoint to a temporary directory.
  checkpoint_dir = options.train_dir if is_chief else tempfile.mkdtemp(
      prefix=f"im2txt_worker{task_id}_")

  skipped = _count_skipped_records(options.input_file_pattern) if options.skip_bad_images else 0
  seed = input_seed(options.seed, _restored_step(options.train_dir))
  dataset = strategy.distribute_datasets_from_function(
      lambda context: inputs.make_dataset(
          options.input_file_pattern, config, is_training=True, batch_size=global_batch,
          input_context=context, skip_bad_images=options.skip_bad_images, seed=seed))
  iterator = iter(dataset)

  with strategy.scope():
    model = show_and_tell_model.ShowAndTellModel(config.model, options.train_inception)
    model.build_all()
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    lr_fn = learning_rate_fn(config.training, global_batch, options.train_inception)
    optimizer = make_optimizer(config.training, options.train_inception,
                               _GlobalStepSchedule(lr_fn, step))
    if options.mixed_precision == "fp16":
      optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    checkpoint = tf.train.Checkpoint(step=step, model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(
        checkpoint, checkpoint_dir, max_to_keep=config.training.max_checkpoints_to_keep)
    latest = _restore_or_initialise(model, step, optimizer, config, options, global_batch)
    train_step = make_train_step(strategy, model, optimizer, step, lr_fn, config,
                                 iterator.element_spec)

  start_step = int(step.numpy())
  result = TrainResult(start_step=start_step, global_step=start_step, first_loss=math.nan,
                       last_loss=math.nan, skipped_records=skipped, last_checkpoint=latest)
  summaries = training_summaries.TrainingSummaries(
      options.train_dir if is_chief else None, config.training.summary_every_n_steps,
      global_batch, options.number_of_steps, options.log_every_n_steps)
  logging.info("Training %s from step %d to %d on %d replica(s), global batch %d.",
               "phase 2 (Inception fine-tuned)" if options.train_inception else
               "phase 1 (Inception frozen)", start_step, options.number_of_steps,
               strategy.num_replicas_in_sync, global_batch)

  def save():
    # A finite loss can still come with an update that overflowed: never save such weights.
    if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.trainable_variables):
      raise FloatingPointError(
          f"Step {int(step.numpy())}: the weights are no longer finite; training stopped "
          f"without saving. The last good checkpoint is {result.last_checkpoint}. Try a lower "
          "learning rate.")
    result.last_checkpoint = manager.save(checkpoint_number=int(step.numpy()))
    return time.time()

  step_value, last_save_step, last_save_time = start_step, start_step, time.time()
  save_secs = config.training.save_checkpoint_secs
  save_steps = config.training.save_checkpoint_steps
  try:
    with _stop_on_sigterm() as stop_requested:
      while step_value < options.number_of_steps:
        batch = _next(iterator, options.input_file_pattern, config, options.train_dir)
        want_save = bool(save_secs) and time.time() - last_save_time >= save_secs
        votes = tf.constant([float(want_save), float(stop_requested[0])])
        out = {k: v.numpy() for k, v in train_step(batch, votes).items()}
        step_value += 1
        loss = float(out["batch_loss"])
        if not math.isfinite(loss) or not (math.isfinite(float(out["grad_norm"]))
                                           or options.mixed_precision == "fp16"):
          raise FloatingPointError(
              f"Step {step_value}: the loss is {loss} (gradient norm {out['grad_norm']}); "
              f"training stopped without saving. The last good checkpoint is "
              f"{result.last_checkpoint}. Try a lower learning rate.")
        if math.isnan(result.first_loss):
          result.first_loss, first_step_done = loss, time.time()
        elif step_value > start_step + 1:
          result.steady_steps_per_sec = (step_value - start_step - 1) / max(
              1e-9, time.time() - first_step_done)
        result.last_loss, result.global_step = loss, step_value
        summaries.after_step(step_value, out, batch, strategy)
        stop = out["votes"][1] > 0
        if (save_steps and step_value % save_steps == 0) or out["votes"][0] > 0 or stop:
          last_save_time, last_save_step = save(), step_value
        if stop:
          result.stopped_by_signal = True
          break
    if step_value != last_save_step:
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
