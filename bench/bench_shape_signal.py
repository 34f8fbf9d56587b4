r"""How fast a randomly initialised InceptionV3 learns the sample's shapes, by what it is told.

  python -m bench.bench_shape_signal --steps=1500 --runs=classifier,captioner,shape_word
  python -m bench.bench_shape_signal --runs=concepts --batch_size=16   # images per step

The demo's model (the `small` preset's ShowAndTellModel: InceptionV3 at 75x75 from random
weights, batch norm calibrated, as the demo's phase 2 trains it, but with no phase 1 before)
is trained end to end on fresh sample images, each seen once, with the preset's optimiser
(Adam, its learning rate, gradient clipping, L2 on Inception), through the product's training
preprocessing (random crop and flip). Only the loss differs between the runs:
  classifier   the baseline: a softmax over the 5 shapes on Inception's pooled features
  captioner    the demo's caption loss: every word of one of the image's 5 captions
  shape_word   the same captions, the loss on the shape word alone
  concepts     the product's concept head (model.num_concepts, im2txt/model/concept_head.py)
               on the concepts of the image's 5 captions (concepts.select_concepts of the
               sample's words), its multi-label loss alone: a concept pretraining of Inception.
               --concept_targets: "any" (1 for a concept any of the 5 captions names, the
               records' image/concept_ids, model.concept_targets "image"), "caption" (1 for the
               concepts of one caption drawn per step, model.concept_targets "caption"),
               "fraction" (its expectation: the fraction of the 5 captions naming it)
Every --eval_every steps, each run names the shape of the same held-out images (central crop,
inference mode): the classifier by its argmax; the captioners by the most probable of the five
shape words after "<S> a single <colour>" (teacher-forced, the caption template the sample
uses), and the colour by the most probable colour word after "<S> a single"; the concept head by
the most probable of its five shape concepts (and six colour concepts). The ratio is each run's
held-out shape accuracy over the classifier's at the same step.
"""

import dataclasses
import io
import random
import time
from typing import Dict, List, Tuple

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import tensorflow as tf

from beam_jobs import make_sample_dataset as sample
from im2txt import concepts
from im2txt import configuration
from im2txt.model import concept_head
from im2txt.model import image_processing
from im2txt.model import show_and_tell_model
from im2txt.training import optimization

RUNS = ("classifier", "captioner", "shape_word", "concepts")

flags.DEFINE_integer("steps", 1500, "Training steps per run (fresh images).")
flags.DEFINE_integer("batch_size", 32, "Images per training step.")
flags.DEFINE_integer("eval_every", 250, "Steps between held-out scorings.")
flags.DEFINE_integer("num_eval_images", 300, "Held-out images.")
flags.DEFINE_list("runs", list(RUNS), f"Which runs, of {RUNS}.")
flags.DEFINE_integer("image_size", 96, "The sample images' size, as the demo's.")
flags.DEFINE_integer("seed", 0, "Seed of the images and of the training order.")
flags.DEFINE_enum("concept_loss", "sigmoid", ["sigmoid", "softmax"],
                  "The concepts run's loss: sigmoid cross-entropy per concept, or a softmax over "
                  "the concepts with the image's concepts as a uniform target distribution.")
flags.DEFINE_enum("concept_targets", "any", ["any", "fraction", "caption", "visual"],
                  "The concepts run's targets: 1 for each concept any of the image's captions "
                  "names (the product's image/concept_ids); the fraction of its captions naming "
                  "it; 1 for each concept of one of its captions, drawn per step (its expectation "
                  "is 'fraction'); or, as a diagnostic, 'any' restricted to the colour, shape and "
                  "background words (no caption boilerplate such as 'picture' or 'showing').")
flags.DEFINE_float("learning_rate", 0.0, "Adam's learning rate (0: the small preset's phase-2 "
                   "rate, 0.0003).")
FLAGS = flags.FLAGS

# Caption length in tokens with <S> (the sample's captions have at most 10 words).
MAX_TOKENS = 12
PROBE_TEMPLATE = "a single {c} {s}"


