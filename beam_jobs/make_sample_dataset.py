r"""Writes a small COCO-format dataset whose captions are learnable from the pixels.

Each image is one coloured shape (6 colours x 5 shapes) on a white, black or gray background,
with 5 captions in varied phrasings that always name the shape's colour and shape word ("a red
circle on a white background", "the star is blue", ...). As in a photo, the shape sits anywhere
in the image, at any size from a sixth to a half of the image's width, turned by up to 30
degrees, in jittered colours, on a background lit unevenly (a brightness gradient), with sensor
noise over everything.
The vocabulary is 30 words plus <S> and </S>, so it fits the small preset's vocab_size of 64.

  bazel run //beam_jobs:make_sample_dataset -- --output_dir=/tmp/im2txt_sample

writes, like MSCOCO 2014:
  OUT/train2014/COCO_train2014_000000000001.jpg ...   OUT/captions_train2014.json
  OUT/val2014/COCO_val2014_000000500001.jpg ...       OUT/captions_val2014.json
Each `images` entry also carries its ground truth: "colour", "shape" and "background", and
where the shape was drawn, "placement" (COCO readers ignore extra fields). For a captioner's accuracy: `split_images(dataset, "test")` lists
the test split's image files with their labels, `caption_colour_shape(caption)` reads (colour,
shape) back from a caption, `is_correct_caption(caption, label)` compares them, and
`load_labels(captions_file)` maps every image id to its label.
"""

import argparse
import dataclasses
import io
import json
import math
import os
import random
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image
from PIL import ImageDraw

from beam_jobs import caption_metadata
from im2txt import file_io
from im2txt import vocabulary

# The shape colours and their RGB values; background colours are separate words, so a caption's
# only shape-colour word is the shape's.
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (40, 70, 220),
           "yellow": (240, 215, 30), "purple": (140, 50, 170), "orange": (245, 135, 20)}
SHAPES = ("circle", "square", "triangle", "star", "cross")
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128)}
# Caption phrasings: {a} is the article before the colour, {c} colour, {s} shape, {b} background.
TEMPLATES = (
    "{a} {c} {s} on a {b} background",
    "there is {a} {c} {s} in the picture",
    "a picture of {a} {c} {s}",
    "{a} {c} {s} in front of a {b} background",
    "the {s} is {c}",
    "an image showing {a} {c} {s}",
    "a {b} background with {a} {c} {s} on it",
    "a single {c} {s}",
)
CAPTIONS_PER_IMAGE = 5
# First image id of each split (ids are unique across the two files, as in MSCOCO).
TRAIN_FIRST_ID = 1
VAL_FIRST_ID = 500001
JPEG_QUALITY = 90
# The shape's 'radius' (half its width), as a fraction of the image's size: from a sixth to a
# half of the image wide.
SHAPE_RADIUS = (1 / 12, 1 / 4)
# The shape's whole outline stays this far (a fraction of the size) from the image's edges, so
# the model's central crop (75 of 80 pixels) keeps all of it.
SHAPE_MARGIN = 0.04
# The largest turn of a shape, in degrees either way.
MAX_ROTATION_DEGREES = 30.0
# Uneven lighting: the background's brightness changes by up to this much across the image, in a
# random direction; then Gaussian noise of this standard deviation over every pixel.
LIGHTING_GRADIENT = 40
NOISE_STDDEV = 6.0


class Label(NamedTuple):
  """The ground truth of one image."""
  colour: str
  shape: str
  background: str


class Placement(NamedTuple):
  """Where a shape was drawn, in pixels and degrees (counter-clockwise)."""
  x: float
  y: float
  radius: float
  rotation: float


class LabelledImage(NamedTuple):
  image_id: int
  path: str
  label: Label


@dataclasses.dataclass(frozen=True)
class SampleDataset:
  """Where make_sample_dataset wrote things."""
  train_image_dir: str
  val_image_dir: str
  train_captions_file: str
  val_captions_file: str

  def build_args(self) -> List[str]:
    """The build_mscoco_data input flags for this dataset."""
    return [f"--train_image_dir={self.train_image_dir}",
            f"--val_image_dir={self.val_image_dir}",
            f"--train_captions_file={self.train_captions_file}",
            f"--val_captions_file={self.val_captions_file}"]


