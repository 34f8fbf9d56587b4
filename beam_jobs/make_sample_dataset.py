r"""Writes a small COCO-format dataset whose captions are learnable from the pixels.

Each image is one coloured shape (6 colours x 5 shapes) on a white, black or gray background,
with jittered position, size and colour, and 5 captions in varied phrasings that always name the
shape's colour and shape word ("a red circle on a white background", "the star is blue", ...).
The vocabulary is 30 words plus <S> and </S>, so it fits the small preset's vocab_size of 64.

  bazel run //beam_jobs:make_sample_dataset -- --output_dir=/tmp/im2txt_sample

writes, like MSCOCO 2014:
  OUT/train2014/COCO_train2014_000000000001.jpg ...   OUT/captions_train2014.json
  OUT/val2014/COCO_val2014_000000500001.jpg ...       OUT/captions_val2014.json
Each `images` entry also carries its ground truth: "colour", "shape" and "background" (COCO
readers ignore extra fields). For a captioner's accuracy: `split_images(dataset, "test")` lists
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
# The shape's 'radius' and the offset of its centre from the image's, as fractions of the size.
SHAPE_RADIUS = (0.31, 0.35)
SHAPE_OFFSET = 0.03


class Label(NamedTuple):
  """The ground truth of one image."""
  colour: str
  shape: str
  background: str


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


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> List[Tuple[float, float]]:
  """The outline of a shape of 'radius' r centred at (cx, cy) (a circle is a 48-gon)."""
  if shape == "circle":
    return [(cx + r * math.cos(2 * math.pi * k / 48), cy + r * math.sin(2 * math.pi * k / 48))
            for k in range(48)]
  if shape == "square":
    h = r * 0.85
    return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
  if shape == "triangle":
    return [(cx + r * math.cos(math.pi / 2 + 2 * math.pi * k / 3),
             cy - r * math.sin(math.pi / 2 + 2 * math.pi * k / 3)) for k in range(3)]
  if shape == "star":
    return [(cx + (r if k % 2 == 0 else 0.42 * r) * math.cos(math.pi / 2 + math.pi * k / 5),
             cy - (r if k % 2 == 0 else 0.42 * r) * math.sin(math.pi / 2 + math.pi * k / 5))
            for k in range(10)]
  if shape == "cross":
    a, w = r * 0.9, r * 0.3
    return [(cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w),
            (cx + a, cy + w), (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a),
            (cx - w, cy + w), (cx - a, cy + w), (cx - a, cy - w), (cx - w, cy - w)]
  raise ValueError(f"unknown shape {shape!r}")


def _jitter(rgb: Sequence[int], rng: random.Random, amount: int) -> Tuple[int, ...]:
  return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def draw_image(label: Label, image_size: int, rng: random.Random) -> bytes:
  """A JPEG of the labelled shape, its size, position and colours jittered by `rng`."""
  image = Image.new("RGB", (image_size, image_size), _jitter(BACKGROUNDS[label.background], rng, 8))
  r = image_size * rng.uniform(*SHAPE_RADIUS)
  cx = image_size * (0.5 + rng.uniform(-SHAPE_OFFSET, SHAPE_OFFSET))
  cy = image_size * (0.5 + rng.uniform(-SHAPE_OFFSET, SHAPE_OFFSET))
  ImageDraw.Draw(image).polygon(shape_polygon(label.shape, cx, cy, r),
                                fill=_jitter(COLOURS[label.colour], rng, 15))
  buffer = io.BytesIO()
  image.save(buffer, "JPEG", quality=JPEG_QUALITY)
  return buffer.getvalue()


def _write_split(output_dir: str, name: str, first_id: int, num_images: int, image_size: int,
                 rng: random.Random) -> Tuple[str, str]:
  image_dir = os.path.join(output_dir, name)
  tf.io.gfile.makedirs(image_dir)
  images, annotations = [], []
  for k in range(num_images):
    image_id = first_id + k
    label = Label(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS)))
    file_name = "COCO_%s_%012d.jpg" % (name, image_id)
    with tf.io.gfile.GFile(os.path.join(image_dir, file_name), "wb") as f:
      f.write(draw_image(label, image_size, rng))
    images.append({"id": image_id, "file_name": file_name, "height": image_size,
                   "width": image_size, "colour": label.colour, "shape": label.shape,
                   "background": label.background})
    for caption in captions_for(label, rng):
      annotations.append({"id": len(annotations) + first_id * 10, "image_id": image_id,
                          "caption": caption})
  captions_file = os.path.join(output_dir, f"captions_{name}.json")
  file_io.write_file(captions_file, json.dumps(
      {"info": {"description": "im2txt sample: coloured shapes"}, "images": images,
       "annotations": annotations}, indent=1))
  return image_dir, captions_file


def make_sample_dataset(output_dir: str, num_train_images: int = 300, num_val_images: int = 100,
                        image_size: int = 96, seed: int = 0) -> SampleDataset:
  """Writes the dataset (same seed and sizes, same bytes) and returns its paths."""
  rng = random.Random(seed)
  train_image_dir, train_captions_file = _write_split(
      output_dir, "train2014", TRAIN_FIRST_ID, num_train_images, image_size, rng)
  val_image_dir, val_captions_file = _write_split(
      output_dir, "val2014", VAL_FIRST_ID, num_val_images, image_size, rng)
  return SampleDataset(train_image_dir, val_image_dir, train_captions_file, val_captions_file)


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
