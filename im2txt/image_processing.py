"""Image decoding and preprocessing, the original im2txt's (image_processing.py) in TF2.

Training: decode -> float [0,1] -> resize to (resize_height, resize_width) -> random crop to
(image_height, image_width) -> random flip -> colour distortions -> scale to [-1, 1].
Evaluation and inference: the same with a central crop and no distortion.
"""

import tensorflow as tf

from im2txt import configuration


def distort_image(image: tf.Tensor, seed=None) -> tf.Tensor:
  """Random flip and the original's colour distortions; image float [H,W,3] in [0,1].

  The original alternated two orders of the colour ops between its preprocessing threads; here
  each image draws one of the two orders at random.
  """
  image = tf.image.random_flip_left_right(image, seed=seed)

  def brightness_saturation_hue_contrast():
    x = tf.image.random_brightness(image, max_delta=32. / 255., seed=seed)
    x = tf.image.random_saturation(x, lower=0.5, upper=1.5, seed=seed)
    x = tf.image.random_hue(x, max_delta=0.032, seed=seed)
    return tf.image.random_contrast(x, lower=0.5, upper=1.5, seed=seed)

  def brightness_contrast_saturation_hue():
    x = tf.image.random_brightness(image, max_delta=32. / 255., seed=seed)
    x = tf.image.random_contrast(x, lower=0.5, upper=1.5, seed=seed)
    x = tf.image.random_saturation(x, lower=0.5, upper=1.5, seed=seed)
    return tf.image.random_hue(x, max_delta=0.032, seed=seed)

  order = tf.random.uniform([], 0, 2, dtype=tf.int32, seed=seed)
  image = tf.cond(tf.equal(order, 0), brightness_saturation_hue_contrast,
                  brightness_contrast_saturation_hue)
  return tf.clip_by_value(image, 0.0, 1.0)


def decode_jpeg(encoded_image: tf.Tensor) -> tf.Tensor:
  """JPEG bytes -> float32 [H, W, 3] in [0, 1] (grayscale JPEGs are expanded to RGB)."""
  image = tf.io.decode_jpeg(encoded_image, channels=3)
  return tf.image.convert_image_dtype(image, dtype=tf.float32)


def preprocess_image(image: tf.Tensor, config: configuration.ModelConfig, is_training: bool,
                     seed=None) -> tf.Tensor:
  """Decoded float [H,W,3] in [0,1] -> model input [image_height, image_width, 3] in [-1, 1]."""
  if config.resize_height and config.resize_width:
    image = tf.image.resize(image, [config.resize_height, config.resize_width],
                            method=tf.image.ResizeMethod.BILINEAR)
  if is_training:
    image = tf.image.random_crop(image, [config.image_height, config.image_width, 3], seed=seed)
    image = distort_image(image, seed=seed)
  else:
    image = tf.image.resize_with_crop_or_pad(image, config.image_height, config.image_width)
  return (image - 0.5) * 2.0


def process_image(encoded_image: tf.Tensor, config: configuration.ModelConfig,
                  is_training: bool, seed=None) -> tf.Tensor:
  """JPEG bytes -> model input float32 [image_height, image_width, 3] in [-1, 1]."""
  return preprocess_image(decode_jpeg(encoded_image), config, is_training, seed=seed)
