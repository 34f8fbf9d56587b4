"""What one training run is asked to do: train.py fills TrainOptions from its flags (same names).

In a module of its own so that the trainer (training/trainer.py) and its state
(training/train_state.py) both read it without importing each other.
"""

import dataclasses
from typing import Optional, Sequence

# TrainOptions.steps_per_loop=0 on a machine with GPUs or TPUs.
ACCELERATOR_STEPS_PER_LOOP = 20
# What a run optimises: "cross_entropy", the captions' next-word loss (with the concept head's
# loss beside it when the model has one); "concepts", the concept head's loss alone, a
# pretraining of a random Inception from the captions' words (the analogue of the original's
# ImageNet pretraining; the decoder is left as it is); "scst", self-critical sequence training
# (phase 3, training/self_critical.py): the CIDEr-D of sampled captions, continuing a train_dir
# trained with cross-entropy.
OBJECTIVES = ("cross_entropy", "concepts", "scst")


@dataclasses.dataclass
class TrainOptions:
  """One training run; train.py fills it from its flags (same names)."""

  # Comma-separated glob patterns of the training TFRecord shards.
  input_file_pattern: str
  # Directory of the checkpoints, config.json and TensorBoard events.
  train_dir: str
  # Phase 2: fine-tune InceptionV3 too (otherwise it is frozen).
  train_inception: bool = False
  # One of OBJECTIVES.
  objective: str = "cross_entropy"
  # --objective=scst: captions sampled per image, and their baseline: "mean" (of the image's
  # other samples; Luo 2020) or "greedy" (the greedy caption's reward; Rennie et al. 2017).
  scst_samples: int = 5
  scst_baseline: str = "mean"
  # --objective=scst: the training split's references (build_mscoco_data's
  # {split}_references.json); empty: the one beside the input shards, named after their split.
  references_file: str = ""
  # Global step at which training stops (a total, not a count for this run).
  number_of_steps: int = 1000000
  # A checkpoint of train_dir ("ckpt-N", or its path) to continue from instead of the latest:
  # the intact one before a corrupt latest, or an earlier one to roll back to. Newer checkpoints
  # are moved into train_dir/set_aside/ (checkpoint_files.make_latest); empty: the latest.
  resume_from: str = ""
  # A progress line is logged every this many steps.
  log_every_n_steps: int = 1
  # Inception's initial weights, used only when train_dir has no checkpoint yet: a TF-slim
  # InceptionV3 checkpoint (the original's inception_v3.ckpt), a Keras no-top `.h5` weights file,
  # or train_state.RANDOM_INCEPTION; empty: random only if training.allow_random_inception.
  inception_checkpoint_file: str = ""
  # "mirrored" (all local GPUs, or the CPU), "multi_worker" (TF_CONFIG) or "default" (none).
  strategy: str = "mirrored"
  # Devices of the mirrored strategy (None: all local GPUs, or the CPU); tests use logical CPUs.
  devices: Optional[Sequence[str]] = None
  # Stop with an error when TensorFlow sees no GPU or TPU (cluster jobs: a node whose CUDA
  # libraries did not load would otherwise train on its CPU, ~100x slower, and say so only in a
  # warning).
  require_accelerator: bool = False
  # "none", "bf16" or "fp16" (GPUs; fp16 uses dynamic loss scaling).
  mixed_precision: str = "none"
  # Skip records whose image does not decode (counted and reported first) instead of stopping.
  skip_bad_images: bool = False
  # Seeds the initialisation, the input order and the distortions (reproducible runs).
  seed: Optional[int] = None
  # Training steps run inside one tf.function call, with no host sync between them: on an
  # accelerator a step takes milliseconds and per-step Python and device syncs would decide the
  # speed. Logs, summaries, checkpoints, the NaN check and SIGTERM act between loops. The first
  # loop of a run is one step (its loss is first_loss; it also pays for tracing). 0: automatic,
  # ACCELERATOR_STEPS_PER_LOOP with GPUs or TPUs, else 1 (measured on a 2-core CPU, where a step
  # takes ~100 ms: 50 fused steps ran at 0.89x the speed of single steps).
  steps_per_loop: int = 0
