"""The caption tokenizer and the vocabulary file `word_counts.txt`, in the original im2txt format.

`word_counts.txt` holds one `word count` line per word, most frequent first, joined by newlines
(the original writes no trailing newline). A word's id is its line number; `<UNK>` is not in the
file and takes id = number of lines. `<S>` and `</S>` must be in the file.

The original builder run under Python 3 wrote each word as a bytes literal (`b'a' 969108`,
`b"it's" 12`, `b'caf\\xc3\\xa9' 7`); such files are read as the plain words, with the same ids.

The same `tokenize_caption` builds the vocabulary (Beam job), the training records and the
evaluator's references, so the three always agree.
"""

import ast
import collections
from typing import Dict, Iterable, List, Sequence, Tuple

from absl import logging
import tensorflow as tf
from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters
from nltk.tokenize.punkt import PunktSentenceTokenizer

from im2txt import file_io

START_WORD = "<S>"
END_WORD = "</S>"
UNK_WORD = "<UNK>"

# The original builder tokenized with nltk.word_tokenize(caption.lower()): Punkt sentence
# splitting with NLTK's English model, then NLTK's Treebank-style word tokenizer on each sentence.
# Splitting first matters: "a man at a table. he eats" gives `table`, `.` (the word tokenizer
# alone only splits the period off the end of its input, giving `table.`). The English model is
# NLTK data (`punkt`), which this project does not download, so the same Punkt algorithm runs
# here with the parameters that matter for captions written by hand: lower-cased text (as the
# original lower-cased it) has no capitalisation cues, so a period ends a sentence unless the word
# before it is an abbreviation. These are the abbreviations that occur in COCO/Flickr captions;
# with one not listed, its period is split off as the end of a sentence.
CAPTION_ABBREVIATIONS = frozenset([
    "mr", "mrs", "ms", "dr", "jr", "sr", "st", "mt", "ave", "rd", "blvd", "ft",
    "u.s", "u.k", "d.c", "l.a", "n.y", "a.m", "p.m", "e.g", "i.e", "etc", "vs", "no",
    "inc", "co", "corp", "ltd", "jan", "feb", "mar", "apr", "aug", "sept", "oct", "nov", "dec",
])
_SENTENCE_PARAMETERS = PunktParameters()
_SENTENCE_PARAMETERS.abbrev_types = set(CAPTION_ABBREVIATIONS)
_SENTENCE_SPLITTER = PunktSentenceTokenizer(_SENTENCE_PARAMETERS)
# Stateless, so one instance of each serves every caller.
_WORD_TOKENIZER = NLTKWordTokenizer()


def tokenize_caption(caption: str) -> List[str]:
  """Lower-cases a caption, splits it into sentences, and word-tokenizes each (no <S>/</S>).

  >>> tokenize_caption("A man, riding a wave. He falls!")
  ['a', 'man', ',', 'riding', 'a', 'wave', '.', 'he', 'falls', '!']
  >>> tokenize_caption("Mr. Smith on St. Mark's place")
  ['mr.', 'smith', 'on', 'st.', 'mark', "'s", 'place']
  """
  return [token for sentence in _SENTENCE_SPLITTER.tokenize(caption.lower())
          for token in _WORD_TOKENIZER.tokenize(sentence)]


def caption_tokens(caption: str) -> List[str]:
  """The tokens stored in a record: `<S>` + tokenize_caption(caption) + `</S>`."""
  return [START_WORD] + tokenize_caption(caption) + [END_WORD]


def count_words(token_lists: Iterable[Sequence[str]]) -> collections.Counter:
  counts = collections.Counter()
  for tokens in token_lists:
    counts.update(tokens)
  return counts


def sorted_word_counts(counts: Dict[str, int], min_word_count: int) -> List[Tuple[str, int]]:
  """Words seen at least `min_word_count` times, most frequent first, ties by word."""
  kept = [(w, c) for w, c in counts.items() if c >= min_word_count]
  kept.sort(key=lambda wc: (-wc[1], wc[0]))
  return kept


