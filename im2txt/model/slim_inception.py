"""TF-slim InceptionV3 checkpoint variables <-> Keras InceptionV3 layers.

The original im2txt started phase 1 from TF-slim's `inception_v3.ckpt` (inception_v3_2016_08_28)
and kept InceptionV3 under the same variable names in its own checkpoints. Keras' InceptionV3 is
the same network (the same 94 conv + batch-norm pairs, batch norm without gamma, epsilon 0.001),
with auto-named layers. Each slim conv scope maps to one Keras Conv2D and the BatchNormalization
after it:

    InceptionV3/Mixed_5b/Branch_1/Conv2d_0b_5x5/weights              -> conv2d_7.kernel
    InceptionV3/Mixed_5b/Branch_1/Conv2d_0b_5x5/BatchNorm/beta        -> batch_normalization_7.beta
    .../BatchNorm/moving_mean, .../BatchNorm/moving_variance          -> the same layer's statistics

Both networks create their convs in the same order, block by block and branch by branch (a Keras
functional model lists its layers in graph order, so the creation order is read from the layers'
auto-generated name numbers). Shapes are checked variable by variable.
"""

import re
from typing import Callable, Dict, List, Tuple

import numpy as np
import tensorflow as tf

SCOPE = "InceptionV3"
# The first variable of a TF-slim InceptionV3 checkpoint (or an im2txt one, which embeds it).
MARKER_VARIABLE = f"{SCOPE}/Conv2d_1a_3x3/weights"


def _block(name: str, *branches: Tuple[str, ...]) -> List[str]:
  return [f"{name}/Branch_{b}/{conv}" for b, convs in enumerate(branches) for conv in convs]


def _mixed_35(name: str, branch_1: Tuple[str, str]) -> List[str]:
  return _block(name, ("Conv2d_0a_1x1",), branch_1,
                ("Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"), ("Conv2d_0b_1x1",))


def _mixed_17(name: str) -> List[str]:
  return _block(name, ("Conv2d_0a_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"),
                ("Conv2d_0a_1x1", "Conv2d_0b_7x1", "Conv2d_0c_1x7", "Conv2d_0d_7x1",
                 "Conv2d_0e_1x7"), ("Conv2d_0b_1x1",))


def _mixed_8(name: str, branch_1_second: str) -> List[str]:
  return _block(name, ("Conv2d_0a_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_1x3", branch_1_second),
                ("Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_1x3", "Conv2d_0d_3x1"),
                ("Conv2d_0b_1x1",))


# slim's inception_v3_base conv scopes in creation order (its names' quirks included:
# Mixed_5c's `Conv_1_0c_5x5`, Mixed_6a's 3x3 convs named `..._1x1`, Mixed_7b/7c's third conv).
CONV_SCOPES: Tuple[str, ...] = tuple(
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    + _mixed_35("Mixed_5b", ("Conv2d_0a_1x1", "Conv2d_0b_5x5"))
    + _mixed_35("Mixed_5c", ("Conv2d_0b_1x1", "Conv_1_0c_5x5"))
    + _mixed_35("Mixed_5d", ("Conv2d_0a_1x1", "Conv2d_0b_5x5"))
    + _block("Mixed_6a", ("Conv2d_1a_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_1x1"))
    + _mixed_17("Mixed_6b") + _mixed_17("Mixed_6c") + _mixed_17("Mixed_6d")
    + _mixed_17("Mixed_6e")
    + _block("Mixed_7a", ("Conv2d_0a_1x1", "Conv2d_1a_3x3"),
             ("Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1", "Conv2d_1a_3x3"))
    + _mixed_8("Mixed_7b", "Conv2d_0b_3x1") + _mixed_8("Mixed_7c", "Conv2d_0c_3x1"))

# The batch norm's variables under each conv scope, in Keras' weight order (no gamma: scale=False).
_BATCH_NORM_VARIABLES = ("beta", "moving_mean", "moving_variance")


def _creation_index(layer: tf.keras.layers.Layer) -> int:
  """conv2d -> 0, conv2d_17 -> 17: Keras numbers auto-named layers in creation order."""
  match = re.search(r"_(\d+)$", layer.name)
  return int(match.group(1)) if match else 0


