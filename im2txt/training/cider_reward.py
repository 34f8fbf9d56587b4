"""CIDEr-D in TensorFlow: the reward of self-critical training (train --objective=scst).

The COCO caption evaluation's CIDEr (pycocoevalcap's Cider, which is CIDEr-D): n-grams of 1 to 4
words weighted by TF-IDF, cosine similarity per n with the candidate's counts clipped to the
reference's, a Gaussian penalty (sigma 6) on the length difference (counted in bigrams, as
pycocoevalcap does), averaged over n and over the image's references, times 10. Given the same
corpus, the scores equal pycocoevalcap's to float64 rounding (tests/cider_reward_test.py).

As in self-critical.pytorch, a caption is scored as its words followed by </S> (a sample that
stops early, or never, is then penalised: without it the reward teaches "bad endings" such as
"a man riding a"), and the document frequencies are those of the training split's references,
computed once and cached in train_dir.

Words are integer codes: a vocabulary word's id + 1, the references' out-of-vocabulary words
distinct codes above the model's vocabulary (so <UNK> matches none), 0 padding. An n-gram is
the base-`base` number of its codes, so n-grams of different orders never collide and every
comparison is exact.
"""

import dataclasses
import hashlib
import io
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from im2txt import file_io
from im2txt import references as references_lib
from im2txt import vocabulary as vocabulary_lib

MAX_N = 4
SIGMA = 6.0
# n-gram numbers (< base**4) must fit an int64.
MAX_BASE = int(math.floor((2 ** 63 - 1) ** 0.25))
CACHE_FILENAME = "scst_document_frequencies.npz"
_CACHE_VERSION = "1"


@dataclasses.dataclass
class RewardData:
  """The training split's references as word codes, and their document frequencies."""
  image_ids: np.ndarray  # int64 [images], sorted.
  # Codes of each image's references (words then </S>), in image_ids' order.
  reference_codes: List[List[List[int]]]
  base: int  # Every code is below it.
  end_code: int
  # Document frequencies: sorted n-gram numbers and the number of images whose references
  # hold each; num_documents images in all.
  ngrams: np.ndarray
  counts: np.ndarray
  num_documents: int
  source: str  # The references file, for messages.
  # The cache file, and its contents when they are still to be written (write_cache).
  cache_file: str = ""
  cache_contents: Optional[bytes] = None


def word_codes(vocab: vocabulary_lib.Vocabulary, images: Mapping[int, Sequence[str]],
               vocab_size: int) -> Tuple[Dict[str, int], int]:
  """(word -> code for the references' words, base). Vocabulary words: id + 1; the others:
  distinct codes from vocab_size + 1, in sorted order."""
  codes = {word: vocab.word_to_id(word) + 1 for word in vocab.words
           if word != vocabulary_lib.UNK_WORD}
  unknown = sorted({w for refs in images.values() for r in refs for w in r.split()} - set(codes))
  codes.update((word, vocab_size + 1 + i) for i, word in enumerate(unknown))
  return codes, vocab_size + 1 + len(unknown)


def ngram_numbers(codes: Sequence[int], base: int) -> List[int]:
  """Every n-gram (n = 1..4) of a code sequence, as numbers (with repeats)."""
  out = []
  for n in range(1, MAX_N + 1):
    for i in range(len(codes) - n + 1):
      value = 0
      for code in codes[i:i + n]:
        value = value * base + code
      out.append(value)
  return out


def document_frequencies(reference_codes: Sequence[Sequence[Sequence[int]]],
                         base: int) -> Tuple[np.ndarray, np.ndarray]:
  """(sorted n-gram numbers, number of images whose references hold each)."""
  counts = {}
  for refs in reference_codes:
    for ngram in set(g for ref in refs for g in ngram_numbers(ref, base)):
      counts[ngram] = counts.get(ngram, 0) + 1
  ngrams = np.array(sorted(counts), np.int64)
  return ngrams, np.array([counts[g] for g in ngrams.tolist()], np.int64)