def format_word_counts(word_counts: Sequence[Tuple[str, int]]) -> str:
  """The file's exact text: `word count` lines joined by newlines, as the original writes it."""
  return "\n".join("%s %d" % (w, c) for w, c in word_counts)


def write_word_counts(path: str, word_counts: Sequence[Tuple[str, int]]) -> None:
  """Writes word_counts.txt atomically (temp file + rename), via tf.io.gfile so gs:// works."""
  file_io.write_file(path, format_word_counts(word_counts))


def _decode_bytes_literal(token: str, where: str) -> str:
  """b'caf\\xc3\\xa9' -> café. Only a lone bytes literal is evaluated (ast.literal_eval runs no
  code), so a malformed line is an error naming `where`, not a word."""
  quote = token[1:2]
  value = None
  if len(token) >= 3 and token[0] == "b" and quote in ("'", '"') and token[-1] == quote:
    try:
      value = ast.literal_eval(token)
    except (ValueError, SyntaxError):
      pass
  if not isinstance(value, bytes):
    raise ValueError(f"{where}: expected a bytes literal such as b'word' (the file's format), "
                     f"got {token!r}")
  try:
    return value.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{where}: {token!r} is not UTF-8: {e}") from e


def read_bytes(path: str) -> bytes:
  """A vocabulary file's bytes (for Vocabulary.from_bytes); FileNotFoundError naming it."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"Vocabulary file not found: {path}")
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


class Vocabulary:
  """Maps words to ids and back, read from a word_counts.txt file."""

  def __init__(self, words: Sequence[str], source: str = "<words>"):
    words = list(words)
    for marker in (START_WORD, END_WORD):
      if marker not in words:
        raise ValueError(f"Vocabulary file {source} has no {marker} line; it must contain both "
                         f"{START_WORD} and {END_WORD} (as the Beam job writes them)")
    if UNK_WORD not in words:
      words.append(UNK_WORD)
    self._words = words
    self._ids = {}
    for i, w in enumerate(words):
      self._ids.setdefault(w, i)
    self.source = source
    self.start_id = self._ids[START_WORD]
    self.end_id = self._ids[END_WORD]
    self.unk_id = self._ids[UNK_WORD]

  @classmethod
  def from_file(cls, path: str) -> "Vocabulary":
    return cls.from_bytes(read_bytes(path), path)

  @classmethod
  def from_bytes(cls, contents: bytes, path: str) -> "Vocabulary":
    """from_file of a vocabulary file's bytes (`path` names it in errors)."""
    text = contents.decode("utf-8")
    words, bytes_literals = [], None
    for line_number, line in enumerate(text.split("\n"), start=1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) > 2:
        raise ValueError(f"{path}:{line_number}: expected 'word count', got {line!r}")
      word = parts[0]
      if bytes_literals is None:
        # A file is all in one format or the other: its first word tells which.
        bytes_literals = word[:2] in ("b'", 'b"')
      if bytes_literals:
        word = _decode_bytes_literal(word, f"{path}:{line_number}")
      words.append(word)
    if bytes_literals:
      logging.warning("%s was written by the original im2txt builder under Python 3 (words as "
                      "bytes literals such as b'a'); read it as plain words", path)
    return cls(words, source=path)

  def __len__(self) -> int:
    """Number of ids, <UNK> included."""
    return len(self._words)

  @property
  def words(self) -> List[str]:
    return list(self._words)

  def word_to_id(self, word: str) -> int:
    return self._ids.get(word, self.unk_id)

  def id_to_word(self, word_id: int) -> str:
    if 0 <= word_id < len(self._words):
      return self._words[word_id]
    return UNK_WORD

  def ids(self, tokens: Sequence[str]) -> List[int]:
    return [self.word_to_id(t) for t in tokens]

  def sentence(self, word_ids: Sequence[int]) -> str:
    """Joins ids into a caption without <S> and </S> (the original run_inference's output)."""
    return " ".join(self.id_to_word(i) for i in word_ids
                    if i not in (self.start_id, self.end_id))
