"""The COCO caption metrics (pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L and CIDEr.

    with CaptionScorer() as scorer:                # starts METEOR's Java process
      metrics = scorer.score(
          references={42: ["a dog runs on the grass .", "a brown dog running ."]},
          candidates={42: "a dog running on grass ."})
    metrics["BLEU-4"], metrics["CIDEr"], ...

As the COCO evaluation server does, captions and references first go through the Stanford PTB
tokenizer (lower-cased, punctuation removed), then through the scorers. SPICE is left out: it
needs a Stanford CoreNLP model download. The tokenizer and METEOR run on Java (`java` on PATH;
tools/setup.sh installs a runtime); the METEOR jar and its paraphrase table ship inside the
pycocoevalcap package, nothing is downloaded.

Two pycocoevalcap quirks are handled here: its PTBTokenizer writes a temporary file into the
(possibly read-only) package directory, so the same Java command is run here with the file in
the system temp directory; its Meteor has no close() and its destructor blocks forever on a lock
left held when a score fails, so `_Meteor` closes the Java process without that lock.
"""

import os
import shutil
import subprocess
import tempfile
from typing import Dict, Hashable, List, Mapping, Sequence, Tuple

from pycocoevalcap.bleu import bleu
from pycocoevalcap.cider import cider
from pycocoevalcap.meteor import meteor
from pycocoevalcap.rouge import rouge
from pycocoevalcap.tokenizer import ptbtokenizer

BLEU_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
METRIC_NAMES = BLEU_NAMES + ("METEOR", "ROUGE-L", "CIDEr")

_JAVA_HELP = ("pycocoevalcap's PTB tokenizer and METEOR run on Java: install a Java runtime "
              "(tools/setup.sh installs default-jre-headless)")


def check_java() -> str:
  """Path of `java` on PATH; a clear error if there is none."""
  java = shutil.which("java")
  if not java:
    raise RuntimeError(f"No `java` on PATH. {_JAVA_HELP}.")
  return java


