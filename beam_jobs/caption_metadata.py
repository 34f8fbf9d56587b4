"""Caption metadata for build_mscoco_data: which images, which captions, which split and shard.

Everything here works on metadata only (image ids, paths, captions), never on image bytes, so
the driver can plan the whole job and each shard can then be written by one worker that reads
just its own images.

Splits follow the original im2txt builder, on the images in the order the JSON lists them:
  train = every image of the train captions file + the first 85% of the val file's images
  val   = the next 5% of the val file's images
  test  = the last 10%
A Karpathy split file (dataset_coco.json, dataset_flickr8k.json, ...) gives each image's split
instead: train and restval -> train, val -> val, test -> test.

Each split becomes one record per (image, caption), shuffled with random.Random(12345) -- the
original's random.seed(12345); random.shuffle -- so an image's captions land in different shards,
then cut into `num_shards` contiguous ranges. Same inputs, same plan, on any runner.

With a concept vocabulary (im2txt/concepts.py), each record also carries its image's concept ids,
computed here from all of the image's captions: a shard holds only some of an image's records,
so the writer of a shard could not compute them from what it reads.
"""

import collections
import dataclasses
import json
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from beam_jobs import build_report
from beam_jobs.build_report import Tally
from im2txt import concepts
from im2txt import vocabulary

# The original builder's shuffle seed.
SHUFFLE_SEED = 12345
# Fractions of the val captions file that go to train (first 85%) and val (next 5%).
TRAIN_CUTOFF = 0.85
VAL_CUTOFF = 0.90
# Karpathy split names -> our splits ("restval" is the rest of COCO val, used for training).
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


@dataclasses.dataclass(frozen=True)
class ImageCaptions:
  """An image as listed by a captions file: its id, file path and raw captions."""
  image_id: int
  path: str
  captions: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TokenizedImage:
  """An image with its usable captions, each as its record tokens (<S> ... </S>) joined by ' '.

  Tokens never contain whitespace (the tokenizer splits on it), so joining is lossless and a
  string per caption keeps the driver's memory small.
  """
  image_id: int
  path: str
  token_lines: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RecordSpec:
  """One record to write: the image to read and the caption tokens joined by ' '.

  `first_of_image` marks one record per image, where image-level events are counted once.
  `concept_ids` are the image's (every record of an image has the same), None for none at all.
  """
  image_id: int
  path: str
  tokens: str
  first_of_image: bool
  concept_ids: Optional[Tuple[int, ...]] = None


@dataclasses.dataclass(frozen=True)
class ShardSpec:
  """Everything one worker needs to write one output shard."""
  split: str
  shard_index: int
  num_shards: int
  records: Tuple[RecordSpec, ...]

  @property
  def name(self) -> str:
    return shard_name(self.split, self.shard_index, self.num_shards)

  def to_json(self) -> str:
    return json.dumps({"split": self.split, "shard_index": self.shard_index,
                       "num_shards": self.num_shards,
                       "records": [[r.image_id, r.path, r.tokens, r.first_of_image,
                                    r.concept_ids] for r in self.records]})

  @classmethod
  def from_json(cls, text: str) -> "ShardSpec":
    data = json.loads(text)
    # JSON has lists only: the ids come back as the tuple they were.
    records = tuple(RecordSpec(image_id, path, tokens, first,
                               None if concept_ids is None else tuple(concept_ids))
                    for image_id, path, tokens, first, concept_ids in data["records"])
    return cls(data["split"], data["shard_index"], data["num_shards"], records)


def shard_name(split: str, shard_index: int, num_shards: int) -> str:
  """The original im2txt's shard file name, e.g. train-00003-of-00256."""
  return "%s-%.5d-of-%.5d" % (split, shard_index, num_shards)


def image_path(image_dir: str, relative: str) -> Optional[str]:
  """`image_dir/relative` if that stays inside image_dir, else None (the image is not read).

  A captions file is untrusted input: a `file_name` such as `../../home/u/secret.jpg`, an
  absolute path, a URL, or a path through a symlink that leads out of image_dir (on a local disk)
  must not pull files from elsewhere into a dataset that gets shared.

  >>> image_path("/data/train2014", "COCO_train2014_000000000009.jpg")
  '/data/train2014/COCO_train2014_000000000009.jpg'
  >>> image_path("/data/train2014", "../../etc/passwd") is None
  True
  """
  if not relative or os.path.isabs(relative) or "://" in relative:
    return None
  normal = os.path.normpath(relative)
  if normal in (os.curdir, os.pardir) or normal.startswith(os.pardir + os.sep):
    return None
  path = os.path.join(image_dir, normal)
  if "://" not in image_dir:
    root = os.path.realpath(image_dir)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
      return None
  return path


