"""The original im2txt's inference graph, rebuilt in tf.compat.v1 for equivalence tests.

Written from reading tensorflow/models research/im2txt (show_and_tell_model.py in "inference"
mode, ops/image_embedding.py, ops/image_processing.py, inference_wrapper.py and
inference_utils/caption_generator.py), on the libraries it was made of: TF-slim's
`inception_v3_base` (the `tf-slim` package, in place of tf.contrib.slim), slim's
`fully_connected` and `tf.compat.v1.nn.rnn_cell.BasicLSTMCell`, with the original's variable
names, scopes and initialisers:

    InceptionV3/...                       slim InceptionV3 (batch norm decay 0.9997, eps 0.001)
    image_embedding/weights               [2048, E], no bias
    seq_embedding/map                     [V, E]
    lstm/basic_lstm_cell/kernel, bias     [E+U, 4U], [4U]: gates i, j, f, o; forget_bias 1.0
    logits/weights, logits/biases         [U, V], [V]
    global_step

Its feeds and fetches are the original's: `image_feed:0` (JPEG bytes) -> `lstm/initial_state:0`
(concat([c, h])); `input_feed:0` + `lstm/state_feed:0` -> `softmax:0` + `lstm/state:0`.
`caption_generator_beam_search` is the original CaptionGenerator.beam_search with the
`[-beam_size:]` fix, on those two session calls.
"""

import heapq
import math
import sys
from typing import Dict, List, NamedTuple

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1

# The LSTM's (kernel, bias) checkpoint names in the three TF1 eras of BasicLSTMCell.
LSTM_NAMES = {
    "kernel": ("lstm/basic_lstm_cell/kernel", "lstm/basic_lstm_cell/bias"),
    "weights": ("lstm/basic_lstm_cell/weights", "lstm/basic_lstm_cell/biases"),
    "linear": ("lstm/BasicLSTMCell/Linear/Matrix", "lstm/BasicLSTMCell/Linear/Bias"),
}


def import_tf_slim():
  """tf_slim and its nets.inception_v3, importable next to TF 2.15.

  tf_slim's batch_norm builds on tf.compat.v1.layers' BatchNormalization, which TF 2.15 loads
  lazily from `tf_keras.legacy_tf_layers.normalization`; tf-keras 2.15 ships that module as
  `tf_keras.src.legacy_tf_layers.normalization`, so the name is pointed there.
  """
  import tf_keras.src.legacy_tf_layers as legacy_tf_layers  # pylint: disable=g-import-not-at-top
  import tf_keras.src.legacy_tf_layers.normalization  # pylint: disable=g-import-not-at-top,unused-import
  sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy_tf_layers)
  sys.modules.setdefault("tf_keras.legacy_tf_layers.normalization", legacy_tf_layers.normalization)
  import tf_slim  # pylint: disable=g-import-not-at-top
  from tf_slim.nets import inception_v3  # pylint: disable=g-import-not-at-top
  return tf_slim, inception_v3


def process_image(encoded_image, height: int, width: int, resize_height: int = 346,
                  resize_width: int = 346):
  """The original's eval preprocessing: decode, TF1 bilinear resize, central crop, [-1, 1]."""
  image = tf.io.decode_jpeg(encoded_image, channels=3)
  image = tf.image.convert_image_dtype(image, dtype=tf.float32)
  image = tf1.image.resize_images(image, size=[resize_height, resize_width],
                                  method=tf1.image.ResizeMethod.BILINEAR)
  image = tf1.image.resize_image_with_crop_or_pad(image, height, width)
  return (image - 0.5) * 2.0


