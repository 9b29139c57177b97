"""The text-quality gate: tell a page of language from a page that only extracted, before an LLM is paid to read it.

A PDF's text layer can be present and still not be the document. When a font has no usable Unicode map, pypdf turns
glyph numbers into code points and a page "extracts" as control codes, accented Latin ("ĜİĭĹĽ" for "This"), ASCII
shifted by 29 ("7KH\\x03TXLFN"), a salad of a dozen scripts, or rare ideographs. A scan's OCR layer made by an engine
set up for the wrong script reads Cyrillic as look-alike Latin letters ("cBo6ogHbIMu" for "свободными"). And a
scan without OCR has only a stray label or page number as text. ``assess_page`` names what it finds, from:

- unreadable characters (C0/C1 controls, U+FFFD, private use, surrogates): more than 25 % of the visible
  characters, or more than 5 % when they outnumber the spaces (the font's space glyph became a control code);
- accented Latin (U+00C0–U+024F): more than 40 % of at least 20 letters — glyph numbers 192–591 read as code
  points, or a legacy code page read as Latin-1 ("Ïðèâåò");
- scripts that do not belong together (Latin and Greek aside): letters that switch script inside a word in more
  than 35 % of adjacent pairs, or more than 25 % of the letters outside the page's main script, Latin and Greek;
- rare ideographs: fewer than 60 % of at least 30 Han characters (or Hangul syllables) among the common ones —
  GB 2312 level 1, JIS X 0208 level 1 and Big5's frequent characters, KS X 1001's Hangul, taken from Python's
  own codecs; real Chinese, Japanese and Korean text scores above 95 %;
- look-alike words: more than 20 % of at least 10 words mixing Latin and Cyrillic letters; or a page of at least
  15 words, at least 15 % of them misshapen (below), that become common words of the other script once look-alike
  letters are swapped back — at least 15 % of them, and more than twice the page's own share plus 5 points
  (Cyrillic read as Latin: "cBo6ogHbIMu", "Ha" for "на"; Latin read as Cyrillic);
- non-words: at least 30 words, fewer than 5 % of them common words of a language of their script, and more than
  30 % shaped like no word is (a digit between letters, a capital after a small letter: "paBHbIMu");
- an image without text: images cover at least half of the page and it holds fewer than 40 visible characters for
  each A4 of its area.

The "common words" are the stopword lists of 58 languages from the stopwordsiso package (MIT, 75 kB, no
dependencies), grouped by script: small enough for a Lambda and wide enough that a page of real prose in any of
those languages is 15–50 % stopwords. A language outside them is never dropped for that alone: the non-word and
look-alike rules need a second signal. The thresholds are loose on purpose — a false alarm drops a real page, a miss
only costs tokens — and were measured with ``python -m bench gate`` (figures in the README).
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["Finding", "Verdict", "assess_page", "is_xfa_placeholder", "looks_garbled", "score_text"]

A4_AREA = 595.0 * 842.0
_UNREADABLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff\ud800-\udfff\U000f0000-\U0010ffff]")
_NOT_LETTERS = re.compile(r"[\W\d_]+")
_ACCENTED_LATIN = re.compile("[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]")
_WORD = re.compile(r"[^\W\d_]{2,}")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
# A letter outside Latin (with its extensions): the page needs the per-letter script count.
_BEYOND_LATIN = re.compile("[^\x00-\u02af\u1e00-\u1eff\u2000-\u2bff\ufb00-\ufb06]")
_EDGE_PUNCTUATION = "\"'“”‘’«»„‚()[]{}<>.,;:!?¿¡…-–—/\\|*•·©®°%#@&+=~^_`$€£¥§¶"
_SAMPLE_CHARACTERS = 3000
# Enough for about 250 words of prose: shares of words settle long before that.
_SAMPLE_WORD_CHARACTERS = 1500
# A Latin-script word judged against the common words: three letters or more (see ``_common_words``).
_LATIN_WORD = re.compile("(?<!\\w)[a-z\u00df-\u00f6\u00f8-\u024f\u1e00-\u1eff]{3,}(?!\\w)")
# The page Adobe puts in front of a dynamic XFA form, whose real content is not in the PDF's pages.
_XFA_PLACEHOLDER = "If this message is not eventually replaced by the proper contents of the document"

# Thresholds (see the module docstring and the README's gate table).
UNREADABLE_SHARE = 0.25
UNREADABLE_SHARE_WITHOUT_SPACES = 0.05
ACCENTED_SHARE = 0.40
SCRIPT_SWITCH_SHARE = 0.35
FOREIGN_SCRIPT_SHARE = 0.25
COMMON_IDEOGRAPH_SHARE = 0.60
MIXED_WORD_SHARE = 0.20
LOOK_ALIKE_RATIO = 2
LOOK_ALIKE_MISSHAPEN_SHARE = 0.15
LOOK_ALIKE_OTHER_SHARE = 0.15
NON_WORD_COMMON_SHARE = 0.05
NON_WORD_MISSHAPEN_SHARE = 0.30
IMAGE_COVER = 0.5
IMAGE_CHARACTERS_PER_A4 = 40


class Finding(enum.Enum):
    """What a dropped page holds instead of the document's text."""

    MOJIBAKE = "mojibake"
    WRONG_SCRIPT = "wrong_script"
    IMAGE_WITHOUT_TEXT = "image_without_text"
    XFA = "xfa"


