"""Judge hygiene: invisible characters and prompt-injection markers.

Text that reaches a judge (questions, contexts, references at ingest; model
answers before scoring) is cleaned of invisible and zero-width characters,
which can hide instructions from a human reader while a model still sees
them. Judge prompts carry untrusted text only inside delimiters, and a fake
delimiter inside the text is neutralized, so an answer cannot close its own
block and speak as the instructions.
"""

from __future__ import annotations

import re
import unicodedata

# Zero-width and invisible formatting characters (Unicode category Cf covers
# most: ZWSP, ZWNJ, ZWJ, word joiner, BOM, bidi overrides, tag characters),
# plus a few invisible separators outside Cf.
_EXTRA_INVISIBLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u180e", "\u2800"}


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf" or ch in _EXTRA_INVISIBLE


# Bump when strip_invisible or injection handling changes what scorers see:
# it is part of every score cache key (evaluation.keys).
HYGIENE_VERSION = "1"


def strip_invisible(text: str) -> tuple[str, int]:
    """(text without invisible characters, how many were removed)."""
    if text.isascii():
        return text, 0
    kept = [c for c in text if not _invisible(c)]
    return "".join(kept), len(text) - len(kept)


def delimit(tag: str, text: str) -> str:
    """`text` as data inside <tag>...</tag>. Anything in the text that looks
    like an opening or closing tag of ours (any case, any spacing) is
    defused by replacing its angle brackets, so the block cannot be closed
    early from inside."""
    defused = _FAKE_TAG.sub(lambda m: "\u2039" + m.group(1) + "\u203a", text)
    return f"<{tag}>\n{defused}\n</{tag}>"


_DATA_TAGS = ("question", "answer", "context", "contexts", "reference", "statement", "statements", "data")
_FAKE_TAG = re.compile(r"<\s*(/?\s*(?:" + "|".join(_DATA_TAGS) + r")\b[^>]*)>", re.IGNORECASE)

_INJECTION_PATTERNS = [
    (re.compile(r"ignore\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|prior|above|earlier)\s+instructions?", re.I),
     "ignore-instructions"),
    (re.compile(r"(?:give|assign|output|return|rate)\b[^.\n]{0,40}\b(?:maximum|max|highest|perfect|full|10|ten)"
                r"\s*(?:/\s*10\s*)?(?:score|rating|marks?|points?)", re.I), "score-request"),
    (re.compile(r"\byou\s+are\s+now\b|\bnew\s+instructions?\b|\bsystem\s*prompt\b", re.I), "role-override"),
    (_FAKE_TAG, "fake-delimiter"),
]


def injection_markers(text: str) -> list[str]:
    """Names of the injection patterns found in `text` (empty: none)."""
    return [name for pat, name in _INJECTION_PATTERNS if pat.search(text)]
