"""The trainer's state: built, restored from train_dir, or started with Inception's weights.

    state = train_state.build(strategy, config, options, global_batch, checkpoint_dir, features)
    state.model, state.step, state.optimizer, state.manager  # state.restored: the checkpoint

A run on a train_dir with a checkpoint restores its model, global step and (when it matches the
phase's optimizer) optimizer state, so the same command continues where it stopped. A fresh run
initialises InceptionV3 from `--inception_checkpoint_file` (TF-slim's inception_v3.ckpt or a
Keras .h5), or, asked for with `random` (or by the small preset), from random weights whose
batch-norm statistics are calibrated on training images. Everything that can be checked before
anything is written (the weights file, the data's vocabulary) is checked by the `check_`
functions, which train() calls first.
"""

import dataclasses
import os
from typing import Callable, List, Optional

from absl import logging
import tensorflow as tf

from im2txt import checkpoint_files
from im2txt import concepts
from im2txt import configuration
from im2txt import file_io
from im2txt import references
from im2txt import sequence_example
from im2txt import vocabulary
from im2txt.data import feature_cache
from im2txt.data import inputs
from im2txt.model import show_and_tell_model
from im2txt.model import slim_inception
from im2txt.training import cider_reward
from im2txt.training import optimization
from im2txt.training import train_options

# --inception_checkpoint_file value asking for a randomly initialised Inception.
RANDOM_INCEPTION = "random"
# The vocabulary file the Beam job writes beside the shards.
VOCAB_FILENAME = "word_counts.txt"
# Number of training images on which a random Inception's batch-norm statistics are calibrated.
_CALIBRATION_IMAGES = 64


@dataclasses.dataclass
class TrainState:
  """What a training run updates and checkpoints (built inside the strategy's scope)."""
  model: show_and_tell_model.ShowAndTellModel
  step: tf.Variable  # The global step, checkpointed.
  lr_fn: Callable[[tf.Tensor], tf.Tensor]  # global step -> learning rate.
  optimizer: tf.keras.optimizers.legacy.Optimizer
  checkpoint: tf.train.Checkpoint
  manager: tf.train.CheckpointManager
  restored: Optional[str]  # The checkpoint this run started from (None: a fresh run).
  # The concept head's own optimizer when its loss is added to the caption loss (see
  # concept_optimizer); None otherwise.
  concept_optimizer: Optional[tf.keras.optimizers.legacy.Optimizer] = None


def needs_concept_optimizer(config: configuration.Config, options: train_options.TrainOptions
                            ) -> bool:
  """Whether the concept head learns beside the captions (concept_loss_weight > 0), with an
  optimizer of its own: the concept pretraining's (training.train_inception_optimizer at
  train_inception_learning_rate), in either phase. The phase's optimizer does not suit it:
  phase 1's SGD at the original's 2.0 blows its logits up (measured on the sample: concept loss
  111 after 10 steps, 180 after 400), and clipped with the caption gradient its large gradient
  slowed the captions. Not with fp16 loss scaling, whose optimizer then updates it."""
  return (bool(config.model.num_concepts) and config.model.concept_loss_weight > 0
          and options.objective == "cross_entropy" and options.mixed_precision != "fp16")


def config_source(train_dir: str) -> str:
  """Where the run's configuration is, for messages."""
  return f"{train_dir}/{configuration.CONFIG_FILENAME}"


def check_inception_source(config: configuration.Config,
                           options: train_options.TrainOptions) -> None:
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


def check_vocabulary_fits(config: configuration.Config,
                          options: train_options.TrainOptions) -> None:
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
        f"configuration, {config_source(options.train_dir)} or --config_file): its records "
        f"hold caption ids the model cannot predict. Set model.vocab_size to at least {size}.")


