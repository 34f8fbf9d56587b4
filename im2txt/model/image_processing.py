"""Image decoding and preprocessing, the original im2txt's (image_processing.py) in TF2.

Training: decode -> float [0,1] -> resize to (resize_height, resize_width) -> random crop to
(image_height, image_width) -> random flip -> colour distortions (unless the config's
distort_colors is off) -> scale to [-1, 1].
Evaluation and inference: the same with a central crop and no distortion.
Both resize with TF1's bilinear kernel (the original's tf.image.resize_images: no half-pixel
centres), not TF2's tf.image.resize, so a model sees the pixels the original's models saw.
The random ops are stateless and take a per-image seed, so a seeded input pipeline distorts
every image the same way however many threads run it (reproducible runs, comparable strategies).
"""

import re

import tensorflow as tf

from im2txt import configuration
from im2txt import file_io


def _stateless_seed(seed) -> tf.Tensor:
  """A stateless-random seed [2]: the given one, one made from an int, or a fresh random one."""
  if seed is None:
    return tf.random.uniform([2], minval=0, maxval=2**31 - 1, dtype=tf.int64)
  if isinstance(seed, int):
    return tf.constant([seed, 0], tf.int64)
  return tf.cast(seed, tf.int64)


def distort_image(image: tf.Tensor, seed=None) -> tf.Tensor:
  """Random flip and the original's colour distortions; image float [H,W,3] in [0,1].

  The original alternated two orders of the colour ops between its preprocessing threads; here
  each image draws one of the two orders at random. `seed` is a stateless-random seed (int64
  [2], an int, or None for a fresh one): the same seed gives the same distortion, whatever the
  parallelism of the tf.data map that runs this.
  """
  seeds = tf.random.experimental.stateless_split(_stateless_seed(seed), num=6)
  image = tf.image.stateless_random_flip_left_right(image, seed=seeds[0])

  def brightness(x):
    return tf.image.stateless_random_brightness(x, max_delta=32. / 255., seed=seeds[1])

  def saturation(x):
    return tf.image.stateless_random_saturation(x, lower=0.5, upper=1.5, seed=seeds[2])

  def hue(x):
    return tf.image.stateless_random_hue(x, max_delta=0.032, seed=seeds[3])

  def contrast(x):
    return tf.image.stateless_random_contrast(x, lower=0.5, upper=1.5, seed=seeds[4])

  order = tf.random.stateless_uniform([], seeds[5], minval=0, maxval=2, dtype=tf.int32)
  image = tf.cond(tf.equal(order, 0),
                  lambda: contrast(hue(saturation(brightness(image)))),
                  lambda: hue(saturation(contrast(brightness(image)))))
  # The random_* ops do not necessarily clamp.
  return tf.clip_by_value(image, 0.0, 1.0)


# A JPEG far larger than the model needs is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
# (tf.io.decode_jpeg's `ratio`): the largest that leaves both sides at least this many times the
# size it is resized to. MSCOCO's 640x480 photos (anything under 4x the resize size) decode at
# full scale, as the original's did; a 12000x12000 JPEG at 1/8 (1500x1500) for the default preset.
DCT_SCALE_MARGIN = 4
# Images that would decode to more pixels than this are refused before decoding (PIL's
# decompression-bomb limit; ~1.3 GB as uint8 and float32): PNG and GIF, which have no reduced
# scale. A JPEG is decoded at the scale that keeps it below (at 1/8, at most 65535^2 / 64).
MAX_DECODED_PIXELS = 89_478_485
_DCT_RATIOS = (1, 2, 4, 8)


def _header_int(encoded_image: tf.Tensor, offset: int, dtype, little_endian: bool) -> tf.Tensor:
  size = tf.as_dtype(dtype).size
  raw = tf.strings.substr(encoded_image, offset, size)
  return tf.cast(tf.io.decode_raw(raw, dtype, little_endian=little_endian)[0], tf.int64)


def image_size(encoded_image: tf.Tensor) -> tf.Tensor:
  """int64 [2]: (height, width) from the header of a JPEG, PNG or GIF (what tf.io.decode_jpeg
  reads), without decoding; (0, 0) for anything else and for a header cut short."""
  length = tf.strings.length(encoded_image)
  magic = tf.strings.substr(encoded_image, 0, 8)

  def starts(prefix: bytes, min_length: int):
    return (tf.strings.substr(magic, 0, len(prefix)) == prefix) & (length >= min_length)

  return tf.case([
      (starts(b"\xff\xd8\xff", 4),
       lambda: tf.cast(tf.image.extract_jpeg_shape(encoded_image)[:2], tf.int64)),
      (starts(b"\x89PNG\r\n\x1a\n", 24),
       lambda: tf.stack([_header_int(encoded_image, 20, tf.int32, False),
                         _header_int(encoded_image, 16, tf.int32, False)])),
      (starts(b"GIF8", 10),
       lambda: tf.stack([_header_int(encoded_image, 8, tf.uint16, True),
                         _header_int(encoded_image, 6, tf.uint16, True)])),
  ], default=lambda: tf.zeros([2], tf.int64), exclusive=True)


