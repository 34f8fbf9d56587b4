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

import tensorflow as tf

from im2txt import configuration


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


def decode_jpeg(encoded_image: tf.Tensor) -> tf.Tensor:
  """JPEG bytes -> float32 [H, W, 3] in [0, 1] (grayscale JPEGs are expanded to RGB)."""
  image = tf.io.decode_jpeg(encoded_image, channels=3)
  return tf.image.convert_image_dtype(image, dtype=tf.float32)


def resize_bilinear_legacy(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """float [H,W,C] -> float32 [height, width, C], with TF1's tf.image.resize_images(BILINEAR).

  Output pixel (y, x) samples the input at (y * H / height, x * W / width), without TF2's
  half-pixel offsets: on a 640x480 photo the two differ by up to ~0.25 on the [-1, 1] scale.
  """
  resized = tf.raw_ops.ResizeBilinear(images=image[tf.newaxis], size=[height, width],
                                      align_corners=False, half_pixel_centers=False)
  return resized[0]


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
  """JPEG bytes -> model input float32 [image_height, image_width, 3] in [-1, 1]."""
  return preprocess_image(decode_jpeg(encoded_image), config, is_training, seed=seed)
