r"""The demo's learning curve: held-out accuracy against phase-2 steps, measured in one run.

  python -m bench.bench_demo_curve --phase2_steps=1800 --checkpoint_every=300 --seed=0

Runs the demo (demo/run_demo.py: sample data, Beam job, phase 1 on cached features, phase 2 on
the images with the evaluator alongside) with a longer phase 2 and every checkpoint kept, then
captions the held-out test-split images with each phase-2 checkpoint and scores them as the
demo does (the caption names the image's colour and shape). It also captions the first
--train_images training images, to tell a model that memorises its training images from one
that learns nothing. The baseline is the last phase-1 checkpoint (phase-2 step 0), scored the
same way: each row's ratio is against it. Phase 2's speed (steps/s, from the training log's
ETA lines) converts steps into minutes on this machine.
"""

import io
import os
import re
import tempfile

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from beam_jobs import make_sample_dataset as sample
from demo import run_demo
from im2txt import configuration
from im2txt.inference import captioning

flags.DEFINE_string("output_dir", "", "Where the demo writes (default: a temporary folder).")
flags.DEFINE_integer("phase2_steps", 1800, "Phase-2 steps after the demo's phase 1.")
flags.DEFINE_integer("checkpoint_every", 300, "Steps between the scored checkpoints.")
flags.DEFINE_integer("seed", 0, "The sample generator's and the trainer's seed.")
flags.DEFINE_integer("train_images", 120, "Training images captioned per checkpoint.")
FLAGS = flags.FLAGS


def _captions(checkpoint: str, vocab_file: str, images) -> dict:
  """{absolute path: best caption} of `images` by `checkpoint`, as run_inference writes them."""
  out = io.StringIO()
  config = configuration.load_config(os.path.dirname(checkpoint))
  captioning.caption_files(checkpoint, vocab_file, ",".join(img.path for img in images),
                           config.inference, output_format="json", out=out, err=io.StringIO())
  return {path: caption for path, (caption, _) in run_demo.parse_captions(out.getvalue()).items()}


def _phase2_speed(log_path: str) -> float:
  """The mean steps/s of the training log's progress lines."""
  with open(log_path) as f:
    speeds = [float(s) for s in re.findall(r"\(([\d.]+) steps/s", f.read())]
  return sum(speeds) / len(speeds) if speeds else float("nan")


def _checkpoints(train_dir: str, first_step: int):
  """(step, prefix) of train_dir's checkpoints from `first_step` on, in step order."""
  state = tf.train.get_checkpoint_state(train_dir)
  steps = sorted((int(path.rsplit("-", 1)[1]), path) for path in state.all_model_checkpoint_paths)
  return [(step, path) for step, path in steps if step >= first_step]


def main(argv):
  del argv
  output_dir = FLAGS.output_dir or tempfile.mkdtemp(prefix="bench_demo_curve_")
  # The demo's recipe before concept pretraining (README's curve): 1,500 images, 600 phase-1
  # steps, then phase 2.
  options = run_demo.DemoOptions(output_dir=output_dir, phase2_steps=FLAGS.phase2_steps,
                                 seed=FLAGS.seed, checkpoint_every=FLAGS.checkpoint_every,
                                 num_train_images=1500, concept_steps=0, phase1_steps=600)
  # Every checkpoint kept.
  options.keep_checkpoints = ((options.phase1_steps + options.phase2_steps)
                              // FLAGS.checkpoint_every + 3)
  result = run_demo.run_demo(options)
  out = os.path.abspath(output_dir)
  train_dir = os.path.join(out, "model", "train")
  vocab_file = os.path.join(out, "data", "word_counts.txt")
  dataset = sample.dataset_in(os.path.join(out, "sample"))
  test_images = sample.split_images(dataset, "test")
  train_images = sample.split_images(dataset, "train")[:FLAGS.train_images]
  speed = _phase2_speed(os.path.join(out, "logs", "train_phase2.log"))

  logging.set_verbosity(logging.WARNING)  # Not a line per checkpoint naming every file.
  rows = []
  for step, checkpoint in _checkpoints(train_dir, options.phase1_steps):
    phase2_step = step - options.phase1_steps
    held_out = run_demo.caption_accuracy(test_images,
                                         _captions(checkpoint, vocab_file, test_images))
    seen = run_demo.caption_accuracy(train_images,
                                     _captions(checkpoint, vocab_file, train_images))
    rows.append((phase2_step, held_out, seen))

  last = rows[-1][1]
  if abs(last.fraction(last.correct) - result.accuracy) > 1e-9:
    raise RuntimeError(f"the last checkpoint scored {last.fraction(last.correct):.3f} here but "
                       f"{result.accuracy:.3f} in the demo's report")
  base = rows[0][1].fraction(rows[0][1].correct)
  print(f"\nThe demo's learning curve (seed {FLAGS.seed}; {len(test_images)} held-out images, "
        f"{len(train_images)} training images; phase 2 at {speed:.2f} steps/s beside the "
        "evaluator; chance: colour and shape 3.3%, shape 20%)")
  print("phase-2 steps | minutes at that speed | held-out colour+shape | colour | shape | x step 0 | "
        "training images: shape")
  for phase2_step, held_out, seen in rows:
    accuracy = held_out.fraction(held_out.correct)
    print(f"{phase2_step:13d} | {phase2_step / speed / 60:21.1f} | {accuracy:21.1%} | "
          f"{held_out.fraction(held_out.colours):6.1%} | {held_out.fraction(held_out.shapes):5.1%}"
          f" | {accuracy / base if base else float('nan'):8.2f} | "
          f"{seen.fraction(seen.shapes):.1%}")


if __name__ == "__main__":
  app.run(main)