def inception_v3(images, slim, inception_v3_net):
  """ops/image_embedding.inception_v3 in inference mode (trainable=False, is_training=False)."""
  batch_norm_params = {"is_training": False, "trainable": False, "decay": 0.9997,
                       "epsilon": 0.001,
                       "variables_collections": {"beta": None, "gamma": None,
                                                 "moving_mean": ["moving_vars"],
                                                 "moving_variance": ["moving_vars"]}}
  with tf1.variable_scope("InceptionV3", "InceptionV3", [images]) as scope:
    with slim.arg_scope([slim.conv2d, slim.fully_connected], weights_regularizer=None,
                        trainable=False):
      with slim.arg_scope([slim.conv2d],
                          weights_initializer=tf1.truncated_normal_initializer(stddev=0.1),
                          activation_fn=tf.nn.relu, normalizer_fn=slim.batch_norm,
                          normalizer_params=batch_norm_params):
        net, _ = inception_v3_net.inception_v3_base(images, scope=scope)
        with tf1.variable_scope("logits"):
          shape = net.get_shape()
          net = slim.avg_pool2d(net, shape[1:3], padding="VALID", scope="pool")
          net = slim.dropout(net, keep_prob=0.8, is_training=False, scope="dropout")
          net = slim.flatten(net, scope="flatten")
  return net