def caption_colour_shape(caption: str) -> Tuple[Optional[str], Optional[str]]:
  """The first colour word and first shape word of a caption (None when absent).

  >>> caption_colour_shape("<S> there is a red circle in the picture </S>")
  ('red', 'circle')
  """
  tokens = vocabulary.tokenize_caption(caption)
  colour = next((t for t in tokens if t in COLOURS), None)
  shape = next((t for t in tokens if t in SHAPES), None)
  return colour, shape


def is_correct_caption(caption: str, label: Label) -> bool:
  """True when the caption names the image's colour and shape."""
  return caption_colour_shape(caption) == (label.colour, label.shape)


def load_labels(captions_file: str) -> Dict[int, Label]:
  """Image id -> Label, from a captions file written by make_sample_dataset."""
  with tf.io.gfile.GFile(captions_file, "r") as f:
    data = json.load(f)
  return {image["id"]: Label(image["colour"], image["shape"], image["background"])
          for image in data["images"]}


def split_images(dataset: SampleDataset, split: str) -> List[LabelledImage]:
  """The images build_mscoco_data puts in `split` ("train", "val" or "test"), with their labels.

  E.g. the test images to caption and score: split_images(dataset, "test").
  """
  def labelled(captions_file, image_dir):
    with tf.io.gfile.GFile(captions_file, "r") as f:
      images = json.load(f)["images"]
    return [LabelledImage(image["id"], os.path.join(image_dir, image["file_name"]),
                          Label(image["colour"], image["shape"], image["background"]))
            for image in images]
  return caption_metadata.split_coco(
      labelled(dataset.train_captions_file, dataset.train_image_dir),
      labelled(dataset.val_captions_file, dataset.val_image_dir))[split]


def captions_for(label: Label, rng: random.Random) -> List[str]:
  """CAPTIONS_PER_IMAGE different phrasings for one image."""
  article = "an" if label.colour[0] in "aeiou" else "a"
  templates = rng.sample(TEMPLATES, CAPTIONS_PER_IMAGE)
  return [t.format(a=article, c=label.colour, s=label.shape, b=label.background)
          for t in templates]


def shape_polygon(shape: str, cx: float, cy: float, r: float,
                  rotation: float = 0.0) -> List[Tuple[float, float]]:
  """The outline of a shape of 'radius' r centred at (cx, cy), turned by `rotation` degrees
  counter-clockwise (a circle is a 48-gon)."""
  if shape == "circle":
    outline = [(r * math.cos(2 * math.pi * k / 48), r * math.sin(2 * math.pi * k / 48))
               for k in range(48)]
  elif shape == "square":
    h = r * 0.85
    outline = [(-h, -h), (h, -h), (h, h), (-h, h)]
  elif shape == "triangle":
    outline = [(r * math.cos(math.pi / 2 + 2 * math.pi * k / 3),
                -r * math.sin(math.pi / 2 + 2 * math.pi * k / 3)) for k in range(3)]
  elif shape == "star":
    outline = [((r if k % 2 == 0 else 0.42 * r) * math.cos(math.pi / 2 + math.pi * k / 5),
                -(r if k % 2 == 0 else 0.42 * r) * math.sin(math.pi / 2 + math.pi * k / 5))
               for k in range(10)]
  elif shape == "cross":
    a, w = r * 0.9, r * 0.3
    outline = [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w),
               (-a, w), (-a, -w), (-w, -w)]
  else:
    raise ValueError(f"unknown shape {shape!r}")
  # Image y grows downwards: a counter-clockwise turn on screen.
  cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
  return [(cx + x * cos + y * sin, cy - x * sin + y * cos) for x, y in outline]


def _jitter(rgb: Sequence[int], rng: random.Random, amount: int) -> Tuple[int, ...]:
  return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def random_label(rng: random.Random) -> Label:
  """A colour, a shape and a background, each uniformly at random (in that order from rng)."""
  return Label(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS)))


def random_placement(shape: str, image_size: int, rng: random.Random) -> Placement:
  """A shape's size, position anywhere its outline fits inside the margins at any turn, and
  turn."""
  r = image_size * rng.uniform(*SHAPE_RADIUS)
  # A square's corners reach further than r.
  reach = max(math.hypot(x, y) for x, y in shape_polygon(shape, 0.0, 0.0, r))
  low = reach + SHAPE_MARGIN * image_size
  high = image_size - low
  return Placement(rng.uniform(low, high), rng.uniform(low, high), r,
                   rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES))