def ptb_tokenize(captions: Mapping[Hashable, Sequence[str]]) -> Dict[Hashable, List[str]]:
  """pycocoevalcap's PTBTokenizer.tokenize with plain strings in and out.

  {image id: [caption, ...]} -> {image id: [tokenized caption, ...]}: lower-cased, split by
  Stanford's PTBTokenizer, punctuation tokens dropped, joined by single spaces. The Java command
  and the post-processing are pycocoevalcap's; only the temporary file lives elsewhere.
  """
  keys = [k for k, v in captions.items() for _ in range(len(v))]
  sentences = "\n".join(c.replace("\n", " ") for v in captions.values() for c in v)
  jar_dir = os.path.dirname(os.path.abspath(ptbtokenizer.__file__))
  with tempfile.TemporaryDirectory(prefix="ptb_tokenize") as tmp_dir:
    path = os.path.join(tmp_dir, "captions.txt")
    with open(path, "wb") as f:
      f.write(sentences.encode("utf-8"))
    cmd = ["java", "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR,
           "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path]
    proc = subprocess.run(cmd, cwd=jar_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"The PTB tokenizer (java) failed with exit code {proc.returncode}: "
                       f"{proc.stderr.decode('utf-8', 'replace').strip()[-1000:]}")
  lines = proc.stdout.decode("utf-8").split("\n")
  tokenized = {}
  for key, line in zip(keys, lines):
    words = [w for w in line.rstrip().split(" ") if w not in ptbtokenizer.PUNCTUATIONS]
    tokenized.setdefault(key, []).append(" ".join(words))
  if sum(len(v) for v in tokenized.values()) != len(keys):
    raise RuntimeError(f"The PTB tokenizer returned {len(lines)} lines for {len(keys)} captions")
  return tokenized


class _Meteor(meteor.Meteor):
  """pycocoevalcap's Meteor (one Java process) with a close() that never blocks."""

  def close(self) -> None:
    process = getattr(self, "meteor_p", None)
    if process is None:
      return
    self.meteor_p = None
    for pipe in (process.stdin, process.stdout, process.stderr):
      try:
        pipe.close()
      except OSError:
        pass
    if process.poll() is None:
      process.kill()
    process.wait()

  def __del__(self):
    self.close()

  def failure_reason(self) -> str:
    """Why the Java process stopped answering (call after a failed score)."""
    process = self.meteor_p
    if process is None:
      return "the METEOR scorer was closed"
    if process.poll() is None:
      process.kill()
    stderr = process.stderr.read().decode("utf-8", "replace").strip()
    return (f"METEOR's Java process ({' '.join(self.meteor_cmd)}) exited with code "
            f"{process.wait()}: {stderr[-1000:] or '(no error output)'}")


class CaptionScorer:
  """Scores generated captions against references with BLEU-1..4, METEOR, ROUGE-L and CIDEr.

  Creating one starts METEOR's Java process, which takes several seconds to load its paraphrase
  table: create the scorer first, generate the captions, then call `score`. Close it (or use it
  as a context manager) to end the process.
  """

  def __init__(self, tokenize: bool = True):
    """tokenize: run the PTB tokenizer first (the COCO evaluation's practice)."""
    check_java()
    self.tokenize = tokenize
    self._meteor = _Meteor()

  def __enter__(self) -> "CaptionScorer":
    return self

  def __exit__(self, *unused_exc_info) -> None:
    self.close()

  def close(self) -> None:
    if self._meteor is not None:
      self._meteor.close()
      self._meteor = None

  def score(self, references: Mapping[Hashable, Sequence[str]],
            candidates: Mapping[Hashable, str]) -> Dict[str, float]:
    """{image id: [reference, ...]} and {image id: generated caption} -> {metric name: value}.

    Both must have the same image ids; the values are corpus-level scores over those images.
    """
    return self.score_images(references, candidates)[0]

  def score_images(self, references: Mapping[Hashable, Sequence[str]],
                   candidates: Mapping[Hashable, str]
                   ) -> Tuple[Dict[str, float], Dict[Hashable, Dict[str, float]]]:
    """As `score`, plus each image's own scores: ({metric: value}, {image id: {metric: value}}).

    The per-image values are the scorers' (COCOEvalCap's evalImgs); CIDEr's document
    frequencies come from all the images scored together.
    """
    if self._meteor is None:
      raise ValueError("CaptionScorer.score called after close()")
    gts, res = _check_captions(references, candidates)
    if self.tokenize:
      # One Java run for both (pycocoevalcap runs two): the tokenizer works line by line.
      tokenized = ptb_tokenize({**{("gts", k): v for k, v in gts.items()},
                                **{("res", k): v for k, v in res.items()}})
      gts = {k: tokenized[("gts", k)] for k in gts}
      res = {k: tokenized[("res", k)] for k in res}
    bleu_scores, bleu_images = bleu.Bleu(4).compute_score(gts, res, verbose=0)
    try:
      meteor_score, meteor_images = self._meteor.compute_score(gts, res)
    except (ValueError, OSError) as e:
      raise RuntimeError(self._meteor.failure_reason()) from e
    rouge_score, rouge_images = rouge.Rouge().compute_score(gts, res)
    cider_score, cider_images = cider.Cider().compute_score(gts, res)
    values = list(bleu_scores) + [meteor_score, rouge_score, cider_score]
    # Each scorer's per-image list follows gts' key order.
    columns = list(bleu_images) + [meteor_images, rouge_images, cider_images]
    per_image = {key: {name: float(column[i]) for name, column in zip(METRIC_NAMES, columns)}
                 for i, key in enumerate(gts)}
    return {name: float(value) for name, value in zip(METRIC_NAMES, values)}, per_image


def _check_captions(references: Mapping[Hashable, Sequence[str]],
                    candidates: Mapping[Hashable, str]):
  """The scorers' input dicts {id: [refs]}, {id: [candidate]}; clear errors for bad input."""
  if not candidates:
    raise ValueError("No captions to score")
  missing = [k for k in candidates if k not in references]
  if missing:
    raise ValueError(f"No references for image id(s) {missing[:10]}")
  extra = [k for k in references if k not in candidates]
  if extra:
    raise ValueError(f"No generated caption for image id(s) {extra[:10]}")
  gts, res = {}, {}
  for key, candidate in candidates.items():
    refs = references[key]
    if isinstance(refs, str) or not refs:
      raise ValueError(f"Image id {key}: references must be a non-empty list of strings, got "
                       f"{refs!r}")
    if not isinstance(candidate, str):
      raise ValueError(f"Image id {key}: the generated caption must be a string, got "
                       f"{candidate!r}")
    # A newline would split a caption in two for the line-based Java tools.
    gts[key] = [str(r).replace("\n", " ") for r in refs]
    res[key] = [candidate.replace("\n", " ")]
  return gts, res
