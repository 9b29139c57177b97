"""Tell a page of language from a page that only extracted, before an LLM is paid to read it.

When a font has no Unicode map (a CID font without ToUnicode, a subset TrueType font), pypdf turns glyph numbers
straight into code points, and the page "extracts" as control characters, as accented Latin letters ("ĜİĭĹĽ" for
"This"), or as ASCII shifted by 29 with a control code for the space ("7KH\\x03TXLFN" for "The quick"). A page is
garbled when, among its visible characters:

1. more than 25 % are unreadable — C0/C1 controls, U+FFFD, private-use or surrogate code points — or more than 5 %
   are and they outnumber the spaces (the font's space glyph became a control code);
2. more than 40 % of its letters (at least 20) are accented Latin, U+00C0–U+024F: glyph numbers 192–591 read as
   code points, or a legacy code page read as Latin-1 ("Ïðèâåò");
3. more than 20 % of its words (at least 10) mix Latin and Cyrillic letters: look-alike letters.

The thresholds are loose on purpose: a false alarm drops a real page, a miss only costs tokens. On the corpus the
highest unreadable share of a real page is 8.8 % (GeoTopo p. 92: TeX maths fonts map Greek letters to control
codes), GeoTopo's German at most 3 % accented letters, and Japanese, Arabic and Cyrillic text score 0 on every rule.
"""

from __future__ import annotations

import re

_UNREADABLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff\ud800-\udfff\U000f0000-\U0010ffff]")
_NOT_LETTERS = re.compile(r"[\W\d_]+")
_ACCENTED_LATIN = re.compile("[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]")
_WORD = re.compile(r"[^\W\d_]{2,}")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
# The page Adobe puts in front of a dynamic XFA form, whose real content is not in the PDF's pages.
_XFA_PLACEHOLDER = "If this message is not eventually replaced by the proper contents of the document"


def looks_garbled(text: str) -> bool:
    """True when ``text`` (one page, before normalisation) is glyph numbers rather than language.

    Counting is done by the regular expression engine and ``str`` methods, and each rule runs only when it can
    fire: a page of 5,000 characters costs about 0.15 ms.
    """
    visible = len("".join(text.split()))
    if visible < 10:
        return False
    unreadable = len(_UNREADABLE.findall(text))
    spaces = text.count(" ") + text.count("\u00a0") + text.count("\u3000")
    if unreadable > 0.25 * visible or (unreadable > 0.05 * visible and unreadable > spaces):
        return True
    accented = len(_ACCENTED_LATIN.findall(text))
    if accented > 8:  # rule 2 needs more than 40 % of at least 20 letters
        letters = len(_NOT_LETTERS.sub("", text))
        if letters >= 20 and accented > 0.4 * letters:
            return True
    if not (_CYRILLIC.search(text) and _LATIN.search(text)):
        return False
    words = _WORD.findall(text)
    mixed = sum(1 for word in words if _LATIN.search(word) and _CYRILLIC.search(word))
    return len(words) >= 10 and mixed > 0.2 * len(words)


def is_xfa_placeholder(text: str) -> bool:
    """True for the "Please wait..." page of a dynamic XFA form: the text is Adobe's, not the document's."""
    return _XFA_PLACEHOLDER in " ".join(text.split())