def draw_image(label: Label, placement: Placement, image_size: int,
               rng: random.Random) -> bytes:
  """A JPEG of the labelled shape at `placement`, its colours, lighting and noise drawn from
  `rng`."""
  background = np.array(_jitter(BACKGROUNDS[label.background], rng, 8), np.float64)
  angle = rng.uniform(0, 2 * math.pi)
  strength = rng.uniform(0, LIGHTING_GRADIENT)
  coords = (np.arange(image_size) + 0.5) / image_size - 0.5
  ramp = (math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]) * strength
  lit = np.clip(background[None, None, :] + ramp[:, :, None], 0, 255)
  image = Image.fromarray(np.round(lit).astype(np.uint8), "RGB")
  ImageDraw.Draw(image).polygon(
      shape_polygon(label.shape, placement.x, placement.y, placement.radius, placement.rotation),
      fill=_jitter(COLOURS[label.colour], rng, 15))
  noise = np.random.default_rng(rng.getrandbits(64)).normal(
      0.0, NOISE_STDDEV, (image_size, image_size, 3))
  noisy = np.clip(np.asarray(image, np.float64) + noise, 0, 255)
  buffer = io.BytesIO()
  Image.fromarray(np.round(noisy).astype(np.uint8), "RGB").save(
      buffer, "JPEG", quality=JPEG_QUALITY)
  return buffer.getvalue()


def _write_split(output_dir: str, name: str, first_id: int, num_images: int, image_size: int,
                 rng: random.Random) -> None:
  image_dir = os.path.join(output_dir, name)
  tf.io.gfile.makedirs(image_dir)
  images, annotations = [], []
  for k in range(num_images):
    image_id = first_id + k
    label = random_label(rng)
    file_name = "COCO_%s_%012d.jpg" % (name, image_id)
    placement = random_placement(label.shape, image_size, rng)
    with tf.io.gfile.GFile(os.path.join(image_dir, file_name), "wb") as f:
      f.write(draw_image(label, placement, image_size, rng))
    images.append({"id": image_id, "file_name": file_name, "height": image_size,
                   "width": image_size, "colour": label.colour, "shape": label.shape,
                   "background": label.background,
                   "placement": {field: round(value, 3)
                                 for field, value in placement._asdict().items()}})
    for caption in captions_for(label, rng):
      annotations.append({"id": len(annotations) + first_id * 10, "image_id": image_id,
                          "caption": caption})
  captions_file = os.path.join(output_dir, f"captions_{name}.json")
  file_io.write_file(captions_file, json.dumps(
      {"info": {"description": "im2txt sample: coloured shapes"}, "images": images,
       "annotations": annotations}, indent=1))


def make_sample_dataset(output_dir: str, num_train_images: int = 300, num_val_images: int = 100,
                        image_size: int = 96, seed: int = 0) -> SampleDataset:
  """Writes the dataset (same seed and sizes, same bytes) and returns its paths."""
  rng = random.Random(seed)
  _write_split(output_dir, "train2014", TRAIN_FIRST_ID, num_train_images, image_size, rng)
  _write_split(output_dir, "val2014", VAL_FIRST_ID, num_val_images, image_size, rng)
  return dataset_in(output_dir)


def dataset_in(output_dir: str) -> SampleDataset:
  """The paths of the dataset make_sample_dataset wrote to output_dir."""
  return SampleDataset(*(os.path.join(output_dir, name) for name in (
      "train2014", "val2014", "captions_train2014.json", "captions_val2014.json")))


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default="/tmp/im2txt_sample", help="Where to write it.")
  parser.add_argument("--num_train_images", type=int, default=300,
                      help="Images in captions_train2014.json.")
  parser.add_argument("--num_val_images", type=int, default=100,
                      help="Images in captions_val2014.json (85%% train, 5%% val, 10%% test).")
  parser.add_argument("--image_size", type=int, default=96, help="Image width and height.")
  parser.add_argument("--seed", type=int, default=0, help="The same seed writes the same bytes.")
  args = parser.parse_args(argv)
  dataset = make_sample_dataset(args.output_dir, args.num_train_images, args.num_val_images,
                                args.image_size, args.seed)
  print(f"Wrote {args.num_train_images} + {args.num_val_images} images to {args.output_dir}. "
        "Build the records with:\n  python -m beam_jobs.build_mscoco_data "
        + " ".join(dataset.build_args()) + " --output_dir=<records dir>")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