def load(references_file: str, vocab_file: str, vocab_size: int, cache_dir: str) -> RewardData:
  """The training references of `references_file` as codes, with their document frequencies:
  read from cache_dir/scst_document_frequencies.npz when it was computed from the same files,
  else computed, for write_cache to cache there (the trainer writes it once it holds the
  train_dir)."""
  # Each file is read once, parsed and fingerprinted.
  contents = references_lib.read_bytes(references_file)
  images = references_lib.parse_references(contents, references_file)
  vocab_contents = vocabulary_lib.read_bytes(vocab_file)
  vocab = vocabulary_lib.Vocabulary.from_bytes(vocab_contents, vocab_file)
  codes, base = word_codes(vocab, images, vocab_size)
  if base > MAX_BASE:
    raise ValueError(f"{references_file}: its references and {vocab_file} hold {base - 1} "
                     f"distinct words; the CIDEr reward numbers n-grams exactly up to "
                     f"{MAX_BASE - 1}")
  end_code = vocab.end_id + 1
  image_ids = np.array(sorted(images), np.int64)
  reference_codes = [[[codes[w] for w in ref.split()] + [end_code] for ref in images[i]]
                     for i in image_ids.tolist()]
  fingerprint = hashlib.sha256(
      f"{_CACHE_VERSION} {vocab_size}\n".encode() + contents + vocab_contents).hexdigest()
  cache = os.path.join(cache_dir, CACHE_FILENAME)
  cached = _read_cache(cache, fingerprint)
  cache_contents = None
  if cached is None:
    ngrams, counts = document_frequencies(reference_codes, base)
    buffer = io.BytesIO()
    np.savez(buffer, fingerprint=np.array(fingerprint), ngrams=ngrams, counts=counts)
    cache_contents = buffer.getvalue()
  else:
    ngrams, counts = cached
  return RewardData(image_ids, reference_codes, base, end_code, ngrams, counts,
                    len(image_ids), references_file, cache, cache_contents)


def write_cache(data: RewardData) -> None:
  """Caches `data`'s document frequencies, if load computed them, atomically."""
  if data.cache_contents is not None:
    file_io.write_file(data.cache_file, data.cache_contents)
    logging.info("CIDEr-D document frequencies of %d n-grams over the %d images of %s, cached "
                 "in %s", len(data.ngrams), data.num_documents, data.source, data.cache_file)


def _read_cache(path: str, fingerprint: str):
  """(ngrams, counts) of a cache computed from the same files; None otherwise (or unreadable:
  it is then recomputed and rewritten)."""
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = np.load(io.BytesIO(f.read()), allow_pickle=False)
      if str(data["fingerprint"]) != fingerprint:
        logging.info("%s was computed from other references or vocabulary: recomputing", path)
        return None
      return data["ngrams"].astype(np.int64), data["counts"].astype(np.int64)
  except (ValueError, KeyError, OSError, EOFError) as e:
    logging.warning("%s is unreadable (%s): recomputing it", path, e)
    return None


