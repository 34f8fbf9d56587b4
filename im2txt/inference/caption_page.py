"""One self-contained HTML page of images with their captions: what people look at.

    page = caption_page.render([
        caption_page.Entry("pics/dog.jpg", jpeg_bytes, [("a dog on a couch .", 0.041)]),
        caption_page.Entry("pics/broken.jpg", None, [], error="not a decodable image"),
    ], title="Captions")

Each image is inlined as a data URI (the page needs no other file), its captions are listed best
first with their probabilities, then its concepts if it has any (a model with a concept head),
and a file that could not be captioned shows the reason. Every string that comes from outside
(file names, captions, concepts, errors, notes) is HTML-escaped, so a caption or a file name
holding markup is shown as text, never run.
"""

import base64
import dataclasses
import html
from typing import Optional, Sequence, Tuple

# Magic bytes -> MIME type of the image formats browsers show.
_IMAGE_TYPES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp"))
_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; }
.entry { display: flex; gap: 1.2em; align-items: flex-start; padding: 0.8em 0;
         border-bottom: 1px solid #ddd; }
.entry img { max-width: 320px; max-height: 320px; }
.name { font-weight: bold; word-break: break-all; }
.error { color: #b00020; }
.note { color: #555; }
ol { margin: 0.4em 0; padding-left: 1.4em; }
.p { color: #777; font-size: 0.9em; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
.chart figcaption { font-weight: bold; }
"""


@dataclasses.dataclass
class Entry:
  """One image of the page."""
  path: str
  image: Optional[bytes]  # The file's bytes, inlined when they are a known image format.
  captions: Sequence[Tuple[str, float]]  # (sentence, probability), best first.
  error: str = ""  # Why the file could not be captioned ("" when it was).
  note: str = ""  # A line under the name (e.g. the ground truth).
  concepts: Sequence[Tuple[str, float]] = ()  # (word, probability), best first.


def image_type(data: Optional[bytes]) -> Optional[str]:
  """The MIME type of image bytes a browser shows, or None."""
  for magic, mime in _IMAGE_TYPES:
    if data and data.startswith(magic):
      return mime
  return None


def _entry_html(entry: Entry) -> str:
  parts = ['<div class="entry">']
  mime = image_type(entry.image)
  if mime:
    data = base64.b64encode(entry.image).decode("ascii")
    parts.append(f'<img src="data:{mime};base64,{data}" alt="{html.escape(entry.path)}">')
  parts.append(f'<div><div class="name">{html.escape(entry.path)}</div>')
  if entry.note:
    parts.append(f'<div class="note">{html.escape(entry.note)}</div>')
  if entry.error:
    parts.append(f'<div class="error">Not captioned: {html.escape(entry.error)}</div>')
  if entry.captions:
    parts.append("<ol>" + "".join(
        f'<li>{html.escape(sentence)} <span class="p">(p={probability:.6f})</span></li>'
        for sentence, probability in entry.captions) + "</ol>")
  if entry.concepts:
    parts.append('<div class="concepts">concepts: ' + ", ".join(
        f'{html.escape(word)} <span class="p">({probability:.2f})</span>'
        for word, probability in entry.concepts) + "</div>")
  parts.append("</div></div>")
  return "".join(parts)


def line_chart(title: str, points: Sequence[Tuple[float, float]], width: int = 360,
               height: int = 180) -> str:
  """An inline SVG line chart of (x, y) points (e.g. a metric per global step), axes labelled
  with the first and last step and the lowest and highest value."""
  points = sorted(points)
  if not points:
    return ""
  xs, ys = [p[0] for p in points], [p[1] for p in points]
  x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
  pad = 30

  def sx(x):
    return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

  def sy(y):
    return height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)

  line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
  dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2"/>' for x, y in points)
  return (f'<figure class="chart"><figcaption>{html.escape(title)}</figcaption>'
          f'<svg width="{width}" height="{height}" role="img">'
          f'<polyline fill="none" stroke="#1a73e8" stroke-width="1.5" points="{line}"/>'
          f'<g fill="#1a73e8">{dots}</g>'
          f'<text x="{pad}" y="{height - 8}" font-size="11">{x0:g}</text>'
          f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">{x1:g}</text>'
          f'<text x="2" y="{pad - 8}" font-size="11">{y1:.4g}</text>'
          f'<text x="2" y="{height - pad + 4}" font-size="11">{y0:.4g}</text></svg></figure>')


def render(entries: Sequence[Entry], title: str, intro: str = "",
           charts: Sequence[str] = ()) -> str:
  """The whole page: a title, an optional intro line, `charts` (line_chart's), then one block
  per entry, in order."""
  failed = sum(1 for e in entries if e.error)
  summary = f"{len(entries)} file(s)" + (f", {failed} not captioned" if failed else "")
  lines = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>",
           f"<p>{html.escape(intro + ' ' if intro else '')}{summary}</p>"]
  if charts:
    lines.append('<div class="charts">' + "".join(charts) + "</div>")
  lines += [_entry_html(entry) for entry in entries]
  lines.append("</body></html>")
  return "\n".join(lines) + "\n"
