"""Typed configuration for the Show and Tell model, its training, evaluation and inference.

Defaults are the original im2txt's (tensorflow/models research/im2txt/configuration.py).
`small_config()` is the preset for tests and the embedded sample dataset: small images, a tiny
LSTM and few steps, so the whole flow runs on a 2-core CPU in minutes.

The trainer writes the resolved `Config` as `train_dir/config.json`; the evaluator and
run_inference read it back so they rebuild exactly the model that was trained.
"""

import dataclasses
import json
import os
from typing import Any, Dict

import tensorflow as tf

from im2txt import file_io
CONFIG_FILENAME = "config.json"


@dataclasses.dataclass
class ModelConfig:
  """The model and the shape of its inputs."""

  # Number of word ids the model predicts over; the vocabulary file plus <UNK> must fit in it.
  vocab_size: int = 12000
  # Height and width of the image fed to InceptionV3 (299 is its native size; 75 is Keras' minimum).
  image_height: int = 299
  image_width: int = 299
  # Images are resized to this before the (random or central) crop to image_height x image_width.
  resize_height: int = 346
  resize_width: int = 346
  # The original's random colour distortions (brightness, saturation, hue, contrast) in training.
  distort_colors: bool = True
  # Size of the image and word embeddings (the LSTM's input size).
  embedding_size: int = 512
  # Number of units in the LSTM cell.
  num_lstm_units: int = 512
  # Keep probability of the dropout on the LSTM's inputs and outputs while training.
  lstm_dropout_keep_prob: float = 0.7
  # Keep probability of the dropout on Inception's pooled output while Inception is trained.
  inception_dropout_keep_prob: float = 0.8
  # Momentum of the moving statistics of Inception's batch norms (Keras' InceptionV3 default;
  # the original's slim Inception used 0.9997). They are updated only in phase 2 (and by the
  # one-off calibration of a randomly initialised Inception before phase 1). The small
  # preset uses 0.9: there Adam changes a random Inception fast, and with 0.99 the moving
  # statistics lag its weights for a few hundred steps, wrecking the checkpoints' captions.
  inception_batch_norm_momentum: float = 0.99
  # Batch norm on the image embedding (not in the original). The small preset uses it: a randomly
  # initialised Inception's pooled features share a large common component that otherwise stalls
  # the decoder's training.
  image_embedding_batch_norm: bool = False
  # Scale of the uniform initializer of every variable not loaded from a checkpoint.
  initializer_scale: float = 0.08
  # Visual concepts (not in the original; im2txt/concepts.py, im2txt/model/concept_head.py): a
  # sigmoid head on Inception's pooled features predicts which concept words (concepts.txt,
  # written by the Beam job) an image's captions name. Outputs of the head (>= the lines of
  # concepts.txt, as vocab_size is to word_counts.txt); 0: no head, the original's model.
  num_concepts: int = 0
  # Weight of the head's multi-label loss (summed over concepts, averaged over images) beside
  # the caption loss; 0 leaves the head as it is (e.g. as `train --objective=concepts`, which
  # trains it on that loss alone, left it). Above 0 the head is updated by an optimizer of its
  # own, the concept pretraining's (train_state.needs_concept_optimizer).
  concept_loss_weight: float = 0.0
  # How the predicted concept probabilities reach the LSTM (Yao et al.'s LSTM-A): "none", "start"
  # (projected and added to the image embedding, the LSTM's first input) or "every_step"
  # (projected and added to every input, the image embedding and each word). The caption loss
  # does not train the head through them: the probabilities stay the head's own.
  concept_input: str = "none"
  # The head's targets in training: "image", 1 for each concept any of the image's captions names
  # (the records' image/concept_ids); or "caption", 1 for each concept of the record's own
  # caption, so that over an image's records the target of a concept is the fraction of its
  # captions naming it (words every caption names, such as the object, keep 1; words a caption
  # adds now and then, such as "picture", weigh less). The evaluator's concept metrics always
  # use "image".
  concept_targets: str = "image"


@dataclasses.dataclass
class InputConfig:
  """The tf.data input pipeline."""

  # Examples per batch (global batch, split across replicas by the distribution strategy).
  batch_size: int = 32
  # Approximate examples per TFRecord shard; with the capacity factor it sizes the shuffle buffer.
  values_per_input_shard: int = 2300
  # The shuffle buffer holds this many shards' worth of examples (original: 2 -> 4,600).
  input_queue_capacity_factor: int = 2
  # Number of shards read in parallel by the interleave.
  num_parallel_reads: int = 4
  # Records whose caption has more tokens than this (with <S> and </S>) are skipped, as the Beam
  # job drops them (a truncated caption would teach a wrong ending); 0 keeps every caption.
  max_caption_tokens: int = 0

  @property
  def shuffle_buffer_size(self) -> int:
    return self.values_per_input_shard * self.input_queue_capacity_factor


