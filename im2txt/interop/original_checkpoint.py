"""Original im2txt (TF1) checkpoints -> a train_dir of this project (library of convert_checkpoint).

    step = original_checkpoint.convert("PATH/model.ckpt-2000000", "PATH/word_counts.txt", "DIR")

writes DIR/ckpt-2000000 (+ its `checkpoint` index) and DIR/config.json, which run_inference,
export_saved_model, evaluate and phase-2 training read unchanged. The original's variables:

    InceptionV3/...                       slim InceptionV3           -> model.inception (slim_inception)
    image_embedding/weights  [2048, E]    no bias                    -> image_embedding kernel
    seq_embedding/map        [V, E]                                  -> seq_embedding embeddings
    LSTM kernel [E+U, 4U] and bias [4U], named by TF1 era (LSTM_NAMES) -> lstm kernel, recurrent
                                                                        kernel, bias
    logits/weights [U, V], logits/biases [V]                         -> logits kernel, bias
    global_step                                                      -> step

BasicLSTMCell computes `i, j, f, o = split(concat([x, h]) @ W + b)`, `c' = c * sigmoid(f + 1.0) +
sigmoid(i) * tanh(j)`, `h' = tanh(c') * sigmoid(o)` (forget_bias 1.0 added at run time). Keras'
LSTMCell computes `x @ K + h @ R + b` with gates ordered i, f, c, o and no forget bias, so the
columns are reordered, W's rows split into K (inputs) and R (state), and 1.0 added to f's bias.
Its state is [h, c] where the original's was concat([c, h]); the model's inference API handles
that (a state is the tuple (h, c)).
"""

import os
from typing import Dict, List, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from im2txt import checkpoint_files
from im2txt import configuration
from im2txt import file_io
from im2txt.inference import captioning
from im2txt.model import show_and_tell_model
from im2txt.model import slim_inception

# BasicLSTMCell's (kernel, bias) names, newest TF1 era first: tf.nn.rnn_cell (TF >= 1.2),
# tf.contrib.rnn (TF 1.0-1.1), tf.nn.rnn_cell before TF 1.0.
LSTM_NAMES: Tuple[Tuple[str, str], ...] = (
    ("lstm/basic_lstm_cell/kernel", "lstm/basic_lstm_cell/bias"),
    ("lstm/basic_lstm_cell/weights", "lstm/basic_lstm_cell/biases"),
    ("lstm/BasicLSTMCell/Linear/Matrix", "lstm/BasicLSTMCell/Linear/Bias"),
)
IMAGE_EMBEDDING = "image_embedding/weights"
SEQ_EMBEDDING = "seq_embedding/map"
LOGITS_WEIGHTS = "logits/weights"
LOGITS_BIASES = "logits/biases"
GLOBAL_STEP = "global_step"
# BasicLSTMCell's default, added to the forget gate's pre-activation at run time.
FORGET_BIAS = 1.0
# The original's slim Inception batch-norm decay, kept for further training of a converted model.
ORIGINAL_BATCH_NORM_MOMENTUM = 0.9997


def resolve_original_checkpoint(path: str) -> str:
  """A checkpoint prefix from a prefix, one of its files, a V1 file or a train_dir.

  A train_dir's `checkpoint` index may hold absolute paths of the machine that wrote it: only its
  file name is used, inside the given directory.
  """
  path = slim_inception.checkpoint_prefix(path)
  if tf.io.gfile.isdir(path):
    state = tf.train.get_checkpoint_state(path)
    if state is None or not state.model_checkpoint_path:
      raise FileNotFoundError(f"--original_checkpoint: {path} is a directory without a "
                              "`checkpoint` index file; name the checkpoint, e.g. "
                              f"{path}/model.ckpt-2000000")
    return os.path.join(path, os.path.basename(state.model_checkpoint_path))
  if not (tf.io.gfile.exists(path) or tf.io.gfile.exists(path + ".index")):
    raise FileNotFoundError(f"--original_checkpoint: no checkpoint at {path} (expected "
                            f"{path}.index and its data file, or a TF1 V1 checkpoint file)")
  return path


