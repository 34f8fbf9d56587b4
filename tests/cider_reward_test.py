"""The SCST reward's CIDEr-D equals pycocoevalcap's Cider scorer on the same corpus."""

import os
import random

import numpy as np
from pycocoevalcap.cider.cider import Cider
import tensorflow as tf

from im2txt import references
from im2txt import vocabulary
from im2txt.training import cider_reward

WORDS = ["a", "man", "dog", "red", "ball", "on", "the", "grass", "with", "blue", "runs", "."]


def _caption(rng: random.Random, extra=()) -> str:
  return " ".join(rng.choice(WORDS + list(extra)) for _ in range(rng.randint(1, 12)))


def _pad(rows, width):
  return [row + [0] * (width - len(row)) for row in rows]


class CiderRewardTest(tf.test.TestCase):

  def test_scores_equal_pycocoevalcap(self):
    rng = random.Random(5)
    # 12 images with 1-6 references; out-of-vocabulary reference words ("zebra", "kite"); 4
    # candidates per image, some sharing a reference's words, one empty but for </S>.
    images = {}
    for image_id in range(12):
      refs = [_caption(rng, extra=("zebra", "kite")) for _ in range(rng.randint(1, 6))]
      images[100 + 7 * image_id] = refs
    candidates = {}
    for image_id, refs in images.items():
      candidates[image_id] = [rng.choice(refs), _caption(rng), " ".join(refs[0].split()[:2]), ""]
    tmp = self.create_tempdir().full_path
    vocab_file = os.path.join(tmp, "word_counts.txt")
    vocabulary.write_word_counts(vocab_file, [(w, 10) for w in WORDS[:9] + ["<S>", "</S>"]])
    refs_file = os.path.join(tmp, "train_references.json")
    references.write_references(refs_file, "train", images)
    data = cider_reward.load(refs_file, vocab_file, vocab_size=20, cache_dir=tmp)
    cache = os.path.join(tmp, cider_reward.CACHE_FILENAME)
    self.assertFalse(os.path.exists(cache))  # Written once the trainer holds its train_dir.
    cider_reward.write_cache(data)
    self.assertTrue(os.path.exists(cache))
    vocab = vocabulary.Vocabulary.from_file(vocab_file)
    codes, base = cider_reward.word_codes(vocab, images, 20)
    self.assertEqual(base, 21 + len({"blue", "runs", ".", "zebra", "kite"}))

    # As the reward scores them: each caption's words followed by </S>.
    def with_end(caption):
      return (caption + " </S>").strip()

    gts = {i: [with_end(r) for r in refs] for i, refs in images.items()}
    expected = np.zeros([len(images), 4])
    for k in range(4):
      res = {i: [with_end(candidates[i][k])] for i in images}
      expected[:, k] = Cider().compute_score(gts, res)[1]

    ordered = sorted(images)
    width = max(len(c.split()) for cs in candidates.values() for c in cs) + 1
    cand = [_pad([[codes[w] for w in c.split()] + [data.end_code] for c in candidates[i]], width)
            for i in ordered]
    max_refs = max(len(r) for r in images.values())
    ref_width = max(len(r.split()) for rs in images.values() for r in rs) + 1
    refs = [_pad([[codes[w] for w in r.split()] + [data.end_code] for r in images[i]]
                 + [[] for _ in range(max_refs - len(images[i]))], ref_width) for i in ordered]
    self.assertAllEqual(tf.concat([cider_reward.ReferenceLookup(data).references_of(
        cider_reward.ReferenceLookup(data).row(tf.constant(ordered[3], tf.int64))[0])], 0),
        np.array(refs[3])[:len(images[ordered[3]]), :max(
            len(r.split()) + 1 for r in images[ordered[3]])])
    scores = cider_reward.CiderD.from_data(data).scores(tf.constant(cand), tf.constant(refs))
    self.assertAllClose(scores, expected, rtol=1e-6, atol=1e-12)
    self.assertGreater(float(np.max(expected)), 1.0)  # Not all zeros.

    # The cache is read back (same numbers) and recomputed for another vocabulary size.
    again = cider_reward.load(refs_file, vocab_file, vocab_size=20, cache_dir=tmp)
    self.assertIsNone(again.cache_contents)  # Nothing to write: read from the cache.
    self.assertAllEqual(again.ngrams, data.ngrams)
    self.assertAllEqual(again.counts, data.counts)
    other = cider_reward.load(refs_file, vocab_file, vocab_size=30, cache_dir=tmp)
    self.assertEqual(other.base, data.base + 10)


class ReferencesFileTest(tf.test.TestCase):
  """A references file is untrusted input: a malformed one is an error naming it and the entry."""

  def test_round_trip_and_malformed_files(self):
    tmp = self.create_tempdir().full_path
    path = os.path.join(tmp, "train_references.json")
    references.write_references(path, "train", {9: ["a dog ."], 3: ["a cat", "cat"]})
    self.assertEqual(references.read_references(path), {3: ["a cat", "cat"], 9: ["a dog ."]})
    self.assertEqual(references.beside_shards("/d/train-00003-of-00256"),
                     "/d/train_references.json")
    self.assertIsNone(references.beside_shards("/d/my_shard.tfrecord"))
    cases = [
        (b"{not json", "not valid JSON"),
        (b'{"images": []}', "no \"format\""),
        (b'{"format": "im2txt-references-1", "images": {}}', "must be a list"),
        (b'{"format": "im2txt-references-1", "images": [[1, []]]}', "entry 0 is not"),
        (b'{"format": "im2txt-references-1", "images": [[1, ["a"]], ["2", ["b"]]]}',
         "entry 1 is not"),
        (b'{"format": "im2txt-references-1", "images": [[1, ["a"]], [1, ["b"]]]}',
         "image id 1 appears twice"),
        (b'{"format": "im2txt-references-1", "images": []}', "holds no image"),
    ]
    for contents, message in cases:
      with open(path, "wb") as f:
        f.write(contents)
      with self.assertRaisesRegex(ValueError, f"^{path}: .*{message}", msg=contents):
        references.read_references(path)
    with self.assertRaisesRegex(FileNotFoundError, "missing.json"):
      references.read_references(os.path.join(tmp, "missing.json"))


if __name__ == "__main__":
  tf.test.main()