def _read_json(path: str):
  with tf.io.gfile.GFile(path, "rb") as f:
    return json.loads(f.read().decode("utf-8"))


def load_coco_captions(captions_file: str, image_dir: str, tally: Tally) -> List[ImageCaptions]:
  """Reads a COCO captions JSON (`images` + `annotations`), images in the file's order.

  Annotations naming an image id that is not in `images`, duplicate image ids and malformed
  entries are counted in `tally` and skipped. Images without annotations are kept here (with no
  captions) and dropped, counted, by tokenize_images.
  """
  data = _read_json(captions_file)
  if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
    raise ValueError(f"{captions_file}: not a COCO captions file (needs 'images' and "
                     "'annotations' lists)")
  base = os.path.basename(captions_file)
  paths, outside = {}, set()
  for entry in data["images"]:
    try:
      image_id, file_name = int(entry["id"]), str(entry["file_name"])
    except (KeyError, TypeError, ValueError):
      tally.add(build_report.ENTRIES_MALFORMED, f"{base}: image {str(entry)[:60]}")
      continue
    if image_id in paths or image_id in outside:
      tally.add(build_report.IMAGES_DUPLICATE_ID, f"{base}: image id {image_id}")
      continue
    path = image_path(image_dir, file_name)
    if path is None:
      tally.add(build_report.IMAGES_DROPPED_OUTSIDE_IMAGE_DIR, f"{base}: {file_name}")
      outside.add(image_id)
      continue
    paths[image_id] = path
  captions = {image_id: [] for image_id in paths}
  for entry in data["annotations"]:
    image_id = entry.get("image_id") if isinstance(entry, dict) else None
    if image_id in outside:
      continue  # Counted with its image.
    if image_id not in captions:
      tally.add(build_report.ANNOTATIONS_UNKNOWN_IMAGE_ID, f"{base}: image id {image_id}")
      continue
    captions[image_id].append(entry.get("caption"))
  return [ImageCaptions(image_id, path, tuple(captions[image_id]))
          for image_id, path in paths.items()]


def load_karpathy_split(split_file: str, image_dir: str,
                        tally: Tally) -> Dict[str, List[ImageCaptions]]:
  """Reads a Karpathy split JSON: images with `split`, `filename`, optional `filepath` (COCO),
  `cocoid` or `imgid`, and `sentences` with `raw` captions. Returns images per split."""
  data = _read_json(split_file)
  if not isinstance(data, dict) or "images" not in data:
    raise ValueError(f"{split_file}: not a Karpathy split file (needs an 'images' list)")
  base = os.path.basename(split_file)
  splits = {split: [] for split in build_report.SPLITS}
  seen = set()
  for entry in data["images"]:
    try:
      split = KARPATHY_SPLITS[entry["split"]]
      image_id = int(entry["cocoid"] if "cocoid" in entry else entry["imgid"])
      relative = os.path.join(str(entry.get("filepath", "")), str(entry["filename"]))
      sentences = entry.get("sentences", [])
      captions = tuple(s.get("raw", " ".join(s.get("tokens", []))) for s in sentences)
    except (KeyError, TypeError, ValueError, AttributeError):
      tally.add(build_report.ENTRIES_MALFORMED, f"{base}: image {str(entry)[:60]}")
      continue
    if image_id in seen:
      tally.add(build_report.IMAGES_DUPLICATE_ID, f"{base}: image id {image_id}")
      continue
    seen.add(image_id)
    path = image_path(image_dir, relative)
    if path is None:
      tally.add(build_report.IMAGES_DROPPED_OUTSIDE_IMAGE_DIR, f"{base}: {relative}")
      continue
    splits[split].append(ImageCaptions(image_id, path, captions))
  return splits


