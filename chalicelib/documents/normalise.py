"""Clean extracted text without changing what it says.

- Ligatures (ﬁ ﬂ ﬀ ﬃ ﬄ ﬅ ﬆ) become their letters, so "ﬁnd" is searched and tokenised as "find".
- A soft hyphen at a line end joins the two halves of its word; other soft hyphens, control characters and byte
  order marks are dropped.
- Tabs, no-break and other wide spaces become one space; a form feed or vertical tab inside a page and the Unicode
  line and paragraph separators become line breaks; more than one blank line becomes one.
- A word hyphenated at a line end ("Mannig-\\nfaltigkeit") is joined only when the document spells the joined word
  elsewhere. Without that evidence the hyphen may belong to the word ("well-\\nknown") or stand for a shared ending
  ("Geometrie- und Topologie"), and the text is left as it is.
"""

from __future__ import annotations

import re

_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st"})
_LINE_BREAKS = str.maketrans({"\r": "\n", "\x0b": "\n", "\x0c": "\n", "\u2028": "\n", "\u2029": "\n\n"})
_SOFT_HYPHEN_AT_EOL = re.compile("\u00ad[ \t]*\n[ \t]*")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_WIDE_SPACE = re.compile(r"[\t\u00a0\u2000-\u200a\u202f\u205f\u3000]")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_TRANSLATED = re.compile("[\r\x0b\x0c\u2028\u2029\ufb00-\ufb06]")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_HYPHENATED = re.compile(r"([^\W\d_]+)-\n([^\W\d_]+)")
_WORD = re.compile(r"[^\W\d_]+")


def normalise(text: str) -> str:
    """One page's text with the layout noise removed and the meaning kept."""
    if _TRANSLATED.search(text):
        text = text.replace("\r\n", "\n").translate(_LINE_BREAKS).translate(_LIGATURES)
    if "\u00ad" in text:
        text = _SOFT_HYPHEN_AT_EOL.sub("", text)
    text = _CONTROL.sub("", text)
    # Each pass runs only when its pattern occurs: most pages have single plain spaces and line breaks only.
    if "  " in text or _WIDE_SPACE.search(text):
        text = _SPACES.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    if "\n\n\n" in text:
        text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


def join_hyphenated(pages: list[str]) -> list[str]:
    """The pages with each line-end hyphenation joined where the document spells the joined word elsewhere.

    >>> join_hyphenated(["eine Mannig-\\nfaltigkeit", "jede Mannigfaltigkeit", "Geometrie-\\nund Topologie"])
    ['eine Mannigfaltigkeit', 'jede Mannigfaltigkeit', 'Geometrie-\\nund Topologie']
    """
    if not any("-\n" in page for page in pages):
        return pages
    vocabulary = {word.lower() for page in pages for word in _WORD.findall(page)}

    def join(match: re.Match[str]) -> str:
        head, tail = match.groups()
        joined = head + tail
        return joined if tail[0].islower() and joined.lower() in vocabulary else match.group(0)

    return [_HYPHENATED.sub(join, page) for page in pages]