class OriginalCheckpoint:
  """An original im2txt checkpoint's tensors, checked to be complete and consistent."""

  def __init__(self, path: str):
    self.path = resolve_original_checkpoint(path)
    try:
      self._reader = tf.train.load_checkpoint(self.path)
    except checkpoint_files.READ_ERRORS as e:
      raise checkpoint_files.corrupt_checkpoint_error(self.path, e) from e
    except ValueError as e:
      raise ValueError(f"{self.path}: not a readable TensorFlow checkpoint ({e})") from e
    self.shapes: Dict[str, List[int]] = self._reader.get_variable_to_shape_map()
    self.lstm_names = next((names for names in LSTM_NAMES
                            if all(n in self.shapes for n in names)), None)
    self._check()

  def _check(self) -> None:
    required = [IMAGE_EMBEDDING, SEQ_EMBEDDING, LOGITS_WEIGHTS, LOGITS_BIASES]
    missing = [n for n in required if n not in self.shapes]
    if self.lstm_names is None:
      missing.append("the LSTM's kernel and bias (one of: "
                     + "; ".join(" + ".join(names) for names in LSTM_NAMES) + ")")
    inception_missing = [f"{slim_inception.SCOPE}/{scope}/..."
                         for scope in slim_inception.CONV_SCOPES
                         if f"{slim_inception.SCOPE}/{scope}/weights" not in self.shapes]
    if inception_missing:
      missing.append(f"{len(inception_missing)} of the {len(slim_inception.CONV_SCOPES)} "
                     f"InceptionV3 conv scopes, e.g. {inception_missing[0]}")
    if missing:
      raise ValueError(f"{self.path}: not an im2txt model checkpoint; missing "
                       + ", ".join(missing))
    vocab_size, embedding_size = self.shapes[SEQ_EMBEDDING]
    units = self.shapes[LOGITS_WEIGHTS][0]
    expected = {IMAGE_EMBEDDING: [2048, embedding_size],
                self.lstm_names[0]: [embedding_size + units, 4 * units],
                self.lstm_names[1]: [4 * units],
                LOGITS_WEIGHTS: [units, vocab_size], LOGITS_BIASES: [vocab_size]}
    for name, shape in expected.items():
      if list(self.shapes[name]) != shape:
        raise ValueError(f"{self.path}: variable {name} has shape {list(self.shapes[name])}, "
                         f"expected {shape} (from {SEQ_EMBEDDING} {[vocab_size, embedding_size]}"
                         f" and {LOGITS_WEIGHTS}' {units} LSTM units)")

  def tensor(self, name: str) -> np.ndarray:
    try:
      return self._reader.get_tensor(name)
    except checkpoint_files.READ_ERRORS as e:  # E.g. a missing or truncated .data-* file.
      raise checkpoint_files.corrupt_checkpoint_error(self.path, e) from e

  @property
  def global_step(self) -> int:
    if GLOBAL_STEP not in self.shapes:
      logging.warning("%s has no global_step: the converted checkpoint is ckpt-0", self.path)
      return 0
    return int(self.tensor(GLOBAL_STEP))

  def model_config(self) -> configuration.ModelConfig:
    """The default (original) model with the checkpoint's vocabulary, embedding and LSTM sizes."""
    vocab_size, embedding_size = self.shapes[SEQ_EMBEDDING]
    return configuration.ModelConfig(
        vocab_size=vocab_size, embedding_size=embedding_size,
        num_lstm_units=self.shapes[LOGITS_WEIGHTS][0],
        inception_batch_norm_momentum=ORIGINAL_BATCH_NORM_MOMENTUM)


def keras_lstm_weights(kernel: np.ndarray, bias: np.ndarray, input_size: int
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """BasicLSTMCell's kernel [input+units, 4*units] (i, j, f, o) and bias -> Keras LSTMCell's
  kernel [input, 4*units], recurrent kernel [units, 4*units] and bias, gates i, f, c(=j), o."""
  i, j, f, o = np.split(kernel, 4, axis=1)
  reordered = np.concatenate([i, f, j, o], axis=1)
  b_i, b_j, b_f, b_o = np.split(bias, 4)
  return (reordered[:input_size], reordered[input_size:],
          np.concatenate([b_i, b_f + FORGET_BIAS, b_j, b_o]))


def assign_weights(model: show_and_tell_model.ShowAndTellModel,
                   original: OriginalCheckpoint) -> None:
  """Sets every variable of a built model from the original checkpoint."""
  slim_inception.assign_from_reader(model.inception, original.tensor, original.shapes,
                                    original.path)
  model.image_embedding.kernel.assign(original.tensor(IMAGE_EMBEDDING))
  model.seq_embedding.embeddings.assign(original.tensor(SEQ_EMBEDDING))
  kernel, recurrent_kernel, bias = keras_lstm_weights(
      original.tensor(original.lstm_names[0]), original.tensor(original.lstm_names[1]),
      model.config.embedding_size)
  model.lstm_cell.kernel.assign(kernel)
  model.lstm_cell.recurrent_kernel.assign(recurrent_kernel)
  model.lstm_cell.bias.assign(bias)
  model.logits_layer.kernel.assign(original.tensor(LOGITS_WEIGHTS))
  model.logits_layer.bias.assign(original.tensor(LOGITS_BIASES))


def _check_output_dir(output_dir: str) -> None:
  if not output_dir or "://" in output_dir:
    raise ValueError(f"--output_dir must be a local directory, not {output_dir!r} (the converted "
                     "train_dir is written beside it and renamed into place; copy it afterwards)")
  if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
    raise ValueError(f"--output_dir {output_dir} exists and is not an empty directory; "
                     "nothing was written (choose a new directory)")


def convert(original_checkpoint: str, vocab_file: str, output_dir: str) -> str:
  """Writes output_dir as a train_dir holding the converted model; returns its checkpoint path.

  Nothing is written to output_dir unless the whole conversion succeeds: it is built in a
  temporary sibling directory and renamed into place (so output_dir is a local path). Errors
  (ValueError, FileNotFoundError, OSError) name the file and the reason.
  """
  _check_output_dir(output_dir)
  original = OriginalCheckpoint(original_checkpoint)
  config = configuration.default_config()
  config.model = original.model_config()
  captioning.load_vocabulary(vocab_file, config.model, original.path)
  step = original.global_step

  model = show_and_tell_model.ShowAndTellModel(config.model)
  model.build_all()
  assign_weights(model, original)
  step_variable = tf.Variable(step, dtype=tf.int64, trainable=False, name="global_step")

  # Built beside output_dir (same file system, for the rename), with the user's umask.
  with file_io.atomic_path(os.path.abspath(output_dir)) as tmp_dir:
    configuration.save_config(config, tmp_dir)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step_variable, model=model),
                                         tmp_dir, max_to_keep=1)
    manager.save(checkpoint_number=step)
  logging.info("Converted %s (step %d, vocab_size %d, embedding %d, LSTM %d units, %s) into %s",
               original.path, step, config.model.vocab_size, config.model.embedding_size,
               config.model.num_lstm_units, " + ".join(original.lstm_names), output_dir)
  return os.path.join(output_dir, f"ckpt-{step}")
