"""The reference captions of a split's images: `{split}_references.json` beside the shards.

build_mscoco_data writes one per split (train_references.json, ...): every image of the split
with all its captions, as the records' tokens without <S> and </S>, joined by spaces:

    {"format": "im2txt-references-1", "split": "train",
     "images": [[57870, ["a restaurant has modern wooden tables and chairs .", ...]], ...]}

Records hold one caption each; self-critical training (train --objective=scst) scores a sampled
caption against all of its image's references, and takes the CIDEr-D document frequencies from
the training split's (im2txt/training/cider_reward.py). The original builder writes no such file.
"""

import json
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence

import tensorflow as tf

from im2txt import file_io

FORMAT = "im2txt-references-1"
SUFFIX = "_references.json"
_SHARD_NAME = re.compile(r"^(?P<split>.+)-\d{5}-of-\d{5}$")


def references_filename(split: str) -> str:
  return f"{split}{SUFFIX}"


def write_references(path: str, split: str, images: Mapping[int, Sequence[str]]) -> None:
  """Writes {image id: [caption tokens joined by spaces, ...]} atomically, by image id."""
  file_io.write_json(path, {"format": FORMAT, "split": split,
                            "images": [[int(k), list(images[k])] for k in sorted(images)]},
                     indent=None)


def beside_shards(first_shard: str) -> Optional[str]:
  """The references file of the split a shard belongs to (`train-00000-of-00256` ->
  `train_references.json` in its folder); None for a shard not named `{split}-NNNNN-of-NNNNN`."""
  match = _SHARD_NAME.match(os.path.basename(first_shard))
  if not match:
    return None
  return os.path.join(os.path.dirname(first_shard), references_filename(match.group("split")))


def read_references(path: str) -> Dict[int, List[str]]:
  """{image id: [reference, ...]} from a references file; a malformed file is a ValueError
  naming it and the first bad entry."""
  return parse_references(read_bytes(path), path)


def read_bytes(path: str) -> bytes:
  """A references file's bytes (for parse_references); FileNotFoundError naming it."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path}: no such references file")
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def parse_references(contents: bytes, path: str) -> Dict[int, List[str]]:
  """read_references of a file's bytes (`path` names it in errors)."""
  try:
    data = json.loads(contents.decode("utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not a references file (not valid JSON: {e})") from e
  if not isinstance(data, dict) or data.get("format") != FORMAT:
    raise ValueError(f"{path}: not a references file (no \"format\": \"{FORMAT}\"; "
                     "build_mscoco_data writes them)")
  entries = data.get("images")
  if not isinstance(entries, list):
    raise ValueError(f"{path}: \"images\" must be a list of [image id, [caption, ...]]")
  images = {}
  for position, entry in enumerate(entries):
    valid = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)
             and not isinstance(entry[0], bool) and isinstance(entry[1], list) and entry[1]
             and all(isinstance(c, str) and c.split() for c in entry[1]))
    if not valid:
      raise ValueError(f"{path}: entry {position} is not [image id, [non-empty caption, ...]]: "
                       f"{str(entry)[:80]}")
    if entry[0] in images:
      raise ValueError(f"{path}: image id {entry[0]} appears twice (entries "
                       f"{list(images).index(entry[0])} and {position})")
    images[entry[0]] = list(entry[1])
  if not images:
    raise ValueError(f"{path}: holds no image")
  return images