def check_objective(config: configuration.Config, options: train_options.TrainOptions) -> None:
  """The concept objective needs a concept head; self-critical training a model trained with
  cross-entropy and sensible sampling options."""
  if options.objective == "scst":
    if not tf.train.latest_checkpoint(options.train_dir):
      raise ValueError(
          f"--objective=scst continues a model trained with cross-entropy, but "
          f"{options.train_dir} has no checkpoint: train phase 1 (and phase 2, "
          "--train_inception) in this train_dir first, then run SCST on it")
    if options.scst_baseline not in ("mean", "greedy"):
      raise ValueError(f"Unknown --scst_baseline {options.scst_baseline!r}; expected mean "
                       "or greedy")
    if options.scst_samples < (2 if options.scst_baseline == "mean" else 1):
      raise ValueError(f"--scst_samples={options.scst_samples}: the {options.scst_baseline} "
                       "baseline needs at least "
                       f"{2 if options.scst_baseline == 'mean' else 1} samples per image")
  if options.objective == "concepts" and not config.model.num_concepts:
    raise ValueError(
        "--objective=concepts trains the concept head, but the model has none "
        f"(model.num_concepts is 0 in {config_source(options.train_dir)} or --config_file): "
        "set model.num_concepts to at least the lines of the data's concepts.txt")


def concept_table(config: configuration.Config,
                  options: train_options.TrainOptions) -> Optional[List[int]]:
  """Where a concept head's targets come from: None when they are the records' image/concept_ids
  (the Beam job's, or no concept head), else the table word id -> concept id (or -1) that makes
  them from each record's own caption (model.concept_targets "caption", or records of the
  original builder), from the concepts.txt and word_counts.txt beside the shards. Checked before
  anything is written."""
  if not config.model.num_concepts:
    return None
  files = file_io.expand_patterns(options.input_file_pattern, "--input_file_pattern")
  folder = os.path.dirname(files[0])
  concepts_file = os.path.join(folder, concepts.CONCEPTS_FILENAME)
  found = tf.io.gfile.exists(concepts_file)
  if found:
    size = len(concepts.ConceptVocabulary.from_file(concepts_file))
    if size > config.model.num_concepts:
      raise ValueError(
          f"{concepts_file} (beside the input shards) has {size} concepts, more than the "
          f"model's concept head predicts (model.num_concepts {config.model.num_concepts} in "
          f"{config_source(options.train_dir)} or --config_file). Set model.num_concepts to at "
          f"least {size}.")
  per_caption = config.model.concept_targets == "caption"
  vocab_file = os.path.join(folder, VOCAB_FILENAME)
  if not per_caption:
    record = feature_cache.first_record_in(files)
    if record is None or sequence_example.has_concept_ids(record):
      return None
    if not found or not tf.io.gfile.exists(vocab_file):
      raise ValueError(
          f"{files[0]}: its records carry no {sequence_example.CONCEPT_IDS_FEATURE} and there is "
          f"no {concepts.CONCEPTS_FILENAME} with {VOCAB_FILENAME} beside them, but the model has "
          "a concept head (model.num_concepts): rebuild the data with build_mscoco_data (it "
          "writes both), or set model.num_concepts to 0")
    logging.info("The records of %s carry no %s (written by the original builder?): each one's "
                 "concept targets are the concepts of its own caption (%s)",
                 options.input_file_pattern, sequence_example.CONCEPT_IDS_FEATURE, concepts_file)
  else:
    if not found or not tf.io.gfile.exists(vocab_file):
      raise ValueError(
          f"model.concept_targets is 'caption' (in {config_source(options.train_dir)} or "
          f"--config_file): the concept words of each record's caption come from the "
          f"{concepts.CONCEPTS_FILENAME} and {VOCAB_FILENAME} beside the shards, but {folder} "
          "lacks one of them (build_mscoco_data writes both)")
    logging.info("Concept targets: the concepts of each record's own caption "
                 "(model.concept_targets=caption; %s)", concepts_file)
  table = concepts.ConceptVocabulary.from_file(concepts_file).word_to_concept_table(
      vocabulary.Vocabulary.from_file(vocab_file))
  return table + [-1] * (config.model.vocab_size - len(table))