class ReferenceLookup:
  """Each record's image's references as a dense [references, length] code tensor (0-padded),
  in the input pipeline (searchsorted over the sorted image ids: no resource to capture)."""

  def __init__(self, data: RewardData):
    self.image_ids = tf.constant(data.image_ids, tf.int64)
    flat = [ref for refs in data.reference_codes for ref in refs]
    self.references = tf.RaggedTensor.from_nested_row_lengths(
        tf.constant([c for ref in flat for c in ref], tf.int64),
        [tf.constant([len(refs) for refs in data.reference_codes], tf.int64),
         tf.constant([len(ref) for ref in flat], tf.int64)])
    self.source = data.source

  def row(self, image_id: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """(row, found) of a scalar image id."""
    row = tf.searchsorted(self.image_ids, tf.reshape(image_id, [1]))[0]
    safe = tf.minimum(row, tf.size(self.image_ids, out_type=tf.int32) - 1)
    return safe, tf.gather(self.image_ids, safe) == image_id

  def references_of(self, row: tf.Tensor) -> tf.Tensor:
    return tf.gather(self.references, row).to_tensor()


class CiderD:
  """CIDEr-D of candidates against their image's references, with fixed document frequencies.

  scores(candidates [B, S, T], references [B, R, L]) -> float64 [B, S]: S candidates per image,
  codes 0-padded after their end (a candidate's </S> included); R references, all-zero rows
  being padding.
  """

  def __init__(self, ngrams: np.ndarray, counts: np.ndarray, num_documents: int, base: int):
    self.base = int(base)
    self.log_num_documents = math.log(float(num_documents))
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(ngrams, tf.int64),
            tf.constant(np.log(np.maximum(1.0, counts.astype(np.float64))), tf.float64)),
        default_value=tf.constant(0.0, tf.float64))

  @classmethod
  def from_data(cls, data: RewardData) -> "CiderD":
    return cls(data.ngrams, data.counts, data.num_documents, data.base)

  def _orders(self, codes: tf.Tensor):
    """[(numbers, valid, idf squared) for n = 1..4], each [..., positions], and the lengths."""
    codes = tf.cast(codes, tf.int64)
    length = tf.reduce_sum(tf.cast(codes > 0, tf.int64), -1)
    orders, numbers = [], codes
    for n in range(1, MAX_N + 1):
      if n > 1:
        numbers = numbers[..., :-1] * self.base + codes[..., n - 1:]
      positions = tf.range(tf.shape(numbers)[-1], dtype=tf.int64)
      valid = positions + n <= length[..., tf.newaxis]
      idf = self.log_num_documents - self._table.lookup(numbers)
      orders.append((numbers, valid, tf.where(valid, idf * idf, tf.zeros_like(idf))))
    return orders, length

  @staticmethod
  def _term_frequencies(numbers, valid):
    """How often each position's n-gram occurs in its sequence [..., P] (float64)."""
    same = (numbers[..., :, tf.newaxis] == numbers[..., tf.newaxis, :]) & valid[..., tf.newaxis, :]
    return tf.reduce_sum(tf.cast(same, tf.float64), -1)

  def scores(self, candidates: tf.Tensor, references: tf.Tensor) -> tf.Tensor:
    candidate_orders, candidate_length = self._orders(candidates)  # [B, S, P]
    reference_orders, reference_length = self._orders(references)  # [B, R, Q]
    total = 0.0
    for (c_num, c_valid, c_idf2), (r_num, r_valid, r_idf2) in zip(candidate_orders,
                                                                   reference_orders):
      c_tf = self._term_frequencies(c_num, c_valid)  # [B, S, P]
      r_tf = self._term_frequencies(r_num, r_valid)  # [B, R, Q]
      c_norm = tf.sqrt(tf.reduce_sum(c_tf * c_idf2, -1))  # [B, S]
      r_norm = tf.sqrt(tf.reduce_sum(r_tf * r_idf2, -1))  # [B, R]
      # Occurrences of each candidate n-gram in each reference: [B, S, R, P].
      match = ((c_num[:, :, tf.newaxis, :, tf.newaxis] == r_num[:, tf.newaxis, :, tf.newaxis, :])
               & r_valid[:, tf.newaxis, :, tf.newaxis, :])
      in_reference = tf.reduce_sum(tf.cast(match, tf.float64), -1)
      c_tf4 = c_tf[:, :, tf.newaxis, :]
      # Summed over the candidate's positions, each unique n-gram's min(tf_c, tf_r) tf_r idf^2
      # is counted tf_c times: divided by it.
      clipped = tf.minimum(c_tf4, in_reference) * in_reference * c_idf2[:, :, tf.newaxis, :]
      numerator = tf.reduce_sum(tf.math.divide_no_nan(clipped, c_tf4), -1)  # [B, S, R]
      denominator = c_norm[:, :, tf.newaxis] * r_norm[:, tf.newaxis, :]
      total += tf.where(denominator != 0.0,
                        numerator / tf.where(denominator != 0.0, denominator, 1.0), numerator)
    bigrams_c = tf.cast(tf.maximum(candidate_length - 1, 0), tf.float64)[:, :, tf.newaxis]
    bigrams_r = tf.cast(tf.maximum(reference_length - 1, 0), tf.float64)[:, tf.newaxis, :]
    penalty = tf.exp(-tf.square(bigrams_c - bigrams_r) / (2.0 * SIGMA ** 2))
    is_reference = tf.cast(reference_length > 0, tf.float64)[:, tf.newaxis, :]  # [B, 1, R]
    per_reference = total / MAX_N * penalty * is_reference
    return 10.0 * tf.reduce_sum(per_reference, -1) / tf.reduce_sum(is_reference, -1)