def _vocabulary() -> Dict[str, int]:
  words = set(sample.COLOURS) | set(sample.SHAPES) | set(sample.BACKGROUNDS) | {"a", "an"}
  for template in sample.TEMPLATES:
    words |= {w for w in template.split() if "{" not in w}
  return {w: i for i, w in enumerate(["<S>", "</S>"] + sorted(words))}


def _images(count: int, seed: int, size: int) -> Tuple[np.ndarray, List[sample.Label], List]:
  """`count` fresh sample images (uint8), their labels and their 5 captions each."""
  rng = random.Random(seed)
  pixels = np.empty((count, size, size, 3), np.uint8)
  labels, captions = [], []
  for k in range(count):
    label = sample.random_label(rng)
    data = sample.draw_image(label, sample.random_placement(label.shape, size, rng), size, rng)
    pixels[k] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    labels.append(label)
    captions.append(sample.captions_for(label, rng))
  return pixels, labels, captions


def _concept_words(vocab: Dict[str, int]) -> List[str]:
  """The sample's concepts: its words that are not stop words (concepts.select_concepts)."""
  return [w for w, _ in concepts.select_concepts([(w, 1) for w in vocab], len(vocab))]


def _encode(caption: str, vocab: Dict[str, int]) -> Tuple[List[int], List[int], List[float]]:
  """(input ids, target ids, mask), MAX_TOKENS each: <S> w1 .. wn -> w1 .. wn </S>."""
  ids = [vocab["<S>"]] + [vocab[w] for w in caption.split()] + [vocab["</S>"]]
  inputs, targets = ids[:-1], ids[1:]
  pad = MAX_TOKENS - len(inputs)
  return inputs + [0] * pad, targets + [0] * pad, [1.0] * len(inputs) + [0.0] * pad