@dataclasses.dataclass
class TrainingConfig:
  """The optimiser and its schedule, for both phases."""

  # Number of examples in one epoch of the training split (MSCOCO train + 85% of val, x5 captions).
  num_examples_per_epoch: int = 586363
  # Phase 1's optimizer: "SGD" (the original's) or "Adam".
  optimizer: str = "SGD"
  # Phase 1 learning rate, halved every num_epochs_per_decay epochs (staircase).
  initial_learning_rate: float = 2.0
  # Multiplier applied to the learning rate at each decay.
  learning_rate_decay_factor: float = 0.5
  # Epochs between learning-rate decays.
  num_epochs_per_decay: float = 8.0
  # Phase 2's optimizer, when Inception is trained too: "SGD" (the original's) or "Adam" (which
  # trains a randomly initialised Inception much faster, e.g. on the sample dataset).
  train_inception_optimizer: str = "SGD"
  # Constant learning rate of phase 2.
  train_inception_learning_rate: float = 0.0005
  # Phase 3, self-critical training (train --objective=scst; im2txt/training/self_critical.py):
  # its optimizer and constant learning rate, self-critical.pytorch's for its FC model (Adam at
  # 5e-5, configs/fc_rl.yml).
  scst_optimizer: str = "Adam"
  scst_learning_rate: float = 0.00005
  # Gradients are clipped to this global norm (0 disables clipping).
  clip_gradients: float = 5.0
  # L2 weight decay on Inception's weights in phase 2 (slim's inception_v3 arg scope).
  inception_weight_decay: float = 0.00004
  # A fresh run without --inception_checkpoint_file starts Inception from random weights (True)
  # or stops with an error (False: a forgotten flag must not cost days of accelerator time on a
  # random encoder). --inception_checkpoint_file=random asks for random weights either way.
  allow_random_inception: bool = False
  # Number of checkpoints kept by the CheckpointManager.
  max_checkpoints_to_keep: int = 5
  # A checkpoint is written every this many steps, and at the end of training.
  save_checkpoint_steps: int = 1000
  # ... and also whenever this many seconds have passed since the last one (0 disables).
  save_checkpoint_secs: int = 600
  # TensorBoard scalars are written every this many steps (between training loops).
  summary_every_n_steps: int = 10
  # Input images and the caption-length histogram are written every this many seconds (and at a
  # run's first summary; 0: only then), as the original wrote its summaries every 600 s.
  image_summary_secs: int = 600


@dataclasses.dataclass
class EvalConfig:
  """The concurrent evaluator."""

  # Seconds between looks for a new checkpoint.
  eval_interval_secs: int = 600
  # Number of val examples over which perplexity is computed (the original's val split: 10,132).
  num_eval_examples: int = 10132
  # Checkpoints below this global step are skipped.
  min_global_step: int = 5000
  # Examples per evaluation batch.
  batch_size: int = 32
  # Number of val images captioned with beam search and scored with the COCO caption metrics.
  num_caption_images: int = 500
  # Number of images whose generated and reference captions are shown in TensorBoard's text tab.
  num_text_summary_images: int = 8


@dataclasses.dataclass
class InferenceConfig:
  """Beam search captioning."""

  # Number of captions kept at every step, and returned.
  beam_size: int = 3
  # Maximum caption length in ids, <S> included (max_caption_length - 1 decoding steps).
  max_caption_length: int = 20
  # Complete captions are ranked by logprob / length**factor (0: plain log-probability).
  length_normalization_factor: float = 0.0
  # Images captioned together in one compiled beam search.
  batch_size: int = 32


@dataclasses.dataclass
class Config:
  """Everything a run needs; saved next to the checkpoints as config.json."""

  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  input: InputConfig = dataclasses.field(default_factory=InputConfig)
  training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)


def default_config() -> Config:
  """The original im2txt's configuration (MSCOCO, InceptionV3 at 299, LSTM 512)."""
  return Config()


