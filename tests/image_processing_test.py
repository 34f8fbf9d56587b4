"""Tests for im2txt.model.image_processing: decoding, crops, distortions and their seeds."""

import dataclasses
import io
import struct
from unittest import mock
import zlib

import numpy as np
from PIL import Image
import tensorflow as tf

from im2txt import configuration
from im2txt.model import image_processing


def _config(**overrides) -> configuration.ModelConfig:
  return dataclasses.replace(configuration.small_config().model, **overrides)


def _legacy_bilinear_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """TF1's ResizeBilinear (align_corners=False, no half-pixel centres) in NumPy, float64.

  Output row y samples input row in_y = y * in_h / out_h: rows y0 = floor(in_y) and
  y1 = min(y0 + 1, in_h - 1), mixed by dy = in_y - y0; columns likewise. in_y is computed in
  float32 as the kernel does: near row 600 float32's spacing (6e-5) exceeds the tests' tolerance.
  """
  def source(out_size, in_size):
    coord = (np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size))
    coord = coord.astype(np.float64)
    low = np.floor(coord).astype(np.int64)
    return low, np.minimum(low + 1, in_size - 1), coord - low

  y0, y1, dy = source(out_h, image.shape[0])
  x0, x1, dx = source(out_w, image.shape[1])
  image = image.astype(np.float64)
  rows = image[y0] + (image[y1] - image[y0]) * dy[:, None, None]
  return rows[:, x0] + (rows[:, x1] - rows[:, x0]) * dx[None, :, None]


def _central_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
  top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
  return image[top:top + height, left:left + width]


def _random_image(height: int, width: int) -> np.ndarray:
  return np.random.default_rng(height * 1000 + width).random([height, width, 3], np.float32)


class DecodeTest(tf.test.TestCase):

  def test_rgb_jpeg_to_float_in_unit_range(self):
    pixels = np.zeros([8, 8, 3], np.uint8) + np.array([255, 128, 0], np.uint8)
    image = image_processing.decode_jpeg(tf.io.encode_jpeg(pixels, quality=100))
    self.assertEqual(image.dtype, tf.float32)
    self.assertEqual(image.shape, (8, 8, 3))
    self.assertAllClose(tf.reduce_mean(image, axis=[0, 1]), [1.0, 128 / 255, 0.0], atol=0.02)

  def test_grayscale_jpeg_becomes_three_channels(self):
    pixels = np.full([6, 10, 1], 200, np.uint8)
    image = image_processing.decode_jpeg(tf.io.encode_jpeg(pixels, quality=100))
    self.assertEqual(image.shape, (6, 10, 3))
    self.assertAllClose(image, np.full([6, 10, 3], 200 / 255, np.float32), atol=0.01)

  def test_not_a_jpeg_is_an_error(self):
    with self.assertRaises(tf.errors.InvalidArgumentError):
      image_processing.decode_jpeg(tf.constant(b"not an image"))


def _png_header(width: int, height: int) -> bytes:
  """A PNG's signature and IHDR chunk (the rest of the file missing): what a decoder reads to
  allocate the image."""
  ihdr = struct.pack(">II", width, height) + b"\x08\x02\x00\x00\x00"
  return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr +
          struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