def tokenize_images(images: Sequence[ImageCaptions], max_caption_tokens: int,
                    tally: Tally) -> List[TokenizedImage]:
  """Tokenizes every caption with the shared tokenizer and drops the unusable ones.

  Empty or whitespace-only captions (or not strings) are dropped; captions of more than
  `max_caption_tokens` tokens (<S> and </S> included; 0 = no limit) are dropped as junk rather
  than truncated (a truncated caption would teach a wrong ending); non-ASCII captions are kept
  as UTF-8 and counted. Images left without any caption are dropped. All counted in `tally`.
  """
  kept = []
  for image in images:
    lines = []
    for caption in image.captions:
      if not isinstance(caption, str) or not caption.strip():
        tally.add(build_report.CAPTIONS_DROPPED_EMPTY, f"image {image.image_id}")
        continue
      tokens = vocabulary.caption_tokens(caption)
      if len(tokens) <= 2:
        tally.add(build_report.CAPTIONS_DROPPED_EMPTY, f"image {image.image_id}")
        continue
      if max_caption_tokens and len(tokens) > max_caption_tokens:
        tally.add(build_report.CAPTIONS_DROPPED_TOO_LONG,
                  f"image {image.image_id} ({len(tokens)} tokens)")
        continue
      if not caption.isascii():
        tally.add(build_report.CAPTIONS_NON_ASCII, f"image {image.image_id}")
      lines.append(" ".join(tokens))
    if not lines:
      tally.add(build_report.IMAGES_DROPPED_NO_CAPTIONS, image.path)
      continue
    kept.append(TokenizedImage(image.image_id, image.path, tuple(lines)))
  return kept


def split_coco(train_images: Sequence, val_images: Sequence) -> Dict[str, List]:
  """The original's split: train file + first 85% of val file / next 5% / last 10%."""
  train_cutoff = int(TRAIN_CUTOFF * len(val_images))
  val_cutoff = int(VAL_CUTOFF * len(val_images))
  return {"train": list(train_images) + list(val_images[:train_cutoff]),
          "val": list(val_images[train_cutoff:val_cutoff]),
          "test": list(val_images[val_cutoff:])}


def word_counts(train_images: Sequence[TokenizedImage],
                min_word_count: int) -> List[Tuple[str, int]]:
  """The vocabulary of the training captions, most frequent first (word_counts.txt lines).

  <S> and </S> are always kept, even in a dataset too small for them to reach min_word_count,
  so that the file is always a valid vocabulary.
  """
  counts = collections.Counter()
  for image in train_images:
    for line in image.token_lines:
      counts.update(line.split(" "))
  kept = vocabulary.sorted_word_counts(counts, min_word_count)
  kept_words = {word for word, _ in kept}
  for marker in (vocabulary.START_WORD, vocabulary.END_WORD):
    if marker not in kept_words:
      kept.append((marker, counts[marker]))
  kept.sort(key=lambda wc: (-wc[1], wc[0]))
  return kept


def _image_concept_ids(image: TokenizedImage,
                       concept_vocab: Optional[concepts.ConceptVocabulary]):
  if concept_vocab is None:
    return None
  return tuple(concept_vocab.concept_ids(line.split(" ") for line in image.token_lines))


def plan_shards(split: str, images: Sequence[TokenizedImage], num_shards: int,
                seed: int = SHUFFLE_SEED,
                concept_vocab: Optional[concepts.ConceptVocabulary] = None) -> List[ShardSpec]:
  """One record per (image, caption), shuffled with `seed`, cut into contiguous shards.

  Shard i holds records [i*n//num_shards, (i+1)*n//num_shards): sizes differ by at most one.
  With `concept_vocab`, every record carries the concept ids of all its image's captions.
  """
  if num_shards < 1:
    raise ValueError(f"{split}: the number of shards must be at least 1, got {num_shards}")
  records = []
  for image in images:
    concept_ids = _image_concept_ids(image, concept_vocab)  # One tuple, shared by its records.
    records += [RecordSpec(image.image_id, image.path, line, k == 0, concept_ids)
                for k, line in enumerate(image.token_lines)]
  random.Random(seed).shuffle(records)
  n = len(records)
  return [ShardSpec(split, i, num_shards,
                    tuple(records[i * n // num_shards:(i + 1) * n // num_shards]))
          for i in range(num_shards)]
