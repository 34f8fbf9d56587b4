"""Tests for im2txt.vocabulary: the tokenizer and the word_counts.txt format."""

import os
import tempfile
import unittest

from im2txt import vocabulary


class TokenizerTest(unittest.TestCase):

  def test_lower_case_and_punctuation(self):
    self.assertEqual(vocabulary.tokenize_caption("A man, riding a Wave."),
                     ["a", "man", ",", "riding", "a", "wave", "."])
    self.assertEqual(vocabulary.tokenize_caption("The dog's ball isn't red!"),
                     ["the", "dog", "'s", "ball", "is", "n't", "red", "!"])

  def test_unicode(self):
    self.assertEqual(vocabulary.tokenize_caption("Un CAFÉ près de la fenêtre"),
                     ["un", "café", "près", "de", "la", "fenêtre"])

  def test_empty_and_whitespace(self):
    self.assertEqual(vocabulary.tokenize_caption(""), [])
    self.assertEqual(vocabulary.tokenize_caption("  \t\n "), [])
    self.assertEqual(vocabulary.caption_tokens(""), ["<S>", "</S>"])

  def test_caption_tokens_wraps_in_markers(self):
    self.assertEqual(vocabulary.caption_tokens("A dog."), ["<S>", "a", "dog", ".", "</S>"])


class VocabularyFileTest(unittest.TestCase):

  def setUp(self):
    self.dir = tempfile.mkdtemp()
    self.path = os.path.join(self.dir, "word_counts.txt")

  def _build(self, captions, min_word_count):
    counts = vocabulary.count_words(vocabulary.caption_tokens(c) for c in captions)
    return vocabulary.sorted_word_counts(counts, min_word_count)

  def test_original_format_byte_for_byte(self):
    captions = ["A dog runs.", "A dog sits.", "A cat sits."]
    vocabulary.write_word_counts(self.path, self._build(captions, min_word_count=2))
    with open(self.path, "rb") as f:
      data = f.read()
    # Most frequent first; equal counts by word; "\n"-joined with no trailing newline, as the
    # original's "\n".join(["%s %d" % (w, c) ...]).
    expected = b". 3\n</S> 3\n<S> 3\na 3\ndog 2\nsits 2"
    self.assertEqual(data, expected)
    self.assertFalse(os.path.exists(self.path + ".tmp"))

  def test_round_trip_ids(self):
    word_counts = self._build(["A dog runs.", "A dog sits.", "A cat sits."], 2)
    vocabulary.write_word_counts(self.path, word_counts)
    vocab = vocabulary.Vocabulary.from_file(self.path)
    self.assertEqual(vocab.words, [w for w, _ in word_counts] + ["<UNK>"])
    for i, (w, _) in enumerate(word_counts):
      self.assertEqual(vocab.word_to_id(w), i)
      self.assertEqual(vocab.id_to_word(i), w)
    self.assertEqual(len(vocab), len(word_counts) + 1)
    self.assertEqual(vocab.unk_id, len(word_counts))
    self.assertEqual(vocab.start_id, 2)
    self.assertEqual(vocab.end_id, 1)

  def test_unknown_words_map_to_unk(self):
    vocabulary.write_word_counts(self.path, [("<S>", 5), ("</S>", 5), ("dog", 4)])
    vocab = vocabulary.Vocabulary.from_file(self.path)
    self.assertEqual(vocab.ids(["<S>", "zebra", "dog", "</S>"]), [0, 3, 2, 1])
    self.assertEqual(vocab.id_to_word(3), "<UNK>")
    self.assertEqual(vocab.id_to_word(99), "<UNK>")
    self.assertEqual(vocab.sentence([0, 2, 3, 1]), "dog <UNK>")

  def test_reads_the_original_files_with_trailing_newline(self):
    with open(self.path, "w") as f:
      f.write("a 10\n<S> 5\n</S> 5\n")
    vocab = vocabulary.Vocabulary.from_file(self.path)
    self.assertEqual(vocab.words, ["a", "<S>", "</S>", "<UNK>"])

  def test_missing_markers_are_an_error_naming_the_file(self):
    with open(self.path, "w") as f:
      f.write("a 10\n<S> 5")
    with self.assertRaisesRegex(ValueError, "word_counts.txt.*</S>"):
      vocabulary.Vocabulary.from_file(self.path)

  def test_missing_file_names_it(self):
    with self.assertRaisesRegex(FileNotFoundError, "nope.txt"):
      vocabulary.Vocabulary.from_file(os.path.join(self.dir, "nope.txt"))

  def test_unicode_words_round_trip(self):
    vocabulary.write_word_counts(self.path, [("<S>", 2), ("</S>", 2), ("café", 2)])
    self.assertEqual(vocabulary.Vocabulary.from_file(self.path).word_to_id("café"), 2)

  def test_min_word_count_filters(self):
    self.assertEqual(self._build(["a b", "a c"], 2), [("</S>", 2), ("<S>", 2), ("a", 2)])


if __name__ == "__main__":
  unittest.main()