class OriginalModel:
  """The original ShowAndTellModel in "inference" mode, in its own graph and session."""

  def __init__(self, vocab_size: int = 12000, embedding_size: int = 512,
               num_lstm_units: int = 512, image_size: int = 299, seed: int = 0):
    slim, inception_v3_net = import_tf_slim()
    self.vocab_size, self.num_lstm_units, self.image_size = vocab_size, num_lstm_units, image_size
    self.graph = tf.Graph()
    with self.graph.as_default():
      tf1.set_random_seed(seed)
      initializer = tf1.random_uniform_initializer(minval=-0.08, maxval=0.08)
      image_feed = tf1.placeholder(tf.string, shape=[], name="image_feed")
      input_feed = tf1.placeholder(tf.int64, shape=[None], name="input_feed")
      images = tf.expand_dims(process_image(image_feed, image_size, image_size), 0)
      # Preprocessed images may be fed here instead of a JPEG (tests of the encoder alone).
      self.images = tf1.placeholder_with_default(images, [None, image_size, image_size, 3],
                                                 name="images")
      self.inception_output = inception_v3(self.images, slim, inception_v3_net)
      with tf1.variable_scope("image_embedding") as scope:
        image_embeddings = slim.fully_connected(
            self.inception_output, embedding_size, activation_fn=None,
            weights_initializer=initializer, biases_initializer=None, scope=scope)
      with tf1.variable_scope("seq_embedding"):
        embedding_map = tf1.get_variable("map", [vocab_size, embedding_size],
                                         initializer=initializer)
        seq_embeddings = tf.nn.embedding_lookup(embedding_map, tf.expand_dims(input_feed, 1))
      lstm_cell = tf1.nn.rnn_cell.BasicLSTMCell(num_units=num_lstm_units, state_is_tuple=True)
      with tf1.variable_scope("lstm", initializer=initializer) as lstm_scope:
        zero_state = lstm_cell.zero_state(batch_size=tf.shape(image_embeddings)[0],
                                          dtype=tf.float32)
        _, initial_state = lstm_cell(image_embeddings, zero_state)
        lstm_scope.reuse_variables()
        tf.concat(axis=1, values=initial_state, name="initial_state")
        state_feed = tf1.placeholder(tf.float32, [None, sum(lstm_cell.state_size)],
                                     name="state_feed")
        state_tuple = tf.split(value=state_feed, num_or_size_splits=2, axis=1)
        lstm_outputs, state_tuple = lstm_cell(inputs=tf.squeeze(seq_embeddings, axis=[1]),
                                              state=state_tuple)
        tf.concat(axis=1, values=state_tuple, name="state")
      lstm_outputs = tf.reshape(lstm_outputs, [-1, lstm_cell.output_size])
      with tf1.variable_scope("logits") as logits_scope:
        logits = slim.fully_connected(lstm_outputs, vocab_size, activation_fn=None,
                                      weights_initializer=initializer, scope=logits_scope)
      tf.nn.softmax(logits, name="softmax")
      tf1.Variable(0, name="global_step", trainable=False, dtype=tf.int64)
      self.variables = {v.op.name: v for v in tf1.global_variables()}
      self.session = tf1.Session(graph=self.graph)
      self.session.run(tf1.global_variables_initializer())

  # --- weights ---------------------------------------------------------------------------

  def randomize(self, seed: int, logits_scale: float = 1.0, image_embedding_scale: float = 0.08,
                lstm_scale: float = 0.08, end_id: int = 1, end_bias: float = 0.0,
                global_step: int = 0) -> None:
    """Random weights that keep activations O(1) and make the next-word softmax peaky.

    Inception: He-scaled conv weights and random batch-norm beta and moving statistics (so a
    wrong mapping of any of them shows). The decoder keeps the original's uniform +-0.08 except:
    the logits, uniform +-logits_scale (peaky: captions are not decided by float noise), plus
    end_bias on end_id's bias (so that captions end); the image embedding
    (+-image_embedding_scale) and the LSTM's kernel (+-lstm_scale), so that the image matters;
    the LSTM's bias, +-0.5, so that a wrong gate order shows.
    """
    rng = np.random.default_rng(seed)
    values = {}
    for name, variable in self.variables.items():
      shape = variable.shape.as_list()
      if name == "global_step":
        values[name] = global_step
      elif name.endswith("/weights") and name.startswith("InceptionV3/"):
        fan_in = np.prod(shape[:-1])
        values[name] = rng.normal(0, math.sqrt(2.0 / fan_in), shape)
      elif name.endswith("BatchNorm/beta"):
        values[name] = rng.normal(0.1, 0.2, shape)
      elif name.endswith("BatchNorm/moving_mean"):
        values[name] = rng.normal(0.2, 0.2, shape)
      elif name.endswith("BatchNorm/moving_variance"):
        values[name] = rng.uniform(0.5, 2.0, shape)
      elif name.startswith("logits/"):
        values[name] = rng.uniform(-logits_scale, logits_scale, shape)
        if name == "logits/biases":
          values[name][end_id] += end_bias
      elif name == "image_embedding/weights":
        values[name] = rng.uniform(-image_embedding_scale, image_embedding_scale, shape)
      elif name == LSTM_NAMES["kernel"][0]:
        values[name] = rng.uniform(-lstm_scale, lstm_scale, shape)
      elif name == LSTM_NAMES["kernel"][1]:
        values[name] = rng.uniform(-0.5, 0.5, shape)
      else:
        values[name] = rng.uniform(-0.08, 0.08, shape)
    self.assign(values)

  def assign(self, values: Dict[str, np.ndarray]) -> None:
    with self.graph.as_default():
      for name, value in values.items():
        variable = self.variables[name]
        variable.load(np.asarray(value).astype(variable.dtype.base_dtype.as_numpy_dtype),
                      self.session)

  def values(self) -> Dict[str, np.ndarray]:
    return dict(zip(self.variables, self.session.run(list(self.variables.values()))))

  def save(self, prefix: str, lstm_era: str = "kernel", only_inception: bool = False,
           v1_format: bool = False) -> str:
    """Saves with tf.compat.v1.train.Saver, the LSTM under the names of `lstm_era`."""
    renames = dict(zip(LSTM_NAMES["kernel"], LSTM_NAMES[lstm_era]))
    var_list = {renames.get(name, name): variable for name, variable in self.variables.items()
                if not only_inception or name.startswith("InceptionV3/")}
    with self.graph.as_default():
      version = tf1.train.SaverDef.V1 if v1_format else tf1.train.SaverDef.V2
      saver = tf1.train.Saver(var_list, write_version=version)
      return saver.save(self.session, prefix, write_meta_graph=False,
                        write_state=not only_inception)

  # --- the original's inference calls (inference_wrapper.py) ------------------------------

  def features(self, images: np.ndarray) -> np.ndarray:
    """InceptionV3's pooled features of preprocessed images [B, H, W, 3]."""
    return self.session.run(self.inception_output, {self.images: images})

  def preprocess(self, encoded_image: bytes) -> np.ndarray:
    return self.session.run(self.images, {"image_feed:0": encoded_image})

  def feed_image(self, encoded_image: bytes) -> np.ndarray:
    return self.session.run("lstm/initial_state:0", {"image_feed:0": encoded_image})

  def inference_step(self, input_feed, state_feed):
    softmax, state = self.session.run(["softmax:0", "lstm/state:0"],
                                      {"input_feed:0": input_feed, "lstm/state_feed:0": state_feed})
    return softmax, state, None


