"""Tests for im2txt.vocabulary: the tokenizer and the word_counts.txt format."""

import doctest
import os
import shutil
import tempfile
import unittest

from im2txt import vocabulary

# Words, most frequent first, with the characters that change how Python 3 prints bytes: a quote
# (printed b"it's"), Treebank's closing quote, a backslash and a non-ASCII word.
WORD_COUNTS = [("a", 969108), ("<S>", 1000), ("</S>", 1000), (".", 900), ("it's", 12),
               ("''", 10), ("\\", 8), ("café", 7), ("dog", 5)]


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

  def test_docstring_examples(self):
    self.assertEqual(doctest.testmod(vocabulary).failed, 0)


class SentenceSplitTest(unittest.TestCase):
  """nltk.word_tokenize's semantics (sentences first, then words), written out by hand."""

  def test_multi_sentence(self):
    # The word tokenizer alone keeps `table.` and `montréal.` as words.
    self.assertEqual(vocabulary.tokenize_caption("A man at a table. He eats"),
                     ["a", "man", "at", "a", "table", ".", "he", "eats"])
    self.assertEqual(vocabulary.tokenize_caption("Two dogs play!A ball?  Yes. "),
                     ["two", "dogs", "play", "!", "a", "ball", "?", "yes", "."])
    self.assertEqual(vocabulary.tokenize_caption('A sign reads "Stop." Next to a car'),
                     ["a", "sign", "reads", "``", "stop", ".", "''", "next", "to", "a", "car"])
    self.assertEqual(vocabulary.tokenize_caption("A man (left.) and a woman"),
                     ["a", "man", "(", "left", ".", ")", "and", "a", "woman"])

  def test_abbreviations_do_not_end_sentences(self):
    self.assertEqual(vocabulary.tokenize_caption("Mr. Smith walks his dog on St. Mark's Place."),
                     ["mr.", "smith", "walks", "his", "dog", "on", "st.", "mark", "'s", "place",
                      "."])
    self.assertEqual(vocabulary.tokenize_caption("The U.S. flag at 3 p.m. today"),
                     ["the", "u.s.", "flag", "at", "3", "p.m.", "today"])
    self.assertEqual(vocabulary.tokenize_caption("A dog... running on the beach"),
                     ["a", "dog", "...", "running", "on", "the", "beach"])

  def test_unicode_sentences(self):
    self.assertEqual(vocabulary.tokenize_caption("Un café à Montréal. Très bien"),
                     ["un", "café", "à", "montréal", ".", "très", "bien"])

  def test_empty_sentences(self):
    self.assertEqual(vocabulary.tokenize_caption(". . ."), [".", ".", "."])
    self.assertEqual(vocabulary.caption_tokens(" \n "), ["<S>", "</S>"])

  def test_vocabulary_of_multi_sentence_captions(self):
    captions = ["A dog on a table. It sleeps.", "A cat near a table. It eats", "A table."]
    counts = vocabulary.count_words(vocabulary.caption_tokens(c) for c in captions)
    self.assertEqual(vocabulary.sorted_word_counts(counts, 2),
                     [("a", 5), (".", 4), ("</S>", 3), ("<S>", 3), ("table", 3), ("it", 2)])


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
    self.assertEqual([n for n in os.listdir(os.path.dirname(self.path)) if ".tmp-" in n], [])

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