def small_config() -> Config:
  """A tiny preset for tests and the embedded sample dataset, sized for a 2-core CPU."""
  return Config(
      model=ModelConfig(
          # The sample dataset's vocabulary has a few dozen words.
          vocab_size=64,
          # Keras' smallest InceptionV3 input: ~16x cheaper than 299.
          image_height=75,
          image_width=75,
          resize_height=80,
          resize_width=80,
          # The sample dataset's encoder starts from random weights: it is not invariant to
          # colour distortions (they move one image's features further than the distance
          # between two images) ...
          distort_colors=False,
          embedding_size=128,
          num_lstm_units=128,
          # ... and its pooled features share a large common component: normalised, the
          # decoder learns colours in phase 1 (measured: 71-80% right after 600 steps, none
          # without).
          image_embedding_batch_norm=True,
          # No dropout on the LSTM's inputs (the image embedding is the first) and outputs, or
          # on Inception's features: with a random encoder it drowns the shape signal phase 2
          # trains Inception on (measured, 500 phase-2 steps: right shape 44% with the
          # original's dropout, 70% without); this decoder is too small to overfit 1,500 images.
          lstm_dropout_keep_prob=1.0,
          inception_dropout_keep_prob=1.0,
          # Measured, 100 phase-2 steps in: right colour 99% with 0.9, 20% with 0.99 (after
          # 500 steps both ~70% right shape).
          inception_batch_norm_momentum=0.9,
          # The concept head (Yao et al.'s LSTM-A), on: a random encoder learns the shapes from
          # the concept loss, not from the caption loss (bench_shape_signal, 1,000 steps: the head
          # 55-75% right shape, the decoder at chance without the concept probabilities at its
          # first input, 45% with them). 32 outputs hold the sample dataset's 20 concepts; a
          # bigger concepts.txt is an error asking for more. "caption" targets: 53.7% against
          # 42.3% for "image" (held-out right shape after 1,000 steps). Its loss is added with
          # weight 1 in both phases, the head updated by its own optimizer (Adam at phase 2's
          # rate; train_state.needs_concept_optimizer). The demo pretrains it on its loss alone
          # (train --objective=concepts) and then leaves it as it is (weight 0).
          num_concepts=32,
          concept_loss_weight=1.0,
          concept_input="start",
          concept_targets="caption",
      ),
      input=InputConfig(
          batch_size=32,
          # Sample shards hold a few hundred examples each.
          values_per_input_shard=500,
          num_parallel_reads=2,
      ),
      training=TrainingConfig(
          # Sample train split: ~300 images x 5 captions.
          num_examples_per_epoch=1500,
          num_epochs_per_decay=20.0,
          # Phase 2 trains the random Inception to tell the shapes apart: Adam does it in a few
          # hundred steps (the original's SGD at 0.0005 would take far longer).
          train_inception_optimizer="Adam",
          train_inception_learning_rate=0.0003,
          # The sample dataset has no pretrained Inception: it starts random, by default.
          allow_random_inception=True,
          save_checkpoint_steps=200,
          save_checkpoint_secs=0,
          summary_every_n_steps=10,
      ),
      eval=EvalConfig(
          eval_interval_secs=5,
          num_eval_examples=500,
          min_global_step=0,
          num_caption_images=100,
          num_text_summary_images=8,
      ),
      inference=InferenceConfig(batch_size=32),
  )


PRESETS = {"default": default_config, "small": small_config}


def without_concept_head(model: ModelConfig) -> ModelConfig:
  """`model` without the concept head: the original's decoder (e.g. the small preset's, for
  data without concepts.txt)."""
  return dataclasses.replace(model, num_concepts=0, concept_loss_weight=0.0,
                             concept_input="none", concept_targets="image")


def config_to_dict(config: Config) -> Dict[str, Any]:
  return dataclasses.asdict(config)


def config_from_dict(data: Dict[str, Any], source: str = "<dict>") -> Config:
  """Builds a Config from nested dicts; an unknown section or key is an error naming it."""
  sections = {f.name: f.type for f in dataclasses.fields(Config)}
  kwargs = {}
  for section, values in data.items():
    if section not in sections:
      raise ValueError(f"{source}: unknown config section {section!r}; "
                       f"expected one of {sorted(sections)}")
    section_cls = {f.name: f for f in dataclasses.fields(Config)}[section].default_factory
    known = {f.name for f in dataclasses.fields(section_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"{source}: unknown key(s) {unknown} in config section {section!r}")
    kwargs[section] = section_cls(**values)
  return Config(**kwargs)


def save_config(config: Config, directory: str) -> str:
  """Writes `directory/config.json` atomically (temp file + rename); returns its path."""
  path = os.path.join(directory, CONFIG_FILENAME)
  file_io.write_json(path, config_to_dict(config))
  return path


def load_config(path: str) -> Config:
  """Reads a config.json file, or `config.json` inside a directory."""
  if tf.io.gfile.isdir(path):
    path = os.path.join(path, CONFIG_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"No configuration file at {path} (the trainer writes config.json "
                            "next to its checkpoints)")
  with tf.io.gfile.GFile(path, "r") as f:
    try:
      data = json.loads(f.read())
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON: {e}") from e
  return config_from_dict(data, source=path)
