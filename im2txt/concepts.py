"""Visual concepts: the concept vocabulary (concepts.txt) and an image's concept targets.

A shared contract of the Beam job (which writes both) and the trainer (which reads them).
Concepts are words that name what an image shows, learned as multi-label targets from the
captions alone (Fang et al., "From Captions to Visual Concepts and Back", 2015; the attributes
of Yao et al.'s LSTM-A, 2017): the `num_concepts` most frequent words of the training captions
that are not stop words.

concepts.txt, beside word_counts.txt: one `word count` line per concept, most frequent first,
with word_counts.txt's counts and order (a subset of its lines); a concept's id is its line
number. Derived from word_counts.txt alone, so the same vocabulary always gives the same
concepts:

    word_counts.txt: a 9 / <S> 5 / </S> 5 / red 4 / on 3 / circle 2 / . 2 / square 1
    concepts.txt (num_concepts=2): red 4 / circle 2          -> red = 0, circle = 1

An image's target is the set of concepts named in any of its captions, stored in each of its
records as the context feature `image/concept_ids` (sorted, unique concept ids).
"""

from typing import Dict, Iterable, List, Sequence, Tuple

import tensorflow as tf

from im2txt import file_io
from im2txt import vocabulary

CONCEPTS_FILENAME = "concepts.txt"
# Both papers detect the 1,000 most common caption words.
DEFAULT_NUM_CONCEPTS = 1000

# English function words (NLTK's English stop-word list, spelled out here: NLTK's data is not
# downloaded), and the caption markers. Tokens with no letter (punctuation, numbers) are never
# concepts either.
STOP_WORDS = frozenset("""
a about above after again against ain all am an and any are aren aren't as at be because been
before being below between both but by can couldn couldn't d did didn didn't do does doesn
doesn't doing don don't down during each few for from further had hadn hadn't has hasn hasn't
have haven haven't having he he'd he'll he's her here hers herself him himself his how i i'd
i'll i'm i've if in into is isn isn't it it'd it'll it's its itself just ll m ma me mightn
mightn't more most mustn mustn't my myself needn needn't no nor not now o of off on once only or
other our ours ourselves out over own re s same shan shan't she she'd she'll she's should
should've shouldn shouldn't so some such t than that that'll the their theirs them themselves
then there these they they'd they'll they're they've this those through to too under until up
ve very was wasn wasn't we we'd we'll we're we've were weren weren't what when where which while
who whom why will with won won't wouldn wouldn't y you you'd you'll you're you've your yours
yourself yourselves 's n't
""".split()) | {vocabulary.START_WORD, vocabulary.END_WORD, vocabulary.UNK_WORD}


def is_concept_word(word: str) -> bool:
  return word not in STOP_WORDS and any(ch.isalpha() for ch in word)


def select_concepts(word_counts: Sequence[Tuple[str, int]],
                    num_concepts: int) -> List[Tuple[str, int]]:
  """The first `num_concepts` concept words of word_counts (most frequent first), with counts;
  fewer when the vocabulary has fewer."""
  if num_concepts < 0:
    raise ValueError(f"num_concepts must be >= 0, not {num_concepts}")
  return [(w, c) for w, c in word_counts if is_concept_word(w)][:num_concepts]


def write_concepts(path: str, concepts: Sequence[Tuple[str, int]]) -> None:
  """Writes concepts.txt atomically, in word_counts.txt's format."""
  file_io.write_file(path, vocabulary.format_word_counts(concepts))


class ConceptVocabulary:
  """Concept words <-> concept ids, read from concepts.txt."""

  def __init__(self, words: Sequence[str], source: str = "<words>"):
    self.words = list(words)
    self.source = source
    self._ids: Dict[str, int] = {}
    for i, word in enumerate(self.words):
      if word in self._ids:
        raise ValueError(f"{source}: concept {word!r} is listed twice (lines "
                         f"{self._ids[word] + 1} and {i + 1})")
      self._ids[word] = i

  @classmethod
  def from_file(cls, path: str) -> "ConceptVocabulary":
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"Concept file not found: {path}")
    with tf.io.gfile.GFile(path, "rb") as f:
      text = f.read().decode("utf-8")
    words = []
    for line_number, line in enumerate(text.split("\n"), start=1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 2 or not parts[1].isdigit():
        raise ValueError(f"{path}:{line_number}: expected 'word count', got {line!r}")
      words.append(parts[0])
    return cls(words, source=path)

  def __len__(self) -> int:
    return len(self.words)

  def concept_ids(self, token_lists: Iterable[Sequence[str]]) -> List[int]:
    """The sorted, unique ids of the concepts named in any of the token lists (an image's
    captions)."""
    found = {self._ids[t] for tokens in token_lists for t in tokens if t in self._ids}
    return sorted(found)

  def word_to_concept_table(self, vocab: vocabulary.Vocabulary) -> List[int]:
    """For each word id of `vocab`, its concept id, or -1: maps a record's caption ids to
    concepts (records written without image/concept_ids, such as the original builder's)."""
    return [self._ids.get(word, -1) for word in vocab.words]