class Python3BytesLiteralFileTest(unittest.TestCase):
  """word_counts.txt as the original builder wrote it under Python 3: b'a' 969108, ..."""

  def setUp(self):
    self.dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.dir, True)
    self.path = os.path.join(self.dir, "word_counts.txt")
    self.plain_path = os.path.join(self.dir, "plain_word_counts.txt")
    vocabulary.write_word_counts(self.plain_path, WORD_COUNTS)

  def _write(self, text):
    with open(self.path, "w", encoding="utf-8") as f:
      f.write(text)

  def _write_as_original_builder(self):
    # The original's "%s %d" % (w, c), with w the word's UTF-8 bytes.
    self._write("\n".join(["%s %d" % (w.encode("utf-8"), c) for w, c in WORD_COUNTS]))

  def test_the_file_holds_bytes_literals(self):
    self._write_as_original_builder()
    with open(self.path, encoding="utf-8") as f:
      lines = f.read().split("\n")
    self.assertEqual(lines[:2], ["b'a' 969108", "b'<S>' 1000"])
    self.assertEqual(lines[4:8], ["b\"it's\" 12", "b\"''\" 10", "b'\\\\' 8",
                                  "b'caf\\xc3\\xa9' 7"])

  def test_same_words_and_ids_as_the_plain_file(self):
    self._write_as_original_builder()
    vocab = vocabulary.Vocabulary.from_file(self.path)
    plain = vocabulary.Vocabulary.from_file(self.plain_path)
    self.assertEqual(vocab.words, plain.words)
    self.assertEqual(vocab.words, [w for w, _ in WORD_COUNTS] + ["<UNK>"])
    self.assertEqual((vocab.start_id, vocab.end_id, vocab.unk_id), (1, 2, 9))
    self.assertEqual(vocab.ids(["<S>", "it's", "café", "zebra", "</S>"]), [1, 4, 7, 9, 2])

  def test_ids_are_the_line_numbers_as_in_the_original_reader(self):
    # The original's Vocabulary: id = position of the line's first field, <UNK> appended
    # (it would not find <S> in this file itself: its fields are b'<S>', not <S>).
    self._write_as_original_builder()
    with open(self.path, encoding="utf-8") as f:
      reverse_vocab = [line.split()[0] for line in f.readlines()] + ["<UNK>"]
    original_ids = dict((x, y) for (y, x) in enumerate(reverse_vocab))
    vocab = vocabulary.Vocabulary.from_file(self.path)
    for line_index, (word, _) in enumerate(WORD_COUNTS):
      self.assertEqual(vocab.word_to_id(word), line_index)
      self.assertEqual(original_ids[str(word.encode("utf-8"))], line_index)
    self.assertEqual(vocab.unk_id, original_ids["<UNK>"])
    self.assertEqual(vocab.unk_id, len(WORD_COUNTS))

  def test_one_warning_per_bytes_literal_file_none_for_plain_files(self):
    self._write_as_original_builder()
    with self.assertLogs("absl", level="WARNING") as logs:
      vocabulary.Vocabulary.from_file(self.path)
    self.assertEqual(len(logs.records), 1)
    self.assertEqual(logs.records[0].getMessage(),
                     f"{self.path} was written by the original im2txt builder under Python 3 "
                     "(words as bytes literals such as b'a'); read it as plain words")
    with self.assertNoLogs("absl", level="WARNING"):
      vocabulary.Vocabulary.from_file(self.plain_path)

  def test_malformed_literal_is_an_error_naming_the_line(self):
    for line, message in (("b'abc 5", "expected a bytes literal.*\"b'abc\""),
                          ("dog 5", "expected a bytes literal.*'dog'"),
                          ("b'x'+b'y' 5", "expected a bytes literal"),
                          ("b'\\xff' 5", ".*is not UTF-8")):
      self._write(f"b'<S>' 10\n{line}\nb'</S>' 3")
      with self.assertRaisesRegex(ValueError, f"word_counts.txt:2: {message}"):
        vocabulary.Vocabulary.from_file(self.path)

  def test_plain_words_starting_with_b_quote_stay_plain(self):
    # Only a file whose first word is a bytes literal is read as one.
    self._write("<S> 10\n</S> 10\nb'day 4")
    self.assertEqual(vocabulary.Vocabulary.from_file(self.path).words,
                     ["<S>", "</S>", "b'day", "<UNK>"])


if __name__ == "__main__":
  unittest.main()