@dataclass(frozen=True)
class Verdict:
    """Why a page is not used: the finding, and a short description of what was seen (pages share it in warnings)."""

    finding: Finding
    detail: str


@dataclass
class TextScores:
    """What the gate measured on a page's text; ``bench/gate.py`` prints these to show the thresholds' margins."""

    visible: int = 0
    letters: int = 0
    unreadable: float = 0.0
    spaces_lost: bool = False
    accented: float = 0.0
    script_switches: float = 0.0
    foreign_script: float = 0.0
    main_script: str = ""
    ideographs: int = 0
    common_ideographs: float = 1.0
    words: int = 0
    mixed_words: float = 0.0
    own_words: int = 0
    common_words: float | None = None
    misshapen_words: float = 0.0
    look_alike: tuple[str, float] | None = None


def assess_page(text: str, *, area: float | None = None, image_cover: float | None = None) -> Verdict | None:
    """None when the page's text can be trusted, else what it holds instead.

    ``area`` (square points) and ``image_cover`` (0–1) come from the PDF reader; plain text has neither. A page
    costs about 0.25 ms (``make bench``): the counts run in regular expressions, the per-letter script count only
    on pages with letters beyond Latin, the word signals on the page's first 1,500 characters.
    """
    visible = len(text) - _whitespace(text)
    if image_cover is not None and image_cover >= IMAGE_COVER:
        allowed = IMAGE_CHARACTERS_PER_A4 * (area or A4_AREA) / A4_AREA
        if visible < allowed:
            return Verdict(Finding.IMAGE_WITHOUT_TEXT, "only a stray label" if visible else "no text")
    if is_xfa_placeholder(text):
        return Verdict(Finding.XFA, "the placeholder of an XFA form")
    return _judge(score_text(text))


def looks_garbled(text: str) -> bool:
    """True when ``text`` alone (one page, before normalisation) is not language: mojibake or look-alike letters."""
    return _judge(score_text(text)) is not None


def is_xfa_placeholder(text: str) -> bool:
    """True for the "Please wait..." page of a dynamic XFA form: the text is Adobe's, not the document's."""
    return "eventually" in text and _XFA_PLACEHOLDER in " ".join(text.split())


def _judge(s: TextScores) -> Verdict | None:
    if s.visible < 10:
        return None
    if s.unreadable > UNREADABLE_SHARE or s.spaces_lost:
        return Verdict(Finding.MOJIBAKE, "control codes and broken characters")
    if s.accented > ACCENTED_SHARE:
        return Verdict(Finding.MOJIBAKE, "glyph codes read as accented letters")
    if s.words >= 10 and s.mixed_words > MIXED_WORD_SHARE:
        return Verdict(Finding.WRONG_SCRIPT, "words mixing Latin and Cyrillic look-alike letters")
    if s.script_switches > SCRIPT_SWITCH_SHARE or s.foreign_script > FOREIGN_SCRIPT_SHARE:
        return Verdict(Finding.MOJIBAKE, "letters of unrelated scripts side by side")
    if s.ideographs >= 30 and s.common_ideographs < COMMON_IDEOGRAPH_SHARE:
        return Verdict(Finding.MOJIBAKE, "rare ideographs instead of the common ones")
    if s.look_alike is not None:
        return Verdict(Finding.WRONG_SCRIPT, f"{s.look_alike[0]} read as {s.main_script} letters")
    if (s.words >= 30 and s.common_words is not None and s.common_words < NON_WORD_COMMON_SHARE
            and s.misshapen_words > NON_WORD_MISSHAPEN_SHARE):
        return Verdict(Finding.WRONG_SCRIPT, "words that are no language's words")
    return None


