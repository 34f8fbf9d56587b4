r"""Evaluates the trainer's checkpoints as they appear: perplexity and COCO caption metrics.

Runs beside training, in its own process (on CPU while training uses the GPU):

  CUDA_VISIBLE_DEVICES="" python -m im2txt.evaluate \
      --input_file_pattern="${DATA}/val-?????-of-00004" \
      --checkpoint_dir="${MODEL}/train" --eval_dir="${MODEL}/eval" \
      --vocab_file="${DATA}/word_counts.txt"

`tensorboard --logdir="${MODEL}"` then shows training and evaluation side by side. Without
--once the evaluator waits for new checkpoints until --number_of_steps has been evaluated,
--max_wait_secs pass without a new checkpoint, or SIGTERM/SIGINT (exit code 0). With --once it
evaluates the latest checkpoint and exits (exit code 1 if that fails).

The model's configuration comes from checkpoint_dir/config.json; the eval flags below override
its `eval` section when given (without them the config's values apply: the original's 600 s,
10,132 examples and step 5,000 for the default configuration).
"""

import signal
import threading

from absl import app
from absl import flags
from absl import logging

from im2txt import console
from im2txt.evaluation import checkpoint_evaluator
from im2txt.evaluation import evaluation_loop

FLAGS = flags.FLAGS

flags.DEFINE_string("input_file_pattern", "", "File pattern of the val split's TFRecord files "
                    "(comma-separated globs).")
flags.DEFINE_string("checkpoint_dir", "", "Directory of the trainer's checkpoints (its "
                    "--train_dir, with config.json).")
flags.DEFINE_string("eval_dir", "", "Directory to write the evaluation summaries to.")
flags.DEFINE_integer("eval_interval_secs", 600, "Seconds between looks for a new checkpoint "
                     "(overrides config.json's eval.eval_interval_secs when given).")
flags.DEFINE_integer("num_eval_examples", 10132, "Number of val examples for the perplexity "
                     "(overrides config.json's eval.num_eval_examples when given).")
flags.DEFINE_integer("min_global_step", 5000, "Checkpoints below this global step are skipped "
                     "(overrides config.json's eval.min_global_step when given).")
flags.DEFINE_string("vocab_file", "", "word_counts.txt of the data set; without it the caption "
                    "metrics (BLEU, METEOR, ROUGE-L, CIDEr) are off.")
flags.DEFINE_integer("num_caption_images", None, "Number of val images captioned for the "
                     "caption metrics (default: config.json's eval.num_caption_images; 0: off).")
flags.DEFINE_boolean("once", False, "Evaluate the latest checkpoint (whatever its step) and "
                     "exit; the exit code is 1 if that fails.")
flags.DEFINE_integer("number_of_steps", 0, "Exit after evaluating a checkpoint at or past this "
                     "global step (the trainer's --number_of_steps); 0: keep waiting.")
flags.DEFINE_float("max_wait_secs", 0, "Exit after this many seconds without a new checkpoint "
                   "to evaluate; 0: wait forever.")

_EVAL_OVERRIDE_FLAGS = ("eval_interval_secs", "num_eval_examples", "min_global_step",
                        "num_caption_images")


def _install_stop_handlers() -> threading.Event:
  """SIGTERM/SIGINT ask the evaluator to stop cleanly; a second one stops it at once."""
  stop = threading.Event()

  def handle(signum, unused_frame):
    if stop.is_set():
      raise KeyboardInterrupt()
    logging.info("Received %s: stopping (the current evaluation is abandoned)",
                 signal.Signals(signum).name)
    stop.set()

  signal.signal(signal.SIGTERM, handle)
  signal.signal(signal.SIGINT, handle)
  return stop


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for name in ("input_file_pattern", "checkpoint_dir", "eval_dir"):
    if not FLAGS[name].value:
      raise app.UsageError(f"--{name} is required")
  overrides = {name: FLAGS[name].value for name in _EVAL_OVERRIDE_FLAGS
               if FLAGS[name].present and FLAGS[name].value is not None}
  options = evaluation_loop.LoopOptions(once=FLAGS.once, number_of_steps=FLAGS.number_of_steps,
                                        max_wait_secs=FLAGS.max_wait_secs)
  stop = _install_stop_handlers()
  try:
    evaluation_loop.run_evaluation_loop(
        FLAGS.checkpoint_dir, FLAGS.eval_dir, FLAGS.input_file_pattern,
        vocab_file=FLAGS.vocab_file or None, eval_overrides=overrides, options=options,
        stop_event=stop)
  except (checkpoint_evaluator.EvaluationError, FileNotFoundError, ValueError, RuntimeError) as e:
    logging.error("%s", e)
    return 1
  return 0


def run():
  """The `im2txt-evaluate` console script (and `python -m im2txt.evaluate`)."""
  console.run(main, __name__)


if __name__ == "__main__":
  run()