def conv_batch_norm_pairs(inception: tf.keras.Model
                          ) -> List[Tuple[tf.keras.layers.Conv2D,
                                          tf.keras.layers.BatchNormalization]]:
  """Keras InceptionV3's (conv, its batch norm) pairs in creation order, i.e. CONV_SCOPES' order."""
  convs = sorted((l for l in inception.layers if isinstance(l, tf.keras.layers.Conv2D)),
                 key=_creation_index)
  pairs = []
  for conv in convs:
    batch_norm = conv.outbound_nodes[0].outbound_layer
    if not isinstance(batch_norm, tf.keras.layers.BatchNormalization):
      raise ValueError(f"Keras InceptionV3 layer {conv.name} is not followed by a batch norm")
    pairs.append((conv, batch_norm))
  if len(pairs) != len(CONV_SCOPES):
    raise ValueError(f"Keras InceptionV3 has {len(pairs)} convs, slim's has {len(CONV_SCOPES)}")
  return pairs


def variable_map(inception: tf.keras.Model, scope: str = SCOPE) -> Dict[str, tf.Variable]:
  """{slim checkpoint variable name: the Keras variable it maps onto}, all 376 of them."""
  mapping = {}
  for conv_scope, (conv, batch_norm) in zip(CONV_SCOPES, conv_batch_norm_pairs(inception)):
    prefix = f"{scope}/{conv_scope}"
    mapping[f"{prefix}/weights"] = conv.kernel
    for name in _BATCH_NORM_VARIABLES:
      mapping[f"{prefix}/BatchNorm/{name}"] = getattr(batch_norm, name)
  return mapping


def checkpoint_prefix(path: str) -> str:
  """A checkpoint's prefix when one of its files is named (model.ckpt-5.index -> model.ckpt-5)."""
  return re.sub(r"\.(index|meta|data-\d{5}-of-\d{5})$", "", path)


def check_checkpoint_variables(shapes: Dict[str, List[int]], source: str,
                               scope: str = SCOPE) -> None:
  """Every slim InceptionV3 variable is in a checkpoint's {name: shape}; else they are named."""
  missing = [f"{scope}/{conv}/{name}" for conv in CONV_SCOPES
             for name in ("weights",) + tuple(f"BatchNorm/{v}" for v in _BATCH_NORM_VARIABLES)
             if f"{scope}/{conv}/{name}" not in shapes]
  if missing:
    more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
    raise ValueError(f"{source}: not a TF-slim InceptionV3 checkpoint: {len(missing)} of its "
                     f"{4 * len(CONV_SCOPES)} variables are missing: "
                     f"{', '.join(missing[:5])}{more}")


def assign_from_reader(inception: tf.keras.Model, get_tensor: Callable[[str], np.ndarray],
                       shapes: Dict[str, List[int]], source: str) -> None:
  """Assigns every slim InceptionV3 variable; a missing or misshapen one is named, nothing set.

  `get_tensor(name)` reads a checkpoint tensor and `shapes` maps every name in the checkpoint to
  its shape (tf.train.load_checkpoint's reader and its variable-to-shape map).
  """
  check_checkpoint_variables(shapes, source)
  mapping = variable_map(inception)
  for name, variable in mapping.items():
    if list(shapes[name]) != variable.shape.as_list():
      raise ValueError(f"{source}: variable {name} has shape {list(shapes[name])}, InceptionV3 "
                       f"needs {variable.shape.as_list()}")
  for name, variable in mapping.items():
    variable.assign(get_tensor(name).astype(variable.dtype.as_numpy_dtype))


def load_checkpoint(inception: tf.keras.Model, path: str) -> None:
  """Loads a TF-slim InceptionV3 checkpoint (e.g. inception_v3.ckpt) into Keras' InceptionV3."""
  reader = tf.train.load_checkpoint(checkpoint_prefix(path))
  assign_from_reader(inception, reader.get_tensor, reader.get_variable_to_shape_map(), path)


# The first bytes of every HDF5 file (Keras' .h5 weights).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SLIM_CHECKPOINT, KERAS_H5 = "slim_checkpoint", "keras_h5"


def weights_file_format(path: str) -> str:
  """SLIM_CHECKPOINT or KERAS_H5, from the content of an Inception weights file (or prefix).

  A slim checkpoint must hold every InceptionV3 variable; anything else is an error naming the
  file and what it is not.
  """
  prefix = checkpoint_prefix(path)
  try:
    reader = tf.train.load_checkpoint(prefix)
  except (tf.errors.OpError, ValueError):
    reader = None
  if reader is not None:
    check_checkpoint_variables(reader.get_variable_to_shape_map(), path)
    return SLIM_CHECKPOINT
  if tf.io.gfile.isdir(path):
    raise ValueError(f"{path} is a directory; name the Inception checkpoint or .h5 file in it")
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"--inception_checkpoint_file: no such file: {path}")
  with tf.io.gfile.GFile(path, "rb") as f:
    if f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
      return KERAS_H5
  raise ValueError(f"{path}: neither a TF-slim InceptionV3 checkpoint (no variable "
                   f"{MARKER_VARIABLE}) nor a Keras .h5 weights file")
