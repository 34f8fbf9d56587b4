"""Tests for im2txt/inference/caption_page.py: a self-contained page that shows markup as text."""

import base64
import re
import unittest

from im2txt.inference import caption_page

JPEG = b"\xff\xd8\xff\xe0fake jpeg bytes"
PNG = b"\x89PNG\r\n\x1a\nfake png"


class CaptionPageTest(unittest.TestCase):

  def test_images_inline_captions_in_order_and_errors(self):
    page = caption_page.render([
        caption_page.Entry("a/dog.jpg", JPEG, [("a dog .", 0.25), ("a cat .", 0.125)]),
        caption_page.Entry("a/logo.png", PNG, [("a sign", 0.5)], note="truth: a logo"),
        caption_page.Entry("a/notes.txt", b"hello", [], error="a/notes.txt: not an image"),
    ], title="Captions", intro="Model m:")
    sources = re.findall(r'<img src="data:(image/\w+);base64,([A-Za-z0-9+/=]+)"', page)
    self.assertEqual([(mime, base64.b64decode(data)) for mime, data in sources],
                     [("image/jpeg", JPEG), ("image/png", PNG)])  # Text bytes not inlined.
    self.assertEqual(re.findall(r"<li>(.*?) <span", page), ["a dog .", "a cat .", "a sign"])
    self.assertEqual(re.findall(r"\(p=([\d.]+)\)", page), ["0.250000", "0.125000", "0.500000"])
    self.assertIn('<div class="note">truth: a logo</div>', page)
    self.assertIn("Not captioned: a/notes.txt: not an image", page)
    self.assertIn("<p>Model m: 3 file(s), 1 not captioned</p>", page)
    self.assertTrue(page.startswith("<!DOCTYPE html>"))
    self.assertNotIn("http", page)  # Self-contained: nothing to fetch.

  def test_markup_in_names_captions_errors_and_notes_is_escaped(self):
    evil = '"><script>alert(1)</script>'
    page = caption_page.render([caption_page.Entry(
        f"pics/{evil}.jpg", JPEG, [(f"a <b>bold</b> & {evil} dog", 0.5)],
        error="<img src=x onerror=alert(2)>", note="<i>truth</i>")], title=f"<title>{evil}")
    for raw in ("<script>", "<b>", "<img src=x", "<i>"):
      self.assertNotIn(raw, page)
    self.assertIn("a &lt;b&gt;bold&lt;/b&gt; &amp; &quot;&gt;&lt;script&gt;", page)
    self.assertIn("pics/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;.jpg", page)
    self.assertIn("&lt;img src=x onerror=alert(2)&gt;", page)
    self.assertEqual(page.count("<img "), 1)  # Only the real image.

  def test_concepts_under_the_captions_escaped(self):
    page = caption_page.render([
        caption_page.Entry("a/dog.jpg", JPEG, [("a dog .", 0.25)],
                           concepts=[("<b>dog</b>", 0.98765), ("a&b", 0.5), ("grass", 0.004)]),
        caption_page.Entry("a/cat.jpg", JPEG, [("a cat .", 0.5)]),
    ], title="Captions")
    self.assertIn(
        '<li>a dog . <span class="p">(p=0.250000)</span></li></ol>'
        '<div class="concepts">concepts: &lt;b&gt;dog&lt;/b&gt; <span class="p">(0.99)</span>, '
        'a&amp;b <span class="p">(0.50)</span>, grass <span class="p">(0.00)</span></div>', page)
    self.assertNotIn("<b>", page)
    self.assertEqual(page.count('<div class="concepts">'), 1)  # None for an entry without.


if __name__ == "__main__":
  unittest.main()
