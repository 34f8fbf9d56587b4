r"""Benchmark: batched compiled beam search vs the original's one-image Python loop.

Both run on the same weights and the same images, each in its own process so that each one's
peak memory (max RSS) is its own:
  * batched:  im2txt.beam_search.BeamSearch, `--batch_size` images per tf.function call
              (image encoder and every decoding step inside one compiled graph);
  * loop:     im2txt.beam_search_reference, one image at a time, one compiled `step` call per
              word and the candidates handled in Python, as the original CaptionGenerator did
              with its session.run() calls.
Compilation (the first call) is timed apart. Prints captions/s, the speed-up, whether all the
captions are identical, and peak memory.

    bazel run //bench:bench_beam_search -- --preset=small --num_images=8    # a quick look
    bazel run //bench:bench_beam_search                                     # default model
    bazel run //bench:bench_beam_search -- --checkpoint_path=MODEL/train \
        --vocab_file=DATA/word_counts.txt --input_files='images/*.jpg'

Without --checkpoint_path the model is random (seeded, with peaked decoder weights so that
captions differ and end at different lengths); without --input_files the images are random.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from im2txt import configuration
from im2txt import file_io
from im2txt import vocabulary
from im2txt.inference import beam_search
from im2txt.inference import beam_search_reference
from im2txt.inference import captioning
from im2txt.model import show_and_tell_model

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", "", "A trained checkpoint (file or directory); "
                    "empty: a random model of --preset.")
flags.DEFINE_string("vocab_file", "", "Its vocabulary (for the <S> and </S> ids).")
flags.DEFINE_enum("preset", "default", list(configuration.PRESETS),
                  "Model sizes of the random model.")
flags.DEFINE_string("input_files", "", "Comma-separated JPEG patterns; empty: random images.")
flags.DEFINE_integer("num_images", 32, "Images captioned by each method.")
flags.DEFINE_integer("batch_size", 32, "Images per batched search.")
flags.DEFINE_integer("beam_size", 3, "Beam size.")
flags.DEFINE_integer("max_caption_length", 20, "Maximum caption length (ids, <S> included).")
flags.DEFINE_float("length_normalization_factor", 0.0, "Length normalisation factor.")
# Internal: the parent process runs each method in a child with these.
flags.DEFINE_enum("method", "", ["", "batched", "loop"], "Internal: the method to run.")
flags.DEFINE_string("work_dir", "", "Internal: the parent's shared directory.")


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _random_checkpoint(preset: str, directory: str) -> str:
  """A seeded random model of the preset, saved as the trainer does; returns the vocab file."""
  config = configuration.PRESETS[preset]()
  config.model = configuration.without_concept_head(config.model)
  tf.keras.utils.set_random_seed(0)
  model = show_and_tell_model.ShowAndTellModel(config.model)
  model.build_all()
  rng = np.random.default_rng(0)
  # Image-dependent features from the random Inception (see calibrate_inception_batch_norm).
  c = config.model
  model.calibrate_inception_batch_norm(tf.constant(rng.uniform(
      -1.0, 1.0, [8, c.image_height, c.image_width, 3]).astype(np.float32)))
  # Peaked next-word distributions: the default ±0.08 weights give near-uniform ones, where
  # every caption runs to max_caption_length and near-equal scores make comparisons fragile.
  for layer, scale in ((model.image_embedding, 0.05), (model.seq_embedding, 1.0),
                       (model.lstm_cell, 0.3), (model.logits_layer, 0.3)):
    for v in layer.weights:
      v.assign(rng.normal(0.0, scale, v.shape).astype(np.float32))
  checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(0, dtype=tf.int64))
  tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1).save()
  configuration.save_config(config, directory)
  words = ["<S>", "</S>"] + [f"w{i}" for i in range(config.model.vocab_size - 3)]
  vocab_file = os.path.join(directory, "word_counts.txt")
  vocabulary.write_word_counts(vocab_file, [(w, 1) for w in words])
  return vocab_file


def _images(model_config: configuration.ModelConfig) -> tf.Tensor:
  if FLAGS.input_files:
    reader = captioning.ImageReader(model_config)
    files = file_io.expand_patterns(FLAGS.input_files, "--input_files")
    files = (files * FLAGS.num_images)[:FLAGS.num_images]
    return tf.stack([reader.read(f) for f in files])
  rng = np.random.default_rng(1)
  shape = [FLAGS.num_images, model_config.image_height, model_config.image_width, 3]
  return tf.constant(rng.uniform(-1.0, 1.0, shape).astype(np.float32))


def _run_method() -> None:
  """Child process: captions the images with one method; writes figures and captions."""
  with open(os.path.join(FLAGS.work_dir, "setup.json")) as f:
    setup = json.load(f)
  model, config, _ = captioning.load_model(setup["checkpoint"])
  vocab = vocabulary.Vocabulary.from_file(setup["vocab_file"])
  images = _images(config.model)
  kwargs = dict(beam_size=FLAGS.beam_size, max_caption_length=FLAGS.max_caption_length,
                length_normalization_factor=FLAGS.length_normalization_factor)
  rss_loaded = _rss_mb()
  if FLAGS.method == "batched":
    c = config.model
    search = beam_search.BeamSearch(
        model, vocab.start_id, vocab.end_id, **kwargs,
        input_signature=[tf.TensorSpec([None, c.image_height, c.image_width, 3], tf.float32)])
    batches = [images[i:i + FLAGS.batch_size]
               for i in range(0, FLAGS.num_images, FLAGS.batch_size)]

    def caption_all():
      return [c for batch in batches for c in captioning.captions_from_result(search(batch))]

    start = time.perf_counter()
    search(batches[0])
  else:
    compiled = beam_search_reference.CompiledModel(model)

    def caption_all():
      return [beam_search_reference.beam_search_reference(
          compiled, image, vocab.start_id, vocab.end_id, **kwargs) for image in images]

    start = time.perf_counter()
    # Traces initial_state and step for each number of partial captions (1 .. beam_size).
    for length in sorted({2, FLAGS.max_caption_length}):
      beam_search_reference.beam_search_reference(
          compiled, images[0], vocab.start_id, vocab.end_id, FLAGS.beam_size, length,
          FLAGS.length_normalization_factor)
  compile_secs = time.perf_counter() - start
  start = time.perf_counter()
  captions = caption_all()
  secs = time.perf_counter() - start
  # The image encoder alone, batched as the method batches it: what the search adds is the rest.
  encode = tf.function(model.initial_state, reduce_retracing=True)
  per_call = FLAGS.batch_size if FLAGS.method == "batched" else 1
  calls = [images[i:i + per_call] for i in range(0, FLAGS.num_images, per_call)]
  encode(calls[0])
  start = time.perf_counter()
  for batch in calls:
    tf.nest.map_structure(lambda s: s.numpy(), encode(batch))
  encoder_secs = time.perf_counter() - start
  with open(os.path.join(FLAGS.work_dir, FLAGS.method + ".json"), "w") as f:
    json.dump({
        "compile_secs": compile_secs, "secs": secs, "encoder_secs": encoder_secs,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": _rss_mb(),
        "captions": [[[list(map(int, c.sentence)), float(c.logprob)] for c in image_captions]
                     for image_captions in captions],
    }, f)


def _same_captions(a, b) -> bool:
  return ([s for s, _ in a] == [s for s, _ in b] and
          np.allclose([lp for _, lp in a], [lp for _, lp in b], rtol=1e-4, atol=1e-4))


def main(argv):
  del argv  # Unused.
  if FLAGS.method:
    _run_method()
    return 0
  with tempfile.TemporaryDirectory() as work_dir:
    if FLAGS.checkpoint_path:
      setup = {"checkpoint": captioning.resolve_checkpoint(FLAGS.checkpoint_path),
               "vocab_file": FLAGS.vocab_file}
      what = setup["checkpoint"]
    else:
      setup = {"checkpoint": os.path.join(work_dir, "train")}
      setup["vocab_file"] = _random_checkpoint(FLAGS.preset, setup["checkpoint"])
      what = f"random {FLAGS.preset} model"
    with open(os.path.join(work_dir, "setup.json"), "w") as f:
      json.dump(setup, f)
    results = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for method in ("batched", "loop"):
      args = [a for a in sys.argv[1:] if not a.startswith(("--method", "--work_dir"))]
      subprocess.run([sys.executable, os.path.abspath(__file__), f"--method={method}",
                      f"--work_dir={work_dir}"] + args, env=env, check=True)
      with open(os.path.join(work_dir, method + ".json")) as f:
        results[method] = json.load(f)

  n = FLAGS.num_images
  batched, loop = results["batched"], results["loop"]
  same = sum(_same_captions(a, b) for a, b in zip(batched["captions"], loop["captions"]))
  lengths = [len(c[0][0]) for c in batched["captions"] if c]
  print(f"\nBeam search on {what}: {n} images, beam {FLAGS.beam_size}, max length "
        f"{FLAGS.max_caption_length}, best captions of {np.mean(lengths):.1f} ids on average")
  print("captions/s: images captioned per second, encoder included; decoding only: the same "
        "without the time the encoder alone takes")
  print(f"{'method':<34}{'captions/s':>11}{'decoding only':>15}{'compile s':>11}"
        f"{'RSS loaded MB':>15}{'peak RSS MB':>13}")
  for name, r in ((f"batched, compiled (batch {FLAGS.batch_size})", batched),
                  ("loop, 1 image, 1 step call/word", loop)):
    decoding_secs = max(r["secs"] - r["encoder_secs"], 1e-9)
    print(f"{name:<34}{n / r['secs']:>11.2f}{n / decoding_secs:>15.2f}"
          f"{r['compile_secs']:>11.1f}{r['rss_loaded_mb']:>15.0f}{r['peak_rss_mb']:>13.0f}")
  decoding_ratio = ((loop["secs"] - loop["encoder_secs"]) /
                    max(batched["secs"] - batched["encoder_secs"], 1e-9))
  print(f"speed-up (batched / loop): {loop['secs'] / batched['secs']:.1f}x, decoding only "
        f"{decoding_ratio:.1f}x; identical captions for {same} of {n} images")
  return 0 if same == n else 1


if __name__ == "__main__":
  app.run(main)