class Run:
  """One model and its training step; `loss` is one of RUNS."""

  def __init__(self, loss: str, config: configuration.Config, vocab: Dict[str, int],
               calibration_images: tf.Tensor):
    self.loss, self.config, self.vocab = loss, config, vocab
    tf.keras.utils.set_random_seed(FLAGS.seed)
    self.concept_words = _concept_words(vocab)
    if FLAGS.concept_targets == "visual":
      visual = set(sample.COLOURS) | set(sample.SHAPES) | set(sample.BACKGROUNDS)
      self.concept_words = [w for w in self.concept_words if w in visual]
    if loss == "concepts":
      config = dataclasses.replace(config, model=dataclasses.replace(
          config.model, num_concepts=len(self.concept_words), concept_loss_weight=1.0))
      self.config = config
    self.model = show_and_tell_model.ShowAndTellModel(config.model, train_inception=True)
    self.model.build_all()
    self.model.calibrate_inception_batch_norm(calibration_images)
    self.head = tf.keras.layers.Dense(len(sample.SHAPES), name="shape_head")
    self.head.build([None, 2048])
    training = config.training
    self.optimizer = optimization.make_optimizer(
        training, True, FLAGS.learning_rate or training.train_inception_learning_rate)
    self.shape_ids = tf.constant([vocab[s] for s in sample.SHAPES], tf.int64)
    self.colour_ids = tf.constant([vocab[c] for c in sample.COLOURS], tf.int64)
    self.step = tf.function(self._step)

  def _variables(self):
    if self.loss == "classifier":
      return self.model.inception.trainable_variables + self.head.trainable_variables
    if self.loss == "concepts":
      return (self.model.inception.trainable_variables +
              self.model.concept_head.trainable_variables)
    return self.model.trainable_variables

  def _step(self, images, shapes, inputs, targets, mask, concept_targets):
    training = self.config.training
    with tf.GradientTape() as tape:
      if self.loss == "concepts":
        logits = self.model.concept_head(self.model.image_features(images, training=True))
        if FLAGS.concept_loss == "softmax":
          target = concept_targets / tf.reduce_sum(concept_targets, -1, keepdims=True)
          loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(target, logits))
        else:
          loss = tf.reduce_mean(concept_head.concept_losses(logits, concept_targets))
      elif self.loss == "classifier":
        logits = self.head(self.model.image_features(images, training=True))
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
            shapes, logits, from_logits=True))
      else:
        if self.loss == "shape_word":
          is_shape = tf.reduce_any(targets[..., tf.newaxis] == self.shape_ids, axis=-1)
          mask = mask * tf.cast(is_shape, tf.float32)
        logits = self.model({"images": images, "input_seqs": inputs}, training=True)
        token_losses = self.model.token_losses(logits, targets, mask)
        loss = tf.reduce_sum(token_losses) / tf.reduce_sum(mask)
      total = loss + optimization.inception_l2_loss(self.model, training.inception_weight_decay)
    variables = self._variables()
    grads = tape.gradient(total, variables)
    if training.clip_gradients > 0:
      grads, _ = tf.clip_by_global_norm(grads, training.clip_gradients)
    self.optimizer.apply_gradients(zip(grads, variables))
    return loss

  def score(self, images: tf.Tensor, labels: List[sample.Label]) -> Tuple[float, float]:
    """(right shape, right colour) fractions on the held-out images (colour: nan for the
    classifier)."""
    shapes = np.array([sample.SHAPES.index(l.shape) for l in labels])
    if self.loss == "classifier":
      features = self.model.image_features(images, training=False)
      return float(np.mean(np.argmax(self.head(features).numpy(), 1) == shapes)), float("nan")
    colours = np.array([list(sample.COLOURS).index(l.colour) for l in labels])
    if self.loss == "concepts":
      probs = self.model.concept_probabilities(images).numpy()
      index = {w: i for i, w in enumerate(self.concept_words)}
      named_shapes = np.argmax(probs[:, [index[s] for s in sample.SHAPES]], 1)
      named_colours = np.argmax(probs[:, [index[c] for c in sample.COLOURS]], 1)
      return float(np.mean(named_shapes == shapes)), float(np.mean(named_colours == colours))
    v = self.vocab
    prefix = [v[w] for w in PROBE_TEMPLATE.split()[:2]]
    seqs = tf.constant([[v["<S>"]] + prefix + [v[l.colour]] for l in labels])
    logits = self.model({"images": images, "input_seqs": seqs}, training=False)
    named_shapes = np.argmax(tf.gather(logits[:, 3], self.shape_ids, axis=1).numpy(), 1)
    named_colours = np.argmax(tf.gather(logits[:, 2], self.colour_ids, axis=1).numpy(), 1)
    return float(np.mean(named_shapes == shapes)), float(np.mean(named_colours == colours))


