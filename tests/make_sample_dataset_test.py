"""Tests for beam_jobs/make_sample_dataset.py: format, determinism, captions, learnable pixels."""

import collections
import json
import os
import tempfile
import unittest

import numpy as np
from PIL import Image
from PIL import ImageDraw

from beam_jobs import make_sample_dataset as sample
from im2txt import vocabulary


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _files(directory):
  """Relative path -> bytes of every file under `directory`."""
  contents = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        contents[os.path.relpath(path, directory)] = f.read()
  return contents


def _shape_mask(shape, placement, size):
  """The pixels of `shape` drawn at an image's recorded placement."""
  canvas = Image.new("L", (size, size), 0)
  ImageDraw.Draw(canvas).polygon(
      sample.shape_polygon(shape, placement["x"], placement["y"], placement["radius"],
                           placement["rotation"]), fill=1)
  return np.asarray(canvas).astype(bool)


def _iou(a, b):
  return (a & b).sum() / (a | b).sum()


SIZE = 96


class MakeSampleDatasetTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls._tmp = tempfile.TemporaryDirectory()
    cls.dir = cls._tmp.name
    cls.dataset = sample.make_sample_dataset(os.path.join(cls.dir, "a"), num_train_images=40,
                                             num_val_images=12, image_size=SIZE, seed=3)
    cls.train = _read_json(cls.dataset.train_captions_file)
    cls.val = _read_json(cls.dataset.val_captions_file)

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()

  def test_coco_layout_and_counts(self):
    self.assertEqual(self.dataset.train_image_dir, os.path.join(self.dir, "a", "train2014"))
    self.assertEqual(self.dataset.val_captions_file,
                     os.path.join(self.dir, "a", "captions_val2014.json"))
    for data, image_dir, count, first_id in ((self.train, self.dataset.train_image_dir, 40, 1),
                                             (self.val, self.dataset.val_image_dir, 12, 500001)):
      ids = [image["id"] for image in data["images"]]
      self.assertEqual(ids, list(range(first_id, first_id + count)))
      self.assertEqual(sorted(os.listdir(image_dir)),
                       sorted(image["file_name"] for image in data["images"]))
      per_image = collections.defaultdict(list)
      for annotation in data["annotations"]:
        per_image[annotation["image_id"]].append(annotation["caption"])
      self.assertEqual(sorted(per_image), ids)
      for captions in per_image.values():
        self.assertEqual(len(set(captions)), sample.CAPTIONS_PER_IMAGE)
      self.assertEqual(len({a["id"] for a in data["annotations"]}), len(data["annotations"]))
    self.assertEqual(self.dataset.build_args()[0],
                     f"--train_image_dir={self.dataset.train_image_dir}")

  def test_dataset_in_names_what_was_written(self):
    self.assertEqual(sample.dataset_in(os.path.join(self.dir, "a")), self.dataset)
    for path in (self.dataset.train_captions_file, self.dataset.val_image_dir):
      self.assertTrue(os.path.exists(path), path)

  def test_split_images_follow_the_job_split(self):
    splits = {split: sample.split_images(self.dataset, split) for split in ("train", "val", "test")}
    val_ids = list(range(500001, 500013))  # 12 val-file images: 10 train, 0 val, 2 test.
    self.assertEqual([i.image_id for i in splits["train"]], list(range(1, 41)) + val_ids[:10])
    self.assertEqual(splits["val"], [])
    self.assertEqual([i.image_id for i in splits["test"]], val_ids[10:])
    labels = sample.load_labels(self.dataset.val_captions_file)
    for image in splits["test"]:
      self.assertEqual(image.label, labels[image.image_id])
      self.assertTrue(os.path.exists(image.path))
      self.assertTrue(image.path.startswith(self.dataset.val_image_dir))

  def test_same_seed_same_bytes_other_seed_other_data(self):
    again = os.path.join(self.dir, "again")
    other = os.path.join(self.dir, "other")
    sample.make_sample_dataset(again, num_train_images=40, num_val_images=12, image_size=SIZE,
                               seed=3)
    sample.make_sample_dataset(other, num_train_images=40, num_val_images=12, image_size=SIZE,
                               seed=4)
    self.assertEqual(_files(again), _files(os.path.join(self.dir, "a")))
    self.assertNotEqual(_files(other), _files(again))

  def test_every_caption_names_colour_and_shape(self):
    labels = sample.load_labels(self.dataset.train_captions_file)
    self.assertEqual(len(labels), 40)
    for annotation in self.train["annotations"]:
      label = labels[annotation["image_id"]]
      self.assertEqual(sample.caption_colour_shape(annotation["caption"]),
                       (label.colour, label.shape), annotation)
      self.assertTrue(sample.is_correct_caption(annotation["caption"], label))
    label = sample.Label("red", "circle", "white")
    self.assertTrue(sample.is_correct_caption("<S> a red circle on a white background </S>", label))
    self.assertFalse(sample.is_correct_caption("a blue circle", label))
    self.assertFalse(sample.is_correct_caption("a red shape", label))
    self.assertEqual(sample.caption_colour_shape("nothing here"), (None, None))

  def test_vocabulary_is_small_and_every_word_is_frequent(self):
    big = sample.make_sample_dataset(os.path.join(self.dir, "big"), image_size=16)
    captions = [a["caption"] for a in _read_json(big.train_captions_file)["annotations"]]
    self.assertEqual(len(captions), 300 * sample.CAPTIONS_PER_IMAGE)
    counts = vocabulary.count_words(vocabulary.caption_tokens(c) for c in captions)
    self.assertLess(len(counts), 60)  # The small preset's vocab_size is 64.
    self.assertGreaterEqual(min(counts.values()), 4, counts)  # All survive min_word_count=4.
    for word in list(sample.COLOURS) + list(sample.SHAPES) + list(sample.BACKGROUNDS):
      self.assertIn(word, counts)

  def test_label_is_visible_in_the_pixels(self):
    """The shape's pixels (those far from the background, whose lighting varies) are where its
    placement says, in its colour, and fit its shape better than any other shape there."""
    labels = sample.load_labels(self.dataset.train_captions_file)
    colour_names = list(sample.COLOURS)
    palette = np.array([sample.COLOURS[c] for c in colour_names], dtype=float)
    shapes_right = 0
    for image in self.train["images"]:
      label = labels[image["id"]]
      pixels = np.asarray(Image.open(
          os.path.join(self.dataset.train_image_dir, image["file_name"])).convert("RGB"), float)
      border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
      background = np.array(sample.BACKGROUNDS[label.background], float)
      self.assertLess(np.abs(np.median(border, axis=0) - background).max(), 30, image)
      mask = np.abs(pixels - np.median(border, axis=0)).max(axis=-1) > 50
      drawn = _shape_mask(label.shape, image["placement"], SIZE)
      self.assertGreater(_iou(mask, drawn), 0.6, image)
      mean_colour = np.median(pixels[mask & drawn], axis=0)
      nearest = colour_names[int(np.argmin(((palette - mean_colour) ** 2).sum(axis=1)))]
      self.assertEqual(nearest, label.colour, image)
      ious = {shape: _iou(mask, _shape_mask(shape, image["placement"], SIZE))
              for shape in sample.SHAPES}
      shapes_right += max(ious, key=ious.get) == label.shape
    self.assertGreaterEqual(shapes_right, 39)  # Of 40 images.

  def test_shapes_vary_in_position_size_and_turn_and_stay_inside(self):
    placements = [image["placement"] for image in self.train["images"] + self.val["images"]]
    radii = [p["radius"] / SIZE for p in placements]
    low, high = sample.SHAPE_RADIUS
    self.assertTrue(all(low <= r <= high + 1e-3 for r in radii), radii)
    # 52 uniform draws cover most of each range.
    self.assertLess(min(radii), low + 0.2 * (high - low))
    self.assertGreater(max(radii), high - 0.2 * (high - low))
    for axis in "xy":
      centres = [p[axis] / SIZE for p in placements]
      self.assertLess(min(centres), 0.3, axis)
      self.assertGreater(max(centres), 0.7, axis)
    turns = [p["rotation"] for p in placements]
    self.assertLess(min(turns), -0.6 * sample.MAX_ROTATION_DEGREES)
    self.assertGreater(max(turns), 0.6 * sample.MAX_ROTATION_DEGREES)
    # Every outline point is inside the margins, so a central crop keeps the whole shape.
    margin = sample.SHAPE_MARGIN * SIZE
    for image in self.train["images"] + self.val["images"]:
      p = image["placement"]
      points = np.array(sample.shape_polygon(image["shape"], p["x"], p["y"], p["radius"],
                                             p["rotation"]))
      self.assertGreaterEqual(points.min(), margin - 0.01, image)
      self.assertLessEqual(points.max(), SIZE - margin + 0.01, image)

  def test_turns_counter_clockwise_on_screen(self):
    # A quarter turn maps a square's corners onto each other.
    turned = sample.shape_polygon("square", 10.0, 20.0, 4.0, rotation=90.0)
    np.testing.assert_allclose(sorted(turned), sorted(sample.shape_polygon("square", 10.0, 20.0,
                                                                           4.0)), atol=1e-9)
    # 30 degrees with y pointing down: the top-left corner (-h, -h) moves left and down.
    h, c, s = 4.0 * 0.85, np.cos(np.radians(30)), np.sin(np.radians(30))
    x, y = sample.shape_polygon("square", 0.0, 0.0, 4.0, rotation=30.0)[0]
    self.assertAlmostEqual(x, -h * c - h * s)
    self.assertAlmostEqual(y, h * s - h * c)

if __name__ == "__main__":
  unittest.main()