def decode_error_message(e: tf.errors.OpError) -> str:
  """Why an image did not decode, in one line: the first line of TensorFlow's message without
  its "{{function_node ...}}" and "[Op:...]" decorations, or decode_jpeg's pixel-limit sentence."""
  limit = re.search(r"The image is \d+x\d+ pixels [^'\]]*", e.message or "")
  return limit.group(0) if limit else file_io.tf_message(e)


def decode_jpeg(encoded_image: tf.Tensor, resize_to=None) -> tf.Tensor:
  """JPEG bytes (or PNG, GIF) -> float32 [H, W, 3] in [0, 1] (grayscale expanded to RGB).

  With `resize_to` (height, width), the size the image will be resized to, a JPEG of more than
  DCT_SCALE_MARGIN times that size is decoded at reduced scale; any JPEG that would decode to
  more than MAX_DECODED_PIXELS pixels is decoded at the scale that fits (1/8 always does). Any
  other image above it is an InvalidArgumentError saying so, raised before any memory is taken
  for it.
  """
  size = image_size(encoded_image)
  index = tf.constant(0)
  is_jpeg = tf.strings.substr(encoded_image, 0, 3) == b"\xff\xd8\xff"

  def pixels(ratio):  # Decoded at 1/ratio scale, libjpeg rounds each side up.
    decoded = (size + ratio - 1) // ratio
    return decoded[0] * decoded[1]

  if resize_to is not None:
    scale = tf.minimum(tf.cast(size[0], tf.float64) / resize_to[0],
                       tf.cast(size[1], tf.float64) / resize_to[1])
    for k, ratio in enumerate(_DCT_RATIOS[1:], 1):
      index = tf.where(is_jpeg & (scale >= ratio * DCT_SCALE_MARGIN), k, index)
  # A JPEG too large at that scale (a long panorama, whose short side set it) is decoded smaller
  # still, down to 1/8, rather than refused.
  for k in range(1, len(_DCT_RATIOS)):
    too_big = pixels(tf.constant(_DCT_RATIOS[k - 1], tf.int64)) > MAX_DECODED_PIXELS
    index = tf.where(is_jpeg & too_big, tf.maximum(index, k), index)
  ratio = tf.gather(tf.constant(_DCT_RATIOS, tf.int64), index)
  too_big = tf.debugging.Assert(pixels(ratio) <= MAX_DECODED_PIXELS, [tf.strings.format(
      "The image is {}x{} pixels (width x height): above the " + f"{MAX_DECODED_PIXELS:,}" +
      " pixels im2txt decodes; scale it down first", (size[1], size[0]))])
  with tf.control_dependencies([too_big]):
    image = tf.switch_case(index, [
        (lambda r=r: tf.io.decode_jpeg(encoded_image, channels=3, ratio=r))
        for r in _DCT_RATIOS])
  return tf.image.convert_image_dtype(image, dtype=tf.float32)


def resize_bilinear_legacy(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """float [H,W,C] -> float32 [height, width, C], with TF1's tf.image.resize_images(BILINEAR).

  Output pixel (y, x) samples the input at (y * H / height, x * W / width), without TF2's
  half-pixel offsets: on a 640x480 photo the two differ by up to ~0.25 on the [-1, 1] scale.
  """
  resized = tf.raw_ops.ResizeBilinear(images=image[tf.newaxis], size=[height, width],
                                      align_corners=False, half_pixel_centers=False)
  return resized[0]


def check_decodes(encoded_image: tf.Tensor) -> tf.Tensor:
  """decode_jpeg's checks at the least cost: a JPEG (of 32 pixels or more a side) decoded at 1/8
  scale, anything else as decode_jpeg decodes it; the same errors as decode_jpeg for any
  `resize_to` (the DCT scaling reads every coefficient of the file)."""
  return decode_jpeg(encoded_image, resize_to=(1, 1))


def preprocess_image(image: tf.Tensor, config: configuration.ModelConfig, is_training: bool,
                     seed=None) -> tf.Tensor:
  """Decoded float [H,W,3] in [0,1] -> model input [image_height, image_width, 3] in [-1, 1].

  `seed` (training only): a stateless-random seed for the crop and distortions, see
  distort_image.
  """
  if config.resize_height and config.resize_width:
    image = resize_bilinear_legacy(image, config.resize_height, config.resize_width)
  if is_training:
    crop_seed, distort_seed = tf.unstack(
        tf.random.experimental.stateless_split(_stateless_seed(seed), num=2))
    image = tf.image.stateless_random_crop(
        image, [config.image_height, config.image_width, 3], seed=crop_seed)
    if config.distort_colors:
      image = distort_image(image, seed=distort_seed)
    else:
      image = tf.image.stateless_random_flip_left_right(image, seed=distort_seed)
  else:
    image = tf.image.resize_with_crop_or_pad(image, config.image_height, config.image_width)
  return (image - 0.5) * 2.0


def process_image(encoded_image: tf.Tensor, config: configuration.ModelConfig,
                  is_training: bool, seed=None) -> tf.Tensor:
  """JPEG bytes -> model input float32 [image_height, image_width, 3] in [-1, 1]; a huge JPEG is
  decoded at reduced scale, a huge other image refused (see decode_jpeg)."""
  resize_to = ((config.resize_height, config.resize_width)
               if config.resize_height and config.resize_width
               else (config.image_height, config.image_width))
  return preprocess_image(decode_jpeg(encoded_image, resize_to), config, is_training, seed=seed)
