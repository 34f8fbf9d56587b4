r"""Self-critical training (phase 3) against continued cross-entropy, for the same wall time.

  python -m bench.bench_scst --demo_dir=out/demo --minutes=4

From the demo's final checkpoint (demo/run_demo.py; run here first when --demo_dir is empty),
two copies train for the same wall time on the demo's cached features (Inception frozen, as the
demo's last phase and self-critical.pytorch's FC model): one continues the demo's
cross-entropy phase (the baseline), the other runs `train --objective=scst`. Each stops on
SIGTERM (the trainer saves and exits), so the time includes start-up and tracing for both. Then
both final checkpoints (and the demo's, "start") caption held-out images with beam search, as
the demo does, and are scored with score_captions (CIDEr and BLEU-4 of the COCO evaluation) and
the demo's colour-and-shape accuracy: the demo's 60 test-split images, and --fresh_images new
images of the same generator (another seed; never trained on), for a less noisy accuracy. The
SCST row's ratios are against the cross-entropy row.

It also times the CIDEr-D reward alone on a batch of the run's shape (32 images x 5 samples of
19 words against their references) against SCST's measured step time.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from beam_jobs import make_sample_dataset as sample
from demo import run_demo
from im2txt import configuration
from im2txt.training import cider_reward

flags.DEFINE_string("demo_dir", "", "A finished demo's output folder (default: run the demo "
                    "into a temporary folder first).")
flags.DEFINE_float("minutes", 4.0, "Wall time of each arm.")
flags.DEFINE_float("scst_learning_rate", 0.0,
                   "Overrides the configuration's training.scst_learning_rate (0: keep it).")
flags.DEFINE_string("scst_baseline", "mean", "--scst_baseline of the SCST arm.")
flags.DEFINE_integer("seed", 0, "The trainers' seed.")
flags.DEFINE_integer("fresh_images", 300, "New held-out images generated for the scores.")
FLAGS = flags.FLAGS


def _arm(demo: str, name: str, out: str, extra, minutes: float, scst_rate: float):
  """Trains a copy of the demo's train_dir for `minutes`, stopped by SIGTERM; returns
  (train_dir, steps run, steps/s of its progress lines)."""
  train_dir = os.path.join(out, name)
  source = os.path.join(demo, "model", "train")
  latest = tf.train.latest_checkpoint(source)
  os.makedirs(train_dir)
  for path in tf.io.gfile.glob(latest + ".*"):
    shutil.copy(path, train_dir)
  with open(os.path.join(train_dir, "checkpoint"), "w") as f:
    f.write(f'model_checkpoint_path: "{os.path.basename(latest)}"\n')
  config = configuration.load_config(source)
  config.training.save_checkpoint_steps = 0  # One save, at SIGTERM, for both arms.
  if scst_rate:
    config.training.scst_learning_rate = scst_rate
  configuration.save_config(config, train_dir)
  start_step = int(latest.rsplit("-", 1)[1])
  log_path = os.path.join(out, f"{name}.log")
  command = [sys.executable, "-m", "im2txt.train", f"--train_dir={train_dir}",
             f"--input_file_pattern={demo}/features/train-*", "--log_every_n_steps=50",
             f"--seed={FLAGS.seed}", "--number_of_steps=100000000", *extra]
  with open(log_path, "w") as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=run_demo._env(), cwd=run_demo.REPO_ROOT)  # pylint: disable=protected-access
    time.sleep(minutes * 60)
    process.send_signal(signal.SIGTERM)
    if process.wait(timeout=300) != 0:
      raise RuntimeError(f"{name}: the trainer failed; see {log_path}")
  with open(log_path) as f:
    text = f.read()
  speeds = [float(s) for s in re.findall(r"\(([\d.]+) steps/s", text)][1:]  # Past tracing.
  steps = int(tf.train.latest_checkpoint(train_dir).rsplit("-", 1)[1]) - start_step
  return train_dir, steps, (sum(speeds) / len(speeds) if speeds else float("nan")), text


def _labelled(captions_file: str, image_dir: str):
  """The LabelledImages of a sample captions file."""
  with open(captions_file) as f:
    return [sample.LabelledImage(image["id"], os.path.join(image_dir, image["file_name"]),
                                 sample.Label(image["colour"], image["shape"], image["background"]))
            for image in json.load(f)["images"]]


def _score(demo: str, train_dir: str, out: str, name: str, annotations_file: str,
           image_dir: str, test_images):
  """(CIDEr, BLEU-4, accuracy) of the checkpoint's captions of the held-out images."""
  results = os.path.join(out, f"score_{name}", "results.json")
  subprocess.run([sys.executable, "-m", "im2txt.score_captions", f"--checkpoint_path={train_dir}",
                  f"--vocab_file={demo}/data/word_counts.txt",
                  f"--annotations_file={annotations_file}",
                  f"--image_dir={image_dir}", f"--results_file={results}"],
                 check=True, env=run_demo._env(), cwd=run_demo.REPO_ROOT,  # pylint: disable=protected-access
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  with open(results[:-len(".json")] + ".per_image.json") as f:
    metrics = json.load(f)["metrics"]
  with open(results) as f:
    captions = {r["image_id"]: r["caption"] for r in json.load(f)}
  accuracy = run_demo.caption_accuracy(
      test_images, {img.path: captions[img.image_id] for img in test_images})
  return metrics["CIDEr"], metrics["BLEU-4"], accuracy.fraction(accuracy.correct)


def _reward_seconds(demo: str, train_dir: str) -> float:
  """Seconds of one CIDEr-D reward of 32 images x 5 samples of 19 words (compiled, warm)."""
  data = cider_reward.load(f"{demo}/features/train_references.json",
                           f"{demo}/data/word_counts.txt",
                           configuration.load_config(train_dir).model.vocab_size, train_dir)
  cider = cider_reward.CiderD.from_data(data)
  rng = np.random.default_rng(0)
  rows = rng.choice(len(data.reference_codes), 32)
  refs = [data.reference_codes[r] for r in rows]
  width, count = max(len(x) for r in refs for x in r), max(len(r) for r in refs)
  references = np.zeros([32, count, width], np.int64)
  for i, r in enumerate(refs):
    for j, x in enumerate(r):
      references[i, j, :len(x)] = x
  # Samples: a reference's words with a few changed, ended by </S>, 19 places.
  candidates = np.zeros([32, 5, 19], np.int64)
  for i, r in enumerate(refs):
    for k in range(5):
      words = list(r[k % len(r)][:-1])
      for position in rng.choice(len(words), 2):
        words[position] = rng.choice(data.reference_codes[rng.integers(len(rows))][0])
      candidates[i, k, :len(words) + 1] = (words + [data.end_code])[:19]
  scores = tf.function(cider.scores)
  scores(candidates, references)
  start = time.perf_counter()
  for _ in range(20):
    scores(candidates, references).numpy()
  return (time.perf_counter() - start) / 20


def main(argv):
  del argv
  demo = FLAGS.demo_dir
  if not demo:
    demo = tempfile.mkdtemp(prefix="bench_scst_demo_")
    run_demo.run_demo(run_demo.DemoOptions(output_dir=demo, seed=FLAGS.seed))
  demo = os.path.abspath(demo)
  out = tempfile.mkdtemp(prefix="bench_scst_")
  dataset = sample.dataset_in(os.path.join(demo, "sample"))
  fresh = sample.make_sample_dataset(os.path.join(out, "fresh"), num_train_images=0,
                                     num_val_images=FLAGS.fresh_images, image_size=96,
                                     seed=1000 + FLAGS.seed)
  held_out = [  # (name, annotations file, image folder, images)
      ("test split", f"{demo}/inference/captions_test.json", dataset.val_image_dir,
       sample.split_images(dataset, "test")),
      ("fresh", fresh.val_captions_file, fresh.val_image_dir,
       _labelled(fresh.val_captions_file, fresh.val_image_dir))]

  def scores(train_dir, name):
    return [_score(demo, train_dir, out, f"{name}_{k}", *h[1:]) for k, h in enumerate(held_out)]

  rows = [("start", 0, float("nan"), scores(os.path.join(demo, "model", "train"), "start"))]
  arms = [("cross-entropy", []),
          ("scst", ["--objective=scst", f"--scst_baseline={FLAGS.scst_baseline}"])]
  for name, extra in arms:
    train_dir, steps, speed, _ = _arm(demo, name, out, extra, FLAGS.minutes,
                                      FLAGS.scst_learning_rate)
    rows.append((name, steps, speed, scores(train_dir, name)))
  reward = _reward_seconds(demo, os.path.join(out, "scst"))

  rate = FLAGS.scst_learning_rate or configuration.load_config(
      os.path.join(demo, "model", "train")).training.scst_learning_rate
  print(f"\nSCST against continued cross-entropy, {FLAGS.minutes:g} min each from the demo's "
        f"final checkpoint (seed {FLAGS.seed}; SCST: {FLAGS.scst_baseline} baseline, Adam at "
        f"{rate:g})")
  for k, (where, _, _, images) in enumerate(held_out):
    print(f"{where}: {len(images)} held-out images")
    print("arm           | steps | steps/s | CIDEr | BLEU-4 | colour+shape | CIDEr x XE")
    base = rows[1][3][k][0]
    for name, steps, speed, per_set in rows:
      cider, bleu, accuracy = per_set[k]
      print(f"{name:13s} | {steps:5d} | {speed:7.2f} | {cider:5.3f} | {bleu:6.3f} | "
            f"{accuracy:12.1%} | {cider / base:10.2f}")
  scst_step = 1.0 / rows[2][2]
  print(f"CIDEr-D reward of 32 images x 5 samples: {reward * 1000:.1f} ms, "
        f"{reward / scst_step:.1%} of an SCST step ({scst_step * 1000:.0f} ms)")


if __name__ == "__main__":
  app.run(main)