class HugeImageTest(tf.test.TestCase):
  """Images far larger than the model needs: a JPEG decodes at reduced scale, a PNG or GIF
  above the pixel limit is refused before it is decoded."""

  def _jpeg(self, height, width):
    return tf.io.encode_jpeg((_random_image(height, width) * 255).astype(np.uint8), quality=90)

  def test_image_size_from_the_header(self):
    for fmt in ("JPEG", "PNG", "GIF"):
      buffer = io.BytesIO()
      Image.new("RGB", (37, 21), (200, 10, 10)).save(buffer, fmt)
      self.assertAllEqual(image_processing.image_size(tf.constant(buffer.getvalue())), [21, 37],
                          msg=fmt)
    self.assertAllEqual(image_processing.image_size(tf.constant(_png_header(30000, 20000))),
                        [20000, 30000])
    for data in (b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"not an image"):
      self.assertAllEqual(image_processing.image_size(tf.constant(data)), [0, 0], msg=data)

  def test_photo_sized_jpeg_decodes_at_full_scale(self):
    # MSCOCO's 640x480 for the default preset (346) and the small one (80): as before.
    encoded = self._jpeg(480, 640)
    full = tf.image.convert_image_dtype(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    for resize_to in ((346, 346), (80, 80), None):
      self.assertAllEqual(image_processing.decode_jpeg(encoded, resize_to), full)

  def test_far_larger_jpeg_decodes_at_reduced_scale(self):
    encoded = self._jpeg(1300, 1400)
    # 1300 / 80 = 16.25: at least 4 x 4 times the resize size, not 4 x 8: 1/4 scale.
    decoded = image_processing.decode_jpeg(encoded, (80, 80))
    self.assertEqual(decoded.shape, (325, 350, 3))
    self.assertAllEqual(decoded, tf.image.convert_image_dtype(
        tf.io.decode_jpeg(encoded, channels=3, ratio=4), tf.float32))
    self.assertEqual(image_processing.decode_jpeg(encoded, (346, 346)).shape, (1300, 1400, 3))
    # Through the model's preprocessing, compiled, as training and inference run it.
    config = _config()
    process = tf.function(lambda data: image_processing.process_image(data, config, False))
    self.assertAllEqual(process(encoded), image_processing.preprocess_image(
        decoded, config, is_training=False))

  def test_a_jpeg_over_the_pixel_limit_is_decoded_smaller_not_refused(self):
    # A panorama whose short side asks for full scale: here 200x150 under a 10,000-pixel limit.
    encoded = self._jpeg(150, 200)
    with mock.patch.object(image_processing, "MAX_DECODED_PIXELS", 10_000):
      decoded = image_processing.decode_jpeg(encoded, (80, 80))
      self.assertEqual(decoded.shape, (75, 100, 3))  # 1/2: 7,500 pixels.
      self.assertEqual(image_processing.decode_jpeg(encoded).shape, (75, 100, 3))
      self.assertEqual(image_processing.check_decodes(encoded).shape, (19, 25, 3))  # 1/8.
    self.assertAllEqual(decoded, tf.image.convert_image_dtype(
        tf.io.decode_jpeg(encoded, channels=3, ratio=2), tf.float32))

  def test_over_the_pixel_limit_is_refused_with_its_size(self):
    header = tf.constant(_png_header(30000, 20000))
    for decode in (image_processing.decode_jpeg,
                   tf.function(lambda data: image_processing.process_image(
                       data, _config(), is_training=False))):
      with self.assertRaises(tf.errors.InvalidArgumentError) as raised:
        decode(header)
      self.assertEqual(image_processing.decode_error_message(raised.exception),
                       "The image is 30000x20000 pixels (width x height): above the 89,478,485 "
                       "pixels im2txt decodes; scale it down first")
    # At the limit, the header passes and the (missing) data is what fails.
    with self.assertRaises(tf.errors.InvalidArgumentError) as raised:
      image_processing.decode_jpeg(tf.constant(_png_header(9459, 9459)))
    self.assertNotIn("pixels im2txt decodes", raised.exception.message)
    self.assertLessEqual(9459 * 9459, image_processing.MAX_DECODED_PIXELS)


class EvalPreprocessingTest(tf.test.TestCase):

  def test_central_crop_without_resize_is_exact(self):
    image = tf.random.stateless_uniform([90, 100, 3], seed=[1, 2])
    config = _config(resize_height=0, resize_width=0)
    out = image_processing.preprocess_image(image, config, is_training=False)
    # 75x75 centred in 90x100: rows 7..81, columns 12..86.
    self.assertAllClose(out, (image[7:82, 12:87] - 0.5) * 2.0)

  def test_resize_then_crop_of_solid_image_keeps_its_colour(self):
    pixels = np.zeros([50, 60, 3], np.uint8) + np.array([255, 0, 128], np.uint8)
    encoded = tf.io.encode_jpeg(pixels, quality=100)
    out = image_processing.process_image(encoded, _config(), is_training=False)
    self.assertEqual(out.shape, (75, 75, 3))
    expected = (np.array([255, 0, 128]) / 255 - 0.5) * 2
    self.assertAllClose(tf.reduce_mean(out, axis=[0, 1]), expected, atol=0.03)

  def test_eval_ignores_the_seed(self):
    image = tf.random.stateless_uniform([90, 90, 3], seed=[3, 4])
    a = image_processing.preprocess_image(image, _config(), is_training=False, seed=1)
    b = image_processing.preprocess_image(image, _config(), is_training=False, seed=2)
    self.assertAllEqual(a, b)


class TrainPreprocessingTest(tf.test.TestCase):

  def test_shape_and_range(self):
    image = tf.random.stateless_uniform([120, 90, 3], seed=[5, 6])
    for seed in range(5):
      out = image_processing.preprocess_image(image, _config(), is_training=True, seed=seed)
      self.assertEqual(out.shape, (75, 75, 3))
      self.assertBetween(float(tf.reduce_min(out)), -1.0, 1.0)
      self.assertBetween(float(tf.reduce_max(out)), -1.0, 1.0)

  def test_same_seed_same_output_different_seed_different_output(self):
    image = tf.random.stateless_uniform([100, 100, 3], seed=[7, 8])
    config = _config()
    a = image_processing.preprocess_image(image, config, is_training=True, seed=[3, 9])
    b = image_processing.preprocess_image(image, config, is_training=True,
                                          seed=tf.constant([3, 9], tf.int64))
    c = image_processing.preprocess_image(image, config, is_training=True, seed=[4, 9])
    self.assertAllEqual(a, b)
    self.assertGreater(float(tf.reduce_max(tf.abs(a - c))), 0.01)

  def test_without_seed_each_call_differs(self):
    image = tf.random.stateless_uniform([100, 100, 3], seed=[7, 8])
    a = image_processing.preprocess_image(image, _config(), is_training=True)
    b = image_processing.preprocess_image(image, _config(), is_training=True)
    self.assertGreater(float(tf.reduce_max(tf.abs(a - b))), 0.0)

  def test_grey_image_only_changes_brightness_within_32_levels(self):
    # Saturation and hue do nothing to grey, contrast keeps a uniform image's mean: what is left
    # is the original's brightness delta of at most 32/255.
    grey = tf.fill([40, 40, 3], 0.5)
    deltas = []
    for seed in range(20):
      out = image_processing.distort_image(grey, seed=seed)
      self.assertAllClose(out, tf.fill([40, 40, 3], float(out[0, 0, 0])), atol=1e-5)
      deltas.append(float(out[0, 0, 0]) - 0.5)
    self.assertLessEqual(max(abs(d) for d in deltas), 32 / 255 + 1e-5)
    self.assertGreater(len({round(d, 4) for d in deltas}), 10)

  def test_flips_half_of_the_time(self):
    # Dark left half, light right half; colour ops preserve which side is lighter.
    image = tf.concat([tf.fill([20, 10, 3], 0.2), tf.fill([20, 10, 3], 0.8)], axis=1)
    flips = 0
    for seed in range(40):
      out = image_processing.distort_image(image, seed=seed)
      left, right = tf.reduce_mean(out[:, :10]), tf.reduce_mean(out[:, 10:])
      self.assertNotAllClose(left, right)
      flips += int(left > right)
    self.assertBetween(flips, 8, 32)

  def test_distort_colors_off_keeps_the_colours_and_still_flips(self):
    # Left half red, right half blue: without colour distortions every output is the image or
    # its mirror, exactly (no resize, the crop is the whole image).
    image = tf.concat([tf.fill([75, 40, 3], 0.0) + [0.9, 0.1, 0.1],
                       tf.fill([75, 35, 3], 0.0) + [0.1, 0.1, 0.9]], axis=1)
    config = _config(resize_height=0, resize_width=0, distort_colors=False)
    expected = (image - 0.5) * 2
    flips = 0
    for seed in range(20):
      out = image_processing.preprocess_image(image, config, is_training=True, seed=seed)
      if np.allclose(out, expected[:, ::-1], atol=1e-6):
        flips += 1
      else:
        self.assertAllClose(out, expected, atol=1e-6)
    self.assertBetween(flips, 3, 17)
    # With them (the default), the colours change.
    out = image_processing.preprocess_image(image, _config(resize_height=0, resize_width=0,
                                                           distort_colors=True),
                                            is_training=True, seed=0)
    self.assertFalse(np.allclose(out, expected, atol=0.01) or
                     np.allclose(out, expected[:, ::-1], atol=0.01))

  def test_random_crop_is_a_window_of_the_resized_image(self):
    image = tf.random.stateless_uniform([80, 80, 3], seed=[9, 9])
    config = _config(resize_height=80, resize_width=80, distort_colors=True)
    offsets = set()
    # Distortions off, to compare the crop with the windows of the (unchanged) 80x80 image.
    with mock.patch.object(image_processing, "distort_image", lambda x, seed: x):
      for seed in range(8):
        out = image_processing.preprocess_image(image, config, is_training=True, seed=seed)
        matches = [(r, c) for r in range(6) for c in range(6)
                   if np.allclose((image[r:r + 75, c:c + 75] - 0.5) * 2, out, atol=1e-6)]
        self.assertLen(matches, 1)
        offsets.add(matches[0])
    self.assertGreater(len(offsets), 3)


class LegacyResizeTest(tf.test.TestCase):
  """The original's resize (TF1 bilinear, no half-pixel centres) at its sizes: 346 -> 299."""

  # (height, width): landscape and portrait photos, odd sizes, already 346, an upscale.
  SIZES = [(480, 640), (640, 480), (333, 500), (457, 123), (346, 346), (150, 200)]

  def _expected(self, image, config):
    resized = _legacy_bilinear_resize(image, config.resize_height, config.resize_width)
    return (_central_crop(resized, config.image_height, config.image_width) - 0.5) * 2.0

  def test_eval_preprocessing_is_the_legacy_resize_then_central_crop(self):
    config = configuration.ModelConfig()
    for height, width in self.SIZES:
      image = _random_image(height, width)
      out = image_processing.preprocess_image(tf.constant(image), config, is_training=False)
      self.assertEqual(out.dtype, tf.float32)
      self.assertEqual(out.shape, (299, 299, 3))
      diff = np.max(np.abs(out.numpy() - self._expected(image, config)))
      self.assertLess(diff, 1e-5, f"{height}x{width}")
      # The original's own calls, through TF's v1 API.
      legacy = tf.compat.v1.image.resize_images(image, [346, 346],
                                                method=tf.image.ResizeMethod.BILINEAR)
      legacy = (tf.image.resize_with_crop_or_pad(legacy, 299, 299) - 0.5) * 2.0
      self.assertAllEqual(out, legacy)

  def test_jpeg_through_process_image(self):
    config = configuration.ModelConfig()
    pixels = (_random_image(480, 640) * 255).astype(np.uint8)
    encoded = tf.io.encode_jpeg(pixels, quality=90)
    out = image_processing.process_image(encoded, config, is_training=False)
    decoded = tf.io.decode_jpeg(encoded, channels=3).numpy() / 255.0
    self.assertLess(np.max(np.abs(out.numpy() - self._expected(decoded, config))), 1e-5)

  def test_tf2_half_pixel_resize_differs(self):
    # What preprocessing did before: the tests above would catch a return to it.
    config = configuration.ModelConfig()
    image = _random_image(480, 640)
    tf2 = tf.image.resize(image, [346, 346], method=tf.image.ResizeMethod.BILINEAR)
    tf2 = (tf.image.resize_with_crop_or_pad(tf2, 299, 299) - 0.5) * 2.0
    self.assertGreater(np.max(np.abs(tf2.numpy() - self._expected(image, config))), 0.01)

  def test_training_crop_is_a_window_of_the_legacy_resize(self):
    # Without colour distortions a training image is a 75x75 window of the 80x80 resize, or
    # its mirror.
    config = _config(distort_colors=False)
    image = _random_image(90, 120)
    resized = (_legacy_bilinear_resize(image, 80, 80) - 0.5) * 2.0
    for seed in range(4):
      out = image_processing.preprocess_image(tf.constant(image), config, is_training=True,
                                              seed=seed).numpy()
      matches = [(r, c, flip) for r in range(6) for c in range(6) for flip in (False, True)
                 if np.max(np.abs((out[:, ::-1] if flip else out) -
                                  resized[r:r + 75, c:c + 75])) < 1e-5]
      self.assertLen(matches, 1)

  def test_dynamic_shape_in_tf_function_and_tf_data(self):
    config = _config(distort_colors=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def preprocess(image):
      return (image_processing.preprocess_image(image, config, is_training=False),
              image_processing.preprocess_image(image, config, is_training=True, seed=7))

    images = [_random_image(60, 90), _random_image(97, 41)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.float32))
    dataset = dataset.map(preprocess)
    self.assertEqual(dataset.element_spec[0].shape, (75, 75, 3))
    for image, (eval_out, train_out) in zip(images, dataset):
      self.assertAllEqual(eval_out, image_processing.preprocess_image(
          tf.constant(image), config, is_training=False))
      self.assertAllEqual(train_out, image_processing.preprocess_image(
          tf.constant(image), config, is_training=True, seed=7))


if __name__ == "__main__":
  tf.test.main()
