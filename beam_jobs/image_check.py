"""Decides what to do with one image file: keep its bytes, convert it to an RGB JPEG, or drop it.

The records' `image/data` must decode with tf.io.decode_jpeg(channels=3) in the input pipeline
(and in the original im2txt). What a user expects for each kind of file:

  file                                  action                    counter (build_report)
  JPEG, RGB or grayscale, that decodes  keep the bytes unchanged  images_grayscale_kept (gray)
  JPEG in CMYK / YCCK                   convert to an RGB JPEG    images_converted_cmyk
  PNG data (whatever the file name)     convert to an RGB JPEG    images_converted_png
  GIF, BMP, WebP, TIFF ... that decode  convert to an RGB JPEG    images_converted_other_format
  zero bytes                            drop                      images_dropped_empty_file
  truncated or corrupt image data       drop                      images_dropped_corrupt_image
  not image data at all (HTML, text)    drop                      images_dropped_not_an_image
  listed but missing on disk            drop                      images_dropped_missing_file
  other read errors                     drop                      images_dropped_unreadable

Grayscale JPEGs are kept as they are: every JPEG decoder expands them to RGB, and re-encoding
would only lose quality. CMYK JPEGs decode in TF 2 but not in every tool, so they are normalised.
The decode check of a JPEG that is kept uses TensorFlow's own decoder (the input pipeline's) at
1/8 scale: the whole entropy-coded stream is read, so truncation and corruption are caught, at
a fraction of a full decode's cost.
"""

import dataclasses
import io
from typing import Optional

import tensorflow as tf
from PIL import Image

from beam_jobs import build_report
from im2txt.model import image_processing

KEEP = "keep"
CONVERT = "convert"
DROP = "drop"

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Quality of the JPEGs written for converted images (high: they are training data).
CONVERTED_JPEG_QUALITY = 95


@dataclasses.dataclass(frozen=True)
class CheckedImage:
  """The decision for one image: `data` holds the JPEG bytes to store unless dropped.

  `reason` is the build_report counter name of the event ("" for a plain RGB JPEG kept).
  """
  action: str
  reason: str
  data: Optional[bytes] = None


def _drop(reason: str) -> CheckedImage:
  return CheckedImage(DROP, reason)


def to_rgb_jpeg(image: Image.Image) -> bytes:
  """Encodes a decoded PIL image as an RGB JPEG; transparency is composited over white."""
  if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    rgb = Image.new("RGB", rgba.size, (255, 255, 255))
    rgb.paste(rgba, mask=rgba.getchannel("A"))
  else:
    rgb = image.convert("RGB")
  buffer = io.BytesIO()
  rgb.save(buffer, "JPEG", quality=CONVERTED_JPEG_QUALITY)
  return buffer.getvalue()


def tf_error_message(e: tf.errors.OpError) -> str:
  """The first line of TensorFlow's message, without its decorations (see
  image_processing.decode_error_message)."""
  return image_processing.decode_error_message(e)


def tf_decode_problem(data: bytes, ratio: int = 8) -> Optional[str]:
  """None if tf.io.decode_jpeg (the input pipeline's and the SavedModel's decoder; it reads PNG
  and GIF too) decodes `data` at 1/ratio scale, else the first line of its message."""
  try:
    tf.io.decode_jpeg(data, channels=3, ratio=ratio)
    return None
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    return tf_error_message(e)


def jpeg_components(data: bytes) -> Optional[int]:
  """Number of colour components in a JPEG's frame header (1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK).

  Scans the marker segments up to the first SOFn marker; None when there is none (corrupt).
  Much cheaper than a full header parse, and exact.
  """
  i, n = 2, len(data)
  while i + 4 <= n:
    if data[i] != 0xFF:
      return None
    marker = data[i + 1]
    if marker == 0xFF:  # Fill byte.
      i += 1
      continue
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn, not DHT/JPG/DAC.
      return data[i + 9] if i + 9 < n else None
    i += 2 + ((data[i + 2] << 8) | data[i + 3])
  return None


def _convert(data: bytes, reason: str, undecodable_reason: str) -> CheckedImage:
  """Decodes any format PIL knows and re-encodes it as an RGB JPEG."""
  try:
    image = Image.open(io.BytesIO(data))
  except Exception:  # PIL raises many types on unknown data. pylint: disable=broad-except
    return _drop(undecodable_reason)
  try:
    image.load()
    return CheckedImage(CONVERT, reason, to_rgb_jpeg(image))
  except Exception:  # pylint: disable=broad-except
    return _drop("images_dropped_corrupt_image")


def check_image_bytes(data: bytes) -> CheckedImage:
  """The decision for an image file's bytes (see the module docstring)."""
  if not data:
    return _drop("images_dropped_empty_file")
  if data.startswith(JPEG_MAGIC):
    components = jpeg_components(data)
    if components in (1, 3):
      if tf_decode_problem(data) is not None:
        return _drop("images_dropped_corrupt_image")
      return CheckedImage(KEEP, build_report.GRAYSCALE_KEPT if components == 1 else "", data)
    if components is None:
      return _drop("images_dropped_corrupt_image")
    return _convert(data, "images_converted_cmyk" if components == 4
                    else "images_converted_other_format", "images_dropped_corrupt_image")
  if data.startswith(PNG_MAGIC):
    return _convert(data, "images_converted_png", "images_dropped_corrupt_image")
  return _convert(data, "images_converted_other_format", "images_dropped_not_an_image")


def read_and_check_image(path: str) -> CheckedImage:
  """Reads `path` (local or any tf.io.gfile file system) and checks its bytes."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
  except tf.errors.NotFoundError:
    return _drop("images_dropped_missing_file")
  except (tf.errors.OpError, OSError):
    return _drop("images_dropped_unreadable")
  return check_image_bytes(data)