def scst_reward_data(config: configuration.Config, options: train_options.TrainOptions
                     ) -> cider_reward.RewardData:
  """The training references and their CIDEr-D document frequencies (cached in train_dir), for
  --objective=scst: --references_file, else the {split}_references.json beside the shards."""
  first_shard = file_io.expand_patterns(options.input_file_pattern, "--input_file_pattern")[0]
  folder = os.path.dirname(first_shard)
  path = options.references_file or references.beside_shards(first_shard)
  if not path or not tf.io.gfile.exists(path):
    where = (f"--references_file {path}" if options.references_file else
             f"{path} (beside the input shards)" if path else
             f"a references file beside {first_shard}, whose name gives no split")
    raise ValueError(
        f"--objective=scst scores sampled captions against all the references of their image, "
        f"but there is no {where}. build_mscoco_data writes {{split}}_references.json beside "
        "its shards; records of the original im2txt's builder have none: rebuild the data with "
        "build_mscoco_data (or pass --references_file), or train them with "
        "--objective=cross_entropy")
  vocab_file = os.path.join(folder, VOCAB_FILENAME)
  if not tf.io.gfile.exists(vocab_file):
    raise ValueError(f"--objective=scst needs the {VOCAB_FILENAME} beside the input shards "
                     f"(to read the references' words): {folder} has none")
  return cider_reward.load(path, vocab_file, config.model.vocab_size, options.train_dir)


def check_feature_records(options: train_options.TrainOptions,
                          features: Optional[feature_cache.FeatureShape]) -> None:
  """Feature records (cached Inception features, feature_cache; `features` is their shape,
  None for image records) train phase 1 only, from Inception weights that can match the ones
  that computed them (build() checks they do)."""
  if features is None:
    return
  if options.train_inception:
    raise ValueError(
        f"{options.input_file_pattern}: feature records (cached Inception features) cannot "
        "train phase 2, which fine-tunes Inception on the images: give --input_file_pattern the "
        "image records build_mscoco_data wrote (phase 2 continues from phase 1's checkpoint)")
  if (not tf.train.latest_checkpoint(options.train_dir)
      and options.inception_checkpoint_file in ("", RANDOM_INCEPTION)):
    raise ValueError(
        f"{options.input_file_pattern}: feature records, but {options.train_dir} has no "
        "checkpoint and no --inception_checkpoint_file was given: phase 1 on cached features "
        "starts from the Inception that computed them. Pass the feature job's "
        "--inception_checkpoint_file, or start from the train_dir its --train_dir named.")


def input_seed(seed: Optional[int], restored_step: int) -> Optional[int]:
  """The input pipeline's seed: `seed` with the restored global step folded in, so that a
  restarted run reads a new order instead of replaying the first run's (and a fresh run's order
  is `seed`'s)."""
  if seed is None:
    return None
  return (seed + restored_step * 1_000_003) % (2 ** 31 - 1)