def write_python3_word_counts(path: str, word_counts) -> None:
  """word_counts.txt as the original builder wrote it under Python 3: `b'word' count` lines."""
  with open(path, "w") as f:
    f.write("\n".join("%s %d" % (w.encode("utf-8"), c) for w, c in word_counts))


# --- caption_generator.py, with the [-beam_size:] fix --------------------------------------


class Caption:
  """A complete or partial caption, ordered by score (heapq)."""

  def __init__(self, sentence, state, logprob, score):
    self.sentence, self.state, self.logprob, self.score = sentence, state, logprob, score

  def __lt__(self, other):
    return self.score < other.score

  def __eq__(self, other):
    return self.score == other.score


class TopN:
  """The top n elements of an incrementally provided set."""

  def __init__(self, n):
    self._n, self._data = n, []

  def size(self):
    return len(self._data)

  def push(self, x):
    if len(self._data) < self._n:
      heapq.heappush(self._data, x)
    else:
      heapq.heappushpop(self._data, x)

  def extract(self, sort=False):
    data, self._data = self._data, None
    if sort:
      data.sort(reverse=True)
    return data

  def reset(self):
    self._data = []


class Result(NamedTuple):
  sentence: List[int]
  logprob: float


def caption_generator_beam_search(model: OriginalModel, encoded_image: bytes, start_id: int,
                                  end_id: int, beam_size: int = 3, max_caption_length: int = 20,
                                  length_normalization_factor: float = 0.0) -> List[Result]:
  """CaptionGenerator.beam_search: Captions sorted by descending score."""
  initial_state = model.feed_image(encoded_image)
  partial_captions = TopN(beam_size)
  partial_captions.push(Caption([start_id], initial_state[0], 0.0, 0.0))
  complete_captions = TopN(beam_size)
  for _ in range(max_caption_length - 1):
    partial_captions_list = partial_captions.extract()
    partial_captions.reset()
    input_feed = np.array([c.sentence[-1] for c in partial_captions_list])
    state_feed = np.array([c.state for c in partial_captions_list])
    softmax, new_states, _ = model.inference_step(input_feed, state_feed)
    for i, partial_caption in enumerate(partial_captions_list):
      word_probabilities = softmax[i]
      state = new_states[i]
      most_likely_words = np.argsort(word_probabilities)[-beam_size:][::-1]
      for w in most_likely_words:
        p = word_probabilities[w]
        if p < 1e-12:
          continue  # Avoid log(0).
        sentence = partial_caption.sentence + [int(w)]
        logprob = partial_caption.logprob + math.log(p)
        score = logprob
        if w == end_id:
          if length_normalization_factor > 0:
            score /= len(sentence)**length_normalization_factor
          complete_captions.push(Caption(sentence, state, logprob, score))
        else:
          partial_captions.push(Caption(sentence, state, logprob, score))
    if partial_captions.size() == 0:
      break
  if not complete_captions.size():
    complete_captions = partial_captions
  return [Result(c.sentence, c.logprob) for c in complete_captions.extract(sort=True)]
