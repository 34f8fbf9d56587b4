r"""Memory and time of reading one huge JPEG into the model's input, against a full-scale decode.

  python -m bench.bench_huge_image --size=12000

Writes a --size x --size JPEG (smooth noise), then, each in a fresh process, reads it into the
default preset's model input (299x299 after a resize to 346) and reports the process's peak
resident memory and the read's time:
  product   image_processing.process_image, as training, run_inference, the SavedModel and the
            Beam jobs decode: this JPEG at 1/8 scale in the DCT domain (decode_jpeg's ratio)
  baseline  the same preprocessing after tf.io.decode_jpeg at full scale (what they did before)
Each process's memory before the read (TensorFlow imported, the file read) is printed too: the
read's own cost is the difference. Both outputs are compared (mean absolute difference on the
[-1, 1] scale; the baseline's plain bilinear resize aliases, the DCT scaling averages).

Then the cost of the header read on ordinary photos: --num_photos 640x480 JPEGs through a tf.data
map (AUTOTUNE) of each preprocessing, images/s, and whether the inputs are identical.
"""

import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

flags.DEFINE_integer("size", 12000, "Width and height of the JPEG.")
flags.DEFINE_integer("num_photos", 2000, "640x480 JPEGs of the throughput comparison.")
FLAGS = flags.FLAGS

_READ = r"""
import json, resource, sys, time
import numpy as np
import tensorflow as tf
from im2txt import configuration
from im2txt.model import image_processing
path, mode, out = sys.argv[1:]
config = configuration.default_config().model
data = tf.constant(open(path, "rb").read())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if mode == "product":
  read = lambda d: image_processing.process_image(d, config, is_training=False)
else:
  read = lambda d: image_processing.preprocess_image(tf.image.convert_image_dtype(
      tf.io.decode_jpeg(d, channels=3), tf.float32), config, is_training=False)
start = time.time()
image = read(data).numpy()
seconds = time.time() - start
np.save(out, image)
print(json.dumps({"before_mib": before, "peak_mib": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}))
"""


def _write_jpeg(path: str, size: int) -> None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  small = rng.uniform(0, 255, [64, 64, 3]).astype(np.float32)
  rows = []
  for top in range(0, size, 2000):  # Resized in bands: the whole float image would be 1.7 GB.
    band = tf.image.resize(small[tf.newaxis], [size, size])[0, top:top + 2000]
    rows.append(tf.cast(band, tf.uint8).numpy())
  tf.io.write_file(path, tf.io.encode_jpeg(np.concatenate(rows), quality=90))


def _run(path: str, mode: str, out: str) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  process = subprocess.run([sys.executable, "-c", _READ, path, mode, out], env=env,
                           capture_output=True, text=True, check=True)
  import json  # pylint: disable=import-outside-toplevel
  return json.loads(process.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "huge.jpg")
    # In a child process, so that this one's memory stays out of the figures.
    subprocess.run([sys.executable, "-c",
                    "import sys; from bench import bench_huge_image as b; "
                    "b._write_jpeg(sys.argv[1], int(sys.argv[2]))", path, str(FLAGS.size)],
                   check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    print(f"{FLAGS.size}x{FLAGS.size} JPEG, {os.path.getsize(path) / 2**20:.1f} MiB; default "
          "preset's input (resize 346, crop 299)")
    results = {}
    for mode in ("product", "baseline"):
      results[mode] = _run(path, mode, os.path.join(tmp, f"{mode}.npy"))
      r = results[mode]
      print(f"  {mode:8s}  peak {r['peak_mib']:7.0f} MiB (before the read {r['before_mib']:.0f}: "
            f"the read +{r['peak_mib'] - r['before_mib']:.0f} MiB), {r['seconds']:.2f} s")
    product, baseline = results["product"], results["baseline"]
    difference = np.mean(np.abs(np.load(os.path.join(tmp, "product.npy")) -
                                np.load(os.path.join(tmp, "baseline.npy"))))
    saved = ((baseline["peak_mib"] - baseline["before_mib"]) /
             max(1.0, product["peak_mib"] - product["before_mib"]))
    print(f"ratio: the read takes {saved:.1f}x less memory and is "
          f"{baseline['seconds'] / product['seconds']:.1f}x faster; mean absolute "
          f"difference of the inputs {difference:.4f} (on [-1, 1])")
  _photo_throughput()


def _photo_throughput() -> None:
  import time  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from im2txt import configuration  # pylint: disable=import-outside-toplevel
  from im2txt.model import image_processing  # pylint: disable=import-outside-toplevel
  config = configuration.default_config().model
  rng = np.random.default_rng(1)
  photos = [tf.io.encode_jpeg(rng.integers(0, 255, [480, 640, 3], dtype=np.uint8).astype(
      np.uint8), quality=90).numpy() for _ in range(16)]
  data = tf.data.Dataset.from_tensor_slices(photos).repeat(FLAGS.num_photos // 16)
  preprocessings = {
      "product": lambda d: image_processing.process_image(d, config, is_training=False),
      "baseline": lambda d: image_processing.preprocess_image(tf.image.convert_image_dtype(
          tf.io.decode_jpeg(d, channels=3), tf.float32), config, is_training=False),
  }
  rates, outputs = {}, {}
  for name, preprocess in preprocessings.items():
    dataset = data.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).batch(32)
    for _ in dataset.take(2):  # Warm-up.
      pass
    start = time.time()
    count = sum(int(batch.shape[0]) for batch in dataset)
    rates[name] = count / (time.time() - start)
    outputs[name] = preprocess(tf.constant(photos[0])).numpy()
  print(f"{FLAGS.num_photos} 640x480 JPEGs: product {rates['product']:,.0f} images/s, baseline "
        f"{rates['baseline']:,.0f} images/s, ratio {rates['product'] / rates['baseline']:.2f}x; "
        f"identical inputs: {bool(np.array_equal(outputs['product'], outputs['baseline']))}")


if __name__ == "__main__":
  app.run(main)