def score_text(text: str) -> TextScores:
    """Every signal of the gate, measured on one page's text (a sample of it on long pages)."""
    s = TextScores(visible=len(text) - _whitespace(text))
    if s.visible < 10:
        return s
    unreadable = len(_UNREADABLE.findall(text))
    spaces = text.count(" ") + text.count("\u00a0") + text.count("\u3000")
    s.unreadable = unreadable / s.visible
    if s.unreadable > UNREADABLE_SHARE_WITHOUT_SPACES and unreadable > spaces:
        s.spaces_lost = True  # the font's space became a control code: unreadable whatever the share
        return s
    accented = len(_ACCENTED_LATIN.findall(text))
    if accented > 8:  # needs more than 40 % of at least 20 letters
        s.letters = len(_NOT_LETTERS.sub("", text))
        s.accented = accented / s.letters if s.letters >= 20 else 0.0
    sample = text[:_SAMPLE_CHARACTERS]
    if _BEYOND_LATIN.search(sample):
        _score_scripts(sample, s)
    else:
        s.main_script = "Latin"
    _score_words(sample, s)
    return s


def _whitespace(text: str) -> int:
    return text.count(" ") + text.count("\n") + text.count("\t") + text.count("\r")


# --- scripts ----------------------------------------------------------------------------------------------------

