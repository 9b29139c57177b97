"""Content words of a text — what the offline providers rank and match, with no model to ask."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "the a an and or of to in on for with by from as at is are was were be been it its this that these those "
    "which who whom whose not no but if then than so such can could may might will would shall should do does "
    "did has have had into over under about between also more most other some any each all there their they "
    "them he she his her we our you your i der die das und ist ein eine zu den von mit sich des auf für im dem "
    "nicht als auch es an werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen "
    "so".split()
)


def content_words(text: str) -> list[str]:
    """Lower-cased words longer than two letters, without stopwords and numbers."""
    return [w for w in (m.lower() for m in _WORD.findall(text)) if len(w) > 2 and w not in STOPWORDS
            and not w.isdigit()]
