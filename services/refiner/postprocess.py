"""Turn a chat model's answer into clean text.

Chat models wrap answers: "Sure! Here's a detailed caption:", "**Caption:** ...", quotes around the
whole answer, markdown emphasis, a closing "Let me know if ...". A caption goes straight into a
text-to-image model or a text encoder, where such wrapping is noise, so `clean_prompt` keeps only
the description, as one paragraph. `clean_remarks` (comparisons, critiques) keeps the line
structure and drops only the wrapping.
"""

from __future__ import annotations

import re
import unicodedata

# A first line that only announces the answer ("Sure! Here is the improved prompt:").
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|okay|ok|of course|absolutely|alright|great)\b[^\n:]*?[.!,]?\s*)?"
    r"(?:here(?:'s| is| are)\b[^\n]*?:|(?:below|following) (?:is|are)\b[^\n]*?:)\s*",
    re.IGNORECASE)
_COURTESY = re.compile(r"^\s*(?:sure|certainly|okay|ok|of course|absolutely|alright)[!.,]*\s*$", re.IGNORECASE)
# A leading label: "Caption:", "**Refined prompt:**", "New description -", "Query:".
_LABEL = re.compile(
    r"^\s*(?:#+\s*)?[*_]{0,2}\s*(?:(?:final|new|improved|refined|updated|revised|detailed|short|better)\s+)*"
    r"(?:caption|prompt|description|query|search query|text-to-image prompt|answer)\s*[*_]{0,2}\s*[:\-–—]\s*[*_]{0,2}\s*",
    re.IGNORECASE)
# Trailing offers: "Let me know if you'd like ...", "I hope this helps".
_CLOSING = re.compile(r"\n\s*(?:let me know|i hope|feel free|would you like|if you(?:'d| would) like)\b.*$",
                      re.IGNORECASE | re.DOTALL)
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`"), ("\u00ab", "\u00bb")]
_STOP_MARKERS = ("<end_of_turn>", "<start_of_turn>", "<eos>")


def _drop_controls(text: str) -> str:
    """Control and unassigned characters (byte-fallback debris) out; newlines and tabs stay."""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cn", "Co", "Cs")
                   and ch != "\ufffd")


def _cut_markers(text: str) -> str:
    for marker in _STOP_MARKERS:
        text = text.split(marker, 1)[0]
    return text


def _encloses(inner: str, left: str, right: str) -> bool:
    """True when the quote pair wraps the whole text ("a" and "b" is not wrapped)."""
    if left == "'":  # apostrophes inside words ("dog's") are not quotes
        return not re.search(r"(?<!\w)'|'(?!\w)", inner)
    return left not in inner and right not in inner


def _unwrap_quotes(text: str) -> str:
    while len(text) >= 2:
        for left, right in _QUOTES:
            if text.startswith(left) and text.endswith(right) and _encloses(text[1:-1], left, right):
                text = text[1:-1].strip()
                break
        else:
            return text
    return text


def _strip_wrapping(text: str) -> str:
    text = _cut_markers(_drop_controls(text)).strip()
    text = re.sub(r"^```[a-z]*\n?|```$", "", text).strip()  # a fenced block around the answer
    lines = text.split("\n")
    # blank lines, "Sure!" alone, or a markdown heading above the answer
    while len(lines) > 1 and (not lines[0].strip() or _COURTESY.match(lines[0]) or lines[0].lstrip().startswith("#")):
        lines.pop(0)
    text = "\n".join(lines)
    text = _PREAMBLE.sub("", text, count=1)
    text = _CLOSING.sub("", text)
    text = _LABEL.sub("", text, count=1)
    return text.strip()


def _strip_markdown(text: str) -> str:
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)           # bold
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)  # italics
    text = re.sub(r"^\s*#+\s*", "", text, flags=re.MULTILINE)   # headings
    return text


def clean_prompt(text: str) -> str:
    """One clean paragraph: no preamble, label, closing offer, surrounding quotes or markdown."""
    text = _strip_markdown(_strip_wrapping(text))
    text = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s+", "", text, flags=re.MULTILINE)  # list markers
    text = re.sub(r"\s+", " ", text).strip()
    text = _LABEL.sub("", text, count=1)  # a label that sat inside the markdown
    return _unwrap_quotes(text).strip()


def clean_remarks(text: str) -> str:
    """Comparison/critique text: wrapping removed, one remark per line, blank lines dropped."""
    text = _strip_markdown(_strip_wrapping(text))
    lines = [re.sub(r"[ \t]+", " ", ln).strip() for ln in text.split("\n")]
    return _unwrap_quotes("\n".join(ln for ln in lines if ln)).strip()


def clean(text: str, output: str) -> str:
    return clean_remarks(text) if output == "remarks" else clean_prompt(text)
