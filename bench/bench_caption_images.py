r"""caption_images (Beam RunInference over the SavedModel) against run_inference, on the same images.

  python -m bench.bench_caption_images --num_images=2000

Makes --num_images sample images (beam_jobs/make_sample_dataset) and a random small-preset
model (its checkpoint, config.json and the sample's vocabulary; exported as a SavedModel), then
times each whole command as a user runs it, start-up included:
  run_inference   --input_files=DIR/*.jpg --output_format=json --output_file=...   (baseline)
  caption_images  --input_patterns=DIR/*.jpg --saved_model_dir=...  (DirectRunner, its default:
                  one worker process per core)
and prints images/s of each and their ratio; then both again on twice the images, which gives
their rates without the start-up (the second half's time), and the job's peak memory of its
whole process tree (driver and workers, sampled every 0.1 s) at both sizes: flat means the job
streams its images. Both captioners run the same beam search (the
checkpoint's beam settings) on the same images; the bench checks that they agree.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags
import psutil
import tensorflow as tf

from beam_jobs import make_sample_dataset as sample
from im2txt import configuration
from im2txt import vocabulary
from im2txt.model import show_and_tell_model

flags.DEFINE_integer("num_images", 2000, "Images of the throughput comparison (the memory run "
                     "adds as many again).")
flags.DEFINE_integer("batch_size", 32, "Images per beam search (both captioners).")
flags.DEFINE_string("work_dir", "", "Where the images and outputs go (default: a temp dir).")
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return env


def _timed(command, log_path):
  """(wall seconds, peak RSS bytes of the process tree) of a command run to completion."""
  peak = [0]
  start = time.time()
  with open(log_path, "w") as log:
    process = subprocess.Popen(command, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                               cwd=REPO)
    done = threading.Event()

    def sample_memory():
      root = psutil.Process(process.pid)
      while not done.is_set():
        try:
          total = sum(p.memory_info().rss for p in [root] + root.children(recursive=True))
          peak[0] = max(peak[0], total)
        except psutil.Error:
          pass
        time.sleep(0.1)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    code = process.wait()
    done.set()
    sampler.join()
  if code != 0:
    with open(log_path) as f:
      raise RuntimeError(f"{command[2]} exited {code}:\n{f.read()[-3000:]}")
  return time.time() - start, peak[0]


def _model(work_dir):
  """A random small-preset model as training leaves it; returns (train_dir, vocab_file)."""
  config = configuration.small_config()
  config.model = configuration.without_concept_head(config.model)
  config.inference = dataclasses.replace(config.inference, batch_size=FLAGS.batch_size)
  tf.keras.utils.set_random_seed(0)
  model = show_and_tell_model.ShowAndTellModel(config.model)
  model.build_all()
  train_dir = os.path.join(work_dir, "train")
  checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(0, dtype=tf.int64))
  tf.train.CheckpointManager(checkpoint, train_dir, max_to_keep=1).save()
  configuration.save_config(config, train_dir)
  words = ["<S>", "</S>"] + sorted(set(sample.COLOURS) | set(sample.SHAPES))
  vocab_file = os.path.join(work_dir, "word_counts.txt")
  vocabulary.write_word_counts(vocab_file, [(w, 100) for w in words])
  return train_dir, vocab_file


def _captions(path, key="file"):
  """{file: best caption} of run_inference's JSON lines or the job's shards."""
  paths = [path] if os.path.isfile(path) else [
      os.path.join(path, n) for n in sorted(os.listdir(path)) if n.startswith("captions-")]
  best = {}
  for p in paths:
    with open(p) as f:
      for line in f.read().splitlines():
        record = json.loads(line)
        best[record[key]] = record["captions"][0]
  return best


def main(argv):
  del argv
  work_dir = FLAGS.work_dir or tempfile.mkdtemp()
  python = sys.executable
  n = FLAGS.num_images
  images = os.path.join(work_dir, "images")
  started = time.time()
  dataset = sample.make_sample_dataset(images, num_train_images=2 * n, num_val_images=0)
  first = sorted(os.listdir(dataset.train_image_dir))[:n]
  half = os.path.join(work_dir, "half")
  os.makedirs(half, exist_ok=True)
  for name in first:
    os.link(os.path.join(dataset.train_image_dir, name), os.path.join(half, name))
  train_dir, vocab_file = _model(work_dir)
  export_dir = os.path.join(work_dir, "export")
  subprocess.run([python, "-m", "im2txt.export_saved_model", f"--checkpoint_path={train_dir}",
                  f"--vocab_file={vocab_file}", f"--export_dir={export_dir}"], env=_env(),
                 cwd=REPO, check=True, capture_output=True)
  print(f"{2 * n:,} sample images, a random small-preset model and its SavedModel in "
        f"{time.time() - started:.0f} s ({os.cpu_count()} cores)", flush=True)

  baselines = {}
  for name, folder in (("n", half), ("2n", dataset.train_image_dir)):
    baselines[name] = _timed(
        [python, "-m", "im2txt.run_inference", f"--checkpoint_path={train_dir}",
         f"--vocab_file={vocab_file}", f"--input_files={folder}/*.jpg", "--output_format=json",
         f"--output_file={os.path.join(work_dir, f'run_inference_{name}.json')}",
         f"--batch_size={FLAGS.batch_size}"], os.path.join(work_dir, f"run_inference_{name}.log"))
  baseline_s, baseline_mem = baselines["n"]
  baseline_double_s, _ = baselines["2n"]
  baseline_json = os.path.join(work_dir, "run_inference_n.json")
  results = {}
  for name, folder in (("n", half), ("2n", dataset.train_image_dir)):
    output_dir = os.path.join(work_dir, f"captions_{name}")
    shutil.rmtree(output_dir, ignore_errors=True)
    results[name] = _timed(
        [python, "-m", "beam_jobs.caption_images", f"--input_patterns={folder}/*.jpg",
         f"--saved_model_dir={export_dir}", f"--output_dir={output_dir}",
         f"--batch_size={FLAGS.batch_size}"], os.path.join(work_dir, f"caption_images_{name}.log"))
  job_s, job_mem = results["n"]
  double_s, double_mem = results["2n"]

  reference, captioned = _captions(baseline_json), _captions(os.path.join(work_dir, "captions_n"))
  agree = sum(reference.get(path) == caption for path, caption in captioned.items())
  print(f"\nSame {n:,} images, best captions equal for {agree:,} of {len(captioned):,} "
        f"(run_inference captioned {len(reference):,})")
  print("| command | wall time | images/s | ratio | peak memory (process tree) |")
  print("| --- | --- | --- | --- | --- |")
  print(f"| run_inference (baseline) | {baseline_s:.1f} s | {n / baseline_s:.1f} | 1.00x | "
        f"{baseline_mem / 2**20:,.0f} MiB |")
  print(f"| caption_images, DirectRunner | {job_s:.1f} s | {n / job_s:.1f} | "
        f"{baseline_s / job_s:.2f}x | {job_mem / 2**20:,.0f} MiB |")
  print(f"| run_inference, {2 * n:,} images | {baseline_double_s:.1f} s | "
        f"{2 * n / baseline_double_s:.1f} | 1.00x | |")
  print(f"| caption_images, {2 * n:,} images | {double_s:.1f} s | {2 * n / double_s:.1f} | "
        f"{baseline_double_s / double_s:.2f}x | {double_mem / 2**20:,.0f} MiB "
        f"({double_mem / job_mem - 1:+.1%} against {n:,} images) |")
  # Without the start-up (interpreters, TensorFlow, the model, Beam's workers): the second
  # n images' time, the difference of the two runs.
  baseline_rate = n / max(baseline_double_s - baseline_s, 1e-9)
  job_rate = n / max(double_s - job_s, 1e-9)
  print(f"Without start-up (the second {n:,} images): run_inference {baseline_rate:.1f} "
        f"images/s, caption_images {job_rate:.1f} images/s, {job_rate / baseline_rate:.2f}x; "
        f"start-up: run_inference {baseline_s - n / baseline_rate:.1f} s, caption_images "
        f"{job_s - n / job_rate:.1f} s")
  if not FLAGS.work_dir:
    shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