def _preprocessor(config: configuration.ModelConfig, training: bool):
  """uint8 images [N, S, S, 3], seed -> the product's preprocessing of each image: training
  (random crop and flip, image k seeded by (seed, k)) or evaluation (central crop)."""

  @tf.function
  def preprocess(images, seeds):
    return tf.map_fn(
        lambda args: image_processing.preprocess_image(args[0], config, training,
                                                       seed=args[1] if training else None),
        (tf.image.convert_image_dtype(images, tf.float32), seeds),
        fn_output_signature=tf.float32)

  def run(pixels: np.ndarray, seed: int = 0) -> tf.Tensor:
    seeds = np.stack([np.full(len(pixels), seed), np.arange(len(pixels))], 1).astype(np.int64)
    return preprocess(tf.constant(pixels), tf.constant(seeds))

  return run


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.runs) - set(RUNS))
  if unknown:
    raise app.UsageError(f"--runs: unknown {unknown}; expected some of {RUNS}")
  config = configuration.small_config()
  # The runs' models: the small preset's decoder without its concept head (the concepts run
  # adds one, its probabilities not fed to the LSTM), as the table in README was measured.
  config.model = configuration.without_concept_head(config.model)
  vocab = _vocabulary()
  started = time.time()
  train_pixels, train_labels, train_captions = _images(FLAGS.steps * FLAGS.batch_size,
                                                       FLAGS.seed, FLAGS.image_size)
  eval_pixels, eval_labels, _ = _images(FLAGS.num_eval_images, FLAGS.seed + 1_000_003,
                                        FLAGS.image_size)
  eval_images = _preprocessor(config.model, training=False)(eval_pixels)
  preprocess = _preprocessor(config.model, training=True)
  print(f"{len(train_labels):,} training + {len(eval_labels)} held-out images in "
        f"{time.time() - started:.0f} s; batch {FLAGS.batch_size}, each training image seen once",
        flush=True)

  table: Dict[str, Dict[int, Tuple[float, float]]] = {}
  speeds = {}
  for name in FLAGS.runs:
    run = Run(name, config, vocab, eval_images[:64])
    concept_index = {w: i for i, w in enumerate(run.concept_words)}
    rng = random.Random(FLAGS.seed)
    table[name] = {0: run.score(eval_images, eval_labels)}
    started, losses = time.time(), []
    for step in range(1, FLAGS.steps + 1):
      batch = slice((step - 1) * FLAGS.batch_size, step * FLAGS.batch_size)
      drawn = [rng.choice(c) for c in train_captions[batch]]
      encoded = [_encode(caption, vocab) for caption in drawn]
      inputs, targets, mask = (np.array([e[j] for e in encoded]) for j in range(3))
      shapes = np.array([sample.SHAPES.index(l.shape) for l in train_labels[batch]])
      concept_targets = np.zeros([FLAGS.batch_size, len(concept_index)], np.float32)
      for k, image_captions in enumerate(train_captions[batch]):
        if FLAGS.concept_targets == "caption":
          image_captions = [drawn[k]]
        for caption in image_captions:
          for word in set(caption.split()) & set(concept_index):
            if FLAGS.concept_targets == "fraction":
              concept_targets[k, concept_index[word]] += 1.0 / len(image_captions)
            else:
              concept_targets[k, concept_index[word]] = 1.0
      images = preprocess(train_pixels[batch], seed=step)
      losses.append(float(run.step(images, tf.constant(shapes), tf.constant(inputs),
                                   tf.constant(targets), tf.constant(mask, tf.float32),
                                   tf.constant(concept_targets))))
      if step % FLAGS.eval_every == 0 or step == FLAGS.steps:
        table[name][step] = run.score(eval_images, eval_labels)
        shape, colour = table[name][step]
        elapsed = time.time() - started
        named = "" if np.isnan(colour) else f", right colour {colour:.1%}"
        print(f"{name} step {step}: loss {np.mean(losses[-50:]):.3f}, held-out right shape "
              f"{shape:.1%}{named} ({step / elapsed:.2f} steps/s, {elapsed / 60:.1f} min)",
              flush=True)
    speeds[name] = FLAGS.steps / (time.time() - started)

  print(f"\nHeld-out right shape ({len(eval_labels)} images; chance {1 / len(sample.SHAPES):.0%})"
        f" after N steps of {FLAGS.batch_size} fresh images; ratio: against the classifier's")
  steps = sorted(next(iter(table.values())))
  print("| steps | " + " | ".join(FLAGS.runs) + " |")
  print("| --- |" + " --- |" * len(FLAGS.runs))
  for step in steps:
    cells = []
    for name in FLAGS.runs:
      shape, colour = table[name][step]
      cell = f"{shape:.1%}"
      if name != "classifier" and "classifier" in table:
        base = table["classifier"][step][0]
        cell += f" ({shape / base:.2f}x)" if base else ""
      if not np.isnan(colour):  # The classifier names no colour.
        cell += f", colour {colour:.0%}"
      cells.append(cell)
    print(f"| {step:,} | " + " | ".join(cells) + " |")
  print("steps/s: " + ", ".join(f"{name} {speed:.2f}" for name, speed in speeds.items()))


if __name__ == "__main__":
  app.run(main)
