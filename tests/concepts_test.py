"""Tests for im2txt.concepts: choosing the concepts, concepts.txt, and an image's concept ids."""

import os
import tempfile
import unittest

from im2txt import concepts
from im2txt import vocabulary

# A word_counts.txt, most frequent first: stop words, the markers and punctuation among the words.
WORD_COUNTS = [("a", 90), ("<S>", 50), ("</S>", 50), ("on", 40), ("red", 30), (".", 25),
               ("circle", 20), ("the", 18), (",", 15), ("café", 12), ("is", 10), ("square", 8),
               ("2", 6), ("blue", 4)]
# Its concept words, in its order.
CONCEPT_WORDS = ["red", "circle", "café", "square", "blue"]


class SelectConceptsTest(unittest.TestCase):

  def test_skips_stop_words_markers_and_punctuation_in_order(self):
    self.assertEqual(concepts.select_concepts(WORD_COUNTS, 5),
                     [("red", 30), ("circle", 20), ("café", 12), ("square", 8), ("blue", 4)])

  def test_capped_at_num_concepts(self):
    self.assertEqual(concepts.select_concepts(WORD_COUNTS, 2), [("red", 30), ("circle", 20)])
    self.assertEqual(concepts.select_concepts(WORD_COUNTS, 0), [])

  def test_more_than_the_vocabulary_gives_all(self):
    self.assertEqual([w for w, _ in concepts.select_concepts(WORD_COUNTS, 1000)], CONCEPT_WORDS)

  def test_negative_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "num_concepts"):
      concepts.select_concepts(WORD_COUNTS, -1)

  def test_the_docstring_example(self):
    word_counts = [("a", 9), ("<S>", 5), ("</S>", 5), ("red", 4), ("on", 3), ("circle", 2),
                   (".", 2), ("square", 1)]
    self.assertEqual(concepts.select_concepts(word_counts, 2), [("red", 4), ("circle", 2)])


class ConceptsFileTest(unittest.TestCase):

  def setUp(self):
    self._tmp = tempfile.TemporaryDirectory()
    self.addCleanup(self._tmp.cleanup)
    self.path = os.path.join(self._tmp.name, concepts.CONCEPTS_FILENAME)

  def _write_text(self, text):
    with open(self.path, "w", encoding="utf-8") as f:
      f.write(text)

  def test_round_trip(self):
    selected = concepts.select_concepts(WORD_COUNTS, 4)
    concepts.write_concepts(self.path, selected)
    with open(self.path, encoding="utf-8") as f:
      self.assertEqual(f.read(), "red 30\ncircle 20\ncafé 12\nsquare 8")  # word_counts format.
    concept_vocab = concepts.ConceptVocabulary.from_file(self.path)
    self.assertEqual(concept_vocab.words, ["red", "circle", "café", "square"])
    self.assertEqual(len(concept_vocab), 4)
    self.assertEqual(concept_vocab.source, self.path)
    self.assertEqual(os.listdir(self._tmp.name), [concepts.CONCEPTS_FILENAME])  # No temp file.

  def test_malformed_line_names_file_and_line(self):
    self._write_text("red 30\ncircle\nsquare 8\n")
    with self.assertRaisesRegex(ValueError, f"{self.path}:2: expected 'word count'"):
      concepts.ConceptVocabulary.from_file(self.path)
    self._write_text("red 30\nsquare eight\n")
    with self.assertRaisesRegex(ValueError, f"{self.path}:2: "):
      concepts.ConceptVocabulary.from_file(self.path)

  def test_duplicate_word_names_file_and_lines(self):
    self._write_text("red 30\ncircle 20\nred 8\n")
    with self.assertRaisesRegex(ValueError, f"{self.path}: concept 'red' is listed twice "
                                r"\(lines 1 and 3\)"):
      concepts.ConceptVocabulary.from_file(self.path)

  def test_missing_file(self):
    with self.assertRaisesRegex(FileNotFoundError, "Concept file not found"):
      concepts.ConceptVocabulary.from_file(self.path)


class ConceptIdsTest(unittest.TestCase):

  def test_sorted_unique_ids_over_all_captions(self):
    concept_vocab = concepts.ConceptVocabulary(CONCEPT_WORDS)  # red 0 ... square 3, blue 4.
    captions = [["<S>", "a", "blue", "square", "on", "a", "red", "square", "</S>"],
                ["<S>", "the", "square", "is", "blue", "</S>"],
                ["<S>", "a", "café", ".", "</S>"]]
    self.assertEqual(concept_vocab.concept_ids(captions), [0, 2, 3, 4])
    self.assertEqual(concept_vocab.concept_ids([["<S>", "a", "green", "thing", "</S>"]]), [])
    self.assertEqual(concept_vocab.concept_ids([]), [])

  def test_word_to_concept_table(self):
    concept_vocab = concepts.ConceptVocabulary(["red", "circle"])
    vocab = vocabulary.Vocabulary(["<S>", "</S>", "a", "circle", "red", "on"])
    # Word ids 0-5, then <UNK> (6), which Vocabulary appends.
    self.assertEqual(concept_vocab.word_to_concept_table(vocab), [-1, -1, -1, 1, 0, -1, -1])


if __name__ == "__main__":
  unittest.main()