def restored_step(train_dir: str) -> int:
  """The global step of train_dir's latest checkpoint (0 without one), read from the file."""
  latest = tf.train.latest_checkpoint(train_dir)
  if not latest:
    return 0
  return int(tf.train.load_checkpoint(latest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def synchronized_batch_norm(options: train_options.TrainOptions,
                            strategy: tf.distribute.Strategy) -> bool:
  """Phase 2 on several replicas normalises Inception's activations over the global batch, not
  each replica's share (4 images of the original's 32 on 8 GPUs). One replica keeps the fused
  kernel, whose moving variance uses the unbiased n/(n-1) estimate (the synchronised one the
  biased; the difference is 1/n, n >= 8*8*batch values per channel)."""
  return options.train_inception and strategy.num_replicas_in_sync > 1


def build(strategy: tf.distribute.Strategy, config: configuration.Config,
          options: train_options.TrainOptions, global_batch: int, checkpoint_dir: str,
          features: Optional[feature_cache.FeatureShape]) -> TrainState:
  """The model, global step, optimizer and checkpoint manager, restored or initialised;
  `features`: the shape of the input's feature records (None for image records)."""
  with strategy.scope():
    model = show_and_tell_model.ShowAndTellModel(config.model, options.train_inception)
    model.build_all()
    if synchronized_batch_norm(options, strategy):
      model.synchronize_inception_batch_norm()
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    scst = options.objective == "scst"
    lr_fn = optimization.learning_rate_fn(config.training, global_batch, options.train_inception,
                                          scst)
    optimizer = optimization.make_optimizer(config.training, options.train_inception,
                                            optimization.GlobalStepSchedule(lr_fn, step), scst)
    if options.mixed_precision == "fp16":
      optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    concept_optimizer = None
    tracked = dict(step=step, model=model, optimizer=optimizer)
    if needs_concept_optimizer(config, options):
      concept_optimizer = optimization.make_optimizer(
          config.training, True, config.training.train_inception_learning_rate)
      tracked["concept_optimizer"] = concept_optimizer
    checkpoint = tf.train.Checkpoint(**tracked)
    manager = tf.train.CheckpointManager(
        checkpoint, checkpoint_dir, max_to_keep=config.training.max_checkpoints_to_keep)
    restored = _restore(model, step, optimizer, options, concept_optimizer)
    if restored is None:
      _initialise_inception(model, config, options, global_batch, features)
    if features is not None:
      feature_cache.check_model(model, features)
  return TrainState(model, step, lr_fn, optimizer, checkpoint, manager, restored,
                    concept_optimizer)


def _initialise_inception(model, config, options: train_options.TrainOptions, global_batch: int,
                          features: Optional[feature_cache.FeatureShape]) -> None:
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
                                seed=options.seed if options.seed is not None else 0,
                                features=features)
  images = inputs.next_batch(iter(dataset), options.input_file_pattern, config.model.vocab_size,
                             config_source(options.train_dir))["images"]
  model.calibrate_inception_batch_norm(images)
  logging.warning("Inception starts from random weights (--inception_checkpoint_file=%s); its "
                  "batch-norm statistics were calibrated on %d training images.",
                  options.inception_checkpoint_file or "<none>", images.shape[0])


def _restore(model, step, optimizer, options: train_options.TrainOptions,
             concept_optimizer=None) -> Optional[str]:
  """Restores train_dir's last checkpoint and returns its path; None when there is none."""
  latest = tf.train.latest_checkpoint(options.train_dir)
  if not latest:
    return None
  # The model must match exactly; the optimizer (SGD: its iteration count) may differ, e.g. when
  # the mixed-precision setting changes between phases.
  # An optimizer is restored together with the model: its slots (Adam's moments) are created on
  # its first update and restored then, found through their variables' places in the
  # checkpoint, which a restore of the optimizer alone does not know (they would start at zero
  # while the iteration count, restored, carries on).
  try:
    tracked = dict(step=step, model=model)
    if _optimizer_state_matches(optimizer, latest):
      tracked["optimizer"] = optimizer
    else:
      # E.g. phase 2 with Adam after phase 1 with SGD: Adam starts afresh (iteration 0, so its
      # bias correction holds the first steps to the learning rate), not at SGD's count.
      logging.info("%s holds no Adam state (an earlier phase used SGD): Adam starts afresh",
                   latest)
    status = tf.train.Checkpoint(**tracked).restore(latest)
    status.assert_existing_objects_matched().expect_partial()
    if concept_optimizer is not None:
      # Its state, when an earlier run of the same kind saved one (else it starts afresh).
      tf.train.Checkpoint(model=model, concept_optimizer=concept_optimizer).restore(
          latest).expect_partial()
  except checkpoint_files.READ_ERRORS as e:
    raise checkpoint_files.corrupt_checkpoint_error(latest, e, for_trainer=True) from e
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