# (first code point, last code point, script group). Han, kana, Bopomofo and Hangul are one group: they are written
# together. Letters outside the table are grouped by their 128-code-point block.
_SCRIPTS = sorted([
    (0x0041, 0x02AF, "Latin"), (0x0370, 0x03FF, "Greek"), (0x0400, 0x052F, "Cyrillic"), (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"), (0x0600, 0x06FF, "Arabic"), (0x0700, 0x074F, "Syriac"), (0x0750, 0x077F, "Arabic"),
    (0x0780, 0x07BF, "Thaana"), (0x07C0, 0x07FF, "NKo"), (0x08A0, 0x08FF, "Arabic"), (0x0900, 0x097F, "Devanagari"),
    (0x0980, 0x09FF, "Bengali"), (0x0A00, 0x0A7F, "Gurmukhi"), (0x0A80, 0x0AFF, "Gujarati"), (0x0B00, 0x0B7F, "Oriya"),
    (0x0B80, 0x0BFF, "Tamil"), (0x0C00, 0x0C7F, "Telugu"), (0x0C80, 0x0CFF, "Kannada"), (0x0D00, 0x0D7F, "Malayalam"),
    (0x0D80, 0x0DFF, "Sinhala"), (0x0E00, 0x0E7F, "Thai"), (0x0E80, 0x0EFF, "Lao"), (0x0F00, 0x0FFF, "Tibetan"),
    (0x1000, 0x109F, "Myanmar"), (0x10A0, 0x10FF, "Georgian"), (0x1100, 0x11FF, "CJK"), (0x1200, 0x139F, "Ethiopic"),
    (0x13A0, 0x13FF, "Cherokee"), (0x1400, 0x167F, "Canadian"), (0x1780, 0x17FF, "Khmer"),
    (0x1800, 0x18AF, "Mongolian"), (0x1C80, 0x1C8F, "Cyrillic"), (0x1D00, 0x1DBF, "Latin"), (0x1E00, 0x1EFF, "Latin"),
    (0x1F00, 0x1FFF, "Greek"), (0x2C00, 0x2C5F, "Glagolitic"), (0x2C60, 0x2C7F, "Latin"), (0x2D00, 0x2D2F, "Georgian"),
    (0x2DE0, 0x2DFF, "Cyrillic"), (0x2E80, 0x2FDF, "CJK"), (0x3005, 0x3007, "CJK"), (0x3021, 0x303F, "CJK"),
    (0x3040, 0x31FF, "CJK"), (0x3400, 0x4DBF, "CJK"), (0x4E00, 0x9FFF, "CJK"), (0xA000, 0xA4CF, "Yi"),
    (0xA640, 0xA69F, "Cyrillic"), (0xA720, 0xA7FF, "Latin"), (0xAC00, 0xD7AF, "CJK"), (0xF900, 0xFAFF, "CJK"),
    (0xFB00, 0xFB06, "Latin"), (0xFB1D, 0xFB4F, "Hebrew"), (0xFB50, 0xFDFF, "Arabic"), (0xFE70, 0xFEFF, "Arabic"),
    (0xFF21, 0xFF5A, "Latin"), (0xFF66, 0xFFDC, "CJK"), (0x20000, 0x3FFFF, "CJK"),
])
_STARTS = [start for start, _end, _script in _SCRIPTS]
# Scripts written beside any other: English words and Greek formula letters turn up in every language.
_EVERYWHERE = {"Latin", "Greek"}


@functools.lru_cache(maxsize=4096)
def _script_of(character: str) -> str:
    code = ord(character)
    index = bisect_right(_STARTS, code) - 1
    if index >= 0 and code <= _SCRIPTS[index][1]:
        return _SCRIPTS[index][2]
    return f"U+{code >> 7 << 7:04X}"


def _score_scripts(sample: str, s: TextScores) -> None:
    counts: dict[str, int] = {}
    pairs = switches = ideographs = common = 0
    common_set = _common_ideographs()
    previous = None
    for character in sample:
        if not character.isalpha():
            previous = None
            continue
        script = _script_of(character)
        counts[script] = counts.get(script, 0) + 1
        # Latin and Greek sit beside every script (an English name, a formula letter): only the others count.
        if script in _EVERYWHERE:
            previous = None
            continue
        if previous is not None:
            pairs += 1
            switches += script != previous
        previous = script
        if script == "CJK" and ("\u4e00" <= character <= "\u9fff" or "\uac00" <= character <= "\ud7af"
                                or "\u3400" <= character <= "\u4dbf"):
            ideographs += 1
            common += character in common_set
    letters = sum(counts.values())
    s.letters = letters
    if letters < 20:
        return
    s.main_script = max(counts, key=counts.__getitem__)
    s.script_switches = switches / pairs if pairs >= 20 else 0.0
    # The page's own script besides Latin and Greek; letters of any further script are foreign.
    own = [n for script, n in counts.items() if script not in _EVERYWHERE]
    s.foreign_script = (sum(own) - max(own, default=0)) / letters
    s.ideographs = ideographs
    s.common_ideographs = common / ideographs if ideographs else 1.0


@functools.cache
def _common_ideographs() -> frozenset[str]:
    """The everyday Han characters and Hangul syllables, from the level-1 sets of the East Asian legacy encodings."""

    def decode(codec: str, leads: range, trails: list[int]) -> set[str]:
        raw = bytes(b for lead in leads for trail in trails for b in (lead, trail))
        return set(raw.decode(codec, errors="ignore"))

    high = list(range(0xA1, 0xFF))
    characters = decode("gb2312", range(0xB0, 0xD8), high)            # GB 2312 level 1: 3,755 hanzi
    characters |= decode("euc_jp", range(0xB0, 0xD0), high)           # JIS X 0208 level 1: 2,965 kanji
    characters |= decode("big5", range(0xA4, 0xC7), list(range(0x40, 0x7F)) + high)  # Big5: 5,401 frequent
    characters |= decode("euc_kr", range(0xB0, 0xC9), high)           # KS X 1001: 2,350 Hangul syllables
    return frozenset(c for c in characters if c.isalpha())


# --- words ------------------------------------------------------------------------------------------------------

# Look-alike letters: what an OCR engine reads in one script for a letter of the other, case kept.
_CYRILLIC_AS_LATIN = {"bI": "ы", "io": "ю", "a": "а", "b": "ь", "c": "с", "e": "е", "g": "д", "k": "к", "m": "т",
                      "n": "п", "o": "о", "p": "р", "r": "г", "u": "и", "x": "х", "y": "у", "3": "з", "4": "ч",
                      "6": "б", "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "K": "К", "M": "М", "O": "О",
                      "P": "Р", "R": "Я", "T": "Т", "X": "Х", "Y": "У"}
_LATIN_AS_CYRILLIC = {"а": "a", "в": "b", "г": "r", "д": "d", "е": "e", "з": "3", "и": "u", "к": "k", "м": "m",
                      "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ш": "w",
                      "ь": "b", "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
                      "С": "C", "Т": "T", "Х": "X", "У": "Y"}
_LOOK_ALIKES = {"Latin": ("Cyrillic", re.compile("bI|io|[a-zA-Z346]"), _CYRILLIC_AS_LATIN),
                "Cyrillic": ("Latin", re.compile("[а-яА-Я]"), _LATIN_AS_CYRILLIC)}
_MISSHAPEN = re.compile(r"[^\W\d_]\d+[^\W\d_]|[a-zа-яёα-ω][A-ZА-ЯЁΑ-Ω]|^\d+[^\W\d_]{2,}\d")


@functools.cache
def _common_words() -> dict[str, frozenset[str]]:
    """Every language's stopwords of the stopwordsiso package, pooled by the script they are written in.

    Latin entries under three letters are left out, as Latin words of that length are not judged (``_in_script``).
    """
    from stopwordsiso import langs, stopwords

    pooled: dict[str, set[str]] = {}
    for language in sorted(langs()):
        for word in stopwords(language):
            word = word.lower()
            if not _spelt(word):
                continue
            script = _script_of(word[0])
            if script == "Latin" and len(word) < 3:
                continue
            pooled.setdefault(script, set()).add(word)
    return {script: frozenset(words) for script, words in pooled.items()}


def _spelt(word: str) -> bool:
    """Only letters, and the vowel signs and diacritics (marks) that Indic, Arabic and Hebrew words are spelt with."""
    return all(c.isalpha() or unicodedata.category(c)[0] == "M" for c in word)


def _score_words(sample: str, s: TextScores) -> None:
    """Word signals on the sample's first words: common words first (regular expressions and set lookups, cheap),
    the per-word shape and look-alike tests only when the page has few common words."""
    sample = sample[:_SAMPLE_WORD_CHARACTERS]
    words = _WORD.findall(sample)
    s.words = len(words)
    if not words:
        return
    if _CYRILLIC.search(sample) and _LATIN.search(sample):
        tokens = sample.split()
        if len(tokens) >= 10:  # a page without spaces is judged by its scripts, not its words
            s.mixed_words = sum(1 for t in tokens if _LATIN.search(t) and _CYRILLIC.search(t)) / len(tokens)
    pool = _common_words()
    script = s.main_script
    known = pool.get(script)
    if known is None:
        return
    lowered = sample.lower()
    if script == "Latin":
        own = _LATIN_WORD.findall(lowered)
    else:
        stripped = (t.strip(_EDGE_PUNCTUATION) for t in lowered.split())
        own = [w for w in stripped if w and _script_of(w[0]) == script and _spelt(w)]
    s.own_words = len(own)
    if len(own) < 10:
        return
    s.common_words = sum(1 for w in own if w in known) / len(own)
    if s.common_words >= 0.3:
        return  # plainly language: the costlier signals are not needed
    tokens = [t.strip(_EDGE_PUNCTUATION) for t in sample.split()]
    tokens = [t for t in tokens if t and not t.isdigit()]
    s.misshapen_words = sum(1 for t in tokens if _MISSHAPEN.search(t)) / max(len(tokens), 1)
    if script in _LOOK_ALIKES and len(own) >= 15:
        other, pattern, swap = _LOOK_ALIKES[script]
        # One-letter words are left out: "a", "o", "e" are words in Latin and Cyrillic scripts alike.
        swapped = [pattern.sub(lambda m: swap.get(m.group(0), m.group(0)), t).lower() for t in tokens if len(t) > 1]
        share = sum(1 for w in swapped if w in pool[other]) / max(len(swapped), 1)
        if (share >= LOOK_ALIKE_OTHER_SHARE and share >= LOOK_ALIKE_RATIO * s.common_words + 0.05
                and s.misshapen_words >= LOOK_ALIKE_MISSHAPEN_SHARE):
            s.look_alike = (other, share)


