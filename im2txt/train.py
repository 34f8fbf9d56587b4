r"""Trains the Show and Tell model (phase 1, phase 2 with --train_inception, phase 3 with
--objective=scst).

  bazel run //im2txt:train -- \
    --input_file_pattern="${DATA}/train-?????-of-00256" \
    --inception_checkpoint_file="${HOME}/inception_v3.ckpt" \
    --train_dir="${MODEL}/train" --number_of_steps=1000000
  # then, on the same train_dir:
  bazel run //im2txt:train -- --input_file_pattern=... --train_dir="${MODEL}/train" \
    --train_inception=true --number_of_steps=3000000
  # and self-critical training on the captions' CIDEr-D (phase 3; see README):
  bazel run //im2txt:train -- --input_file_pattern=... --train_dir="${MODEL}/train" \
    --objective=scst --number_of_steps=...

The configuration is --config_file if given, else train_dir/config.json from an earlier run
(a restart or phase 2 keeps the configuration it was started with), else --preset.
"""

import sys

from absl import flags
from absl import logging

from im2txt import configuration
from im2txt import console
from im2txt.training import cluster
from im2txt.training import train_options
from im2txt.training import trainer

FLAGS = flags.FLAGS

flags.DEFINE_string("input_file_pattern", None,
                    "File pattern(s) of sharded TFRecord input files (comma-separated).")
flags.DEFINE_string("inception_checkpoint_file", "",
                    "Inception's initial weights, read only when train_dir has no checkpoint "
                    "yet: a TF-slim InceptionV3 checkpoint (inception_v3.ckpt, as the original "
                    "im2txt), a Keras no-top .h5 weights file, or 'random' for random weights "
                    "(the default preset requires one of them; the small preset starts random).")
flags.DEFINE_string("train_dir", None, "Directory for checkpoints, config.json and summaries.")
flags.DEFINE_boolean("train_inception", False, "Whether to train the Inception submodel too.")
flags.DEFINE_enum("objective", "cross_entropy", list(train_options.OBJECTIVES),
                  "cross_entropy: the captions' next-word loss (plus the concept head's loss "
                  "when the model has one); concepts: the concept head's loss alone, a "
                  "pretraining of Inception (with --train_inception) from the captions' words; "
                  "scst: phase 3, self-critical sequence training on the CIDEr-D of sampled "
                  "captions, continuing the train_dir's cross-entropy checkpoint.")
flags.DEFINE_integer("scst_samples", 5, "--objective=scst: captions sampled per image.")
flags.DEFINE_enum("scst_baseline", "mean", ["mean", "greedy"],
                  "--objective=scst: the reward's baseline, the mean reward of the image's other "
                  "samples (Luo 2020) or the greedy caption's reward (Rennie et al. 2017).")
flags.DEFINE_string("references_file", "",
                    "--objective=scst: the training split's references (build_mscoco_data's "
                    "{split}_references.json); default: the one beside the input shards.")
flags.DEFINE_integer("number_of_steps", 1000000, "Global step at which training stops.")
flags.DEFINE_string("resume_from", "",
                    "A checkpoint of --train_dir (ckpt-N) to continue from instead of its latest "
                    "(the intact one before a corrupt latest, or an earlier one to roll back "
                    "to); the later checkpoints are moved into train_dir/set_aside/.")
flags.DEFINE_integer("log_every_n_steps", 1, "Frequency at which loss and speed are logged.")
flags.DEFINE_enum("preset", "default", sorted(configuration.PRESETS),
                  "Configuration preset for a new train_dir.")
flags.DEFINE_string("config_file", "",
                    "JSON configuration (as train_dir/config.json); overrides the preset and "
                    "train_dir's config.json.")
flags.DEFINE_enum("strategy", "mirrored", list(cluster.STRATEGIES),
                  "mirrored: all local GPUs (or the CPU); multi_worker: "
                  "MultiWorkerMirroredStrategy configured by TF_CONFIG; default: no strategy.")
flags.DEFINE_boolean("require_accelerator", False,
                     "Stop with an error when TensorFlow sees no GPU or TPU (for cluster jobs; "
                     "without it, training on the CPU is a warning naming the likely cause).")
flags.DEFINE_enum("mixed_precision", "none", sorted(trainer.MIXED_PRECISION_POLICIES),
                  "Mixed precision on GPUs: bf16 or fp16 (with dynamic loss scaling).")
flags.DEFINE_boolean("skip_bad_images", False,
                     "Skip records whose image does not decode (after a scan that counts and "
                     "names them) instead of stopping with an error.")
flags.DEFINE_integer("steps_per_loop", 0,
                     "Training steps run inside one compiled call without a host sync; logs, "
                     "summaries, checkpoints and the NaN check happen between calls. 0: 20 on "
                     "GPUs or TPUs, 1 on CPUs.")
flags.DEFINE_integer("seed", None, "Random seed for reproducible runs (initialisation, input "
                     "order, distortions).")
flags.mark_flags_as_required(["input_file_pattern", "train_dir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  options = trainer.TrainOptions(
      input_file_pattern=FLAGS.input_file_pattern,
      train_dir=FLAGS.train_dir,
      train_inception=FLAGS.train_inception,
      objective=FLAGS.objective,
      scst_samples=FLAGS.scst_samples,
      scst_baseline=FLAGS.scst_baseline,
      references_file=FLAGS.references_file,
      number_of_steps=FLAGS.number_of_steps,
      resume_from=FLAGS.resume_from,
      log_every_n_steps=FLAGS.log_every_n_steps,
      inception_checkpoint_file=FLAGS.inception_checkpoint_file,
      strategy=FLAGS.strategy,
      mixed_precision=FLAGS.mixed_precision,
      require_accelerator=FLAGS.require_accelerator,
      skip_bad_images=FLAGS.skip_bad_images,
      seed=FLAGS.seed,
      steps_per_loop=FLAGS.steps_per_loop)
  # MultiWorkerMirroredStrategy must be created before TensorFlow runs any op; reading the
  # configuration only touches files.
  try:
    config = trainer.resolve_config(FLAGS.train_dir, FLAGS.preset, FLAGS.config_file)
    trainer.train(config, options)
  except (ValueError, OSError) as e:  # Bad flags, config or input, named; a failed save.
    print(f"Error: {e}", file=sys.stderr)
    return 2
  return 0


def run():
  """The `im2txt-train` console script (and `python -m im2txt.train`)."""
  console.run(main, __name__)


if __name__ == "__main__":
  run()
