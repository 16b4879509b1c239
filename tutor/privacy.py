"""Scrub personal data from learner text before it leaves the database.

Replaced with placeholders: e-mail addresses, phone numbers, URLs, IP addresses, payment card
numbers (Luhn-checked), IBANs, social-media handles, street addresses, and a name the learner
gives after "my name is" / "call me" / "I'm called"."""

from __future__ import annotations

import re
from collections import Counter

EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)  # RFC 5322 local parts
URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
DIGIT_RUN = re.compile(r"(?<![\w@])\+?\(?\d[\d\s().\-/]{5,}\d(?![\w@])")
HANDLE = re.compile(r"(?<![\w.])@[A-Za-z0-9_]{2,30}\b")
STREET = re.compile(
    r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|"
    r"Court|Ct|Way|Place|Pl|Square|Sq)\b")
# The trigger phrase in any case; the name itself must be capitalised ("call me at 5" is no name).
NAME = re.compile(r"\b((?i:my name is|my name's|call me|i'm called|i am called))\s+"
                  r"((?:[A-Z][\w'-]+)(?:\s+[A-Z][\w'-]+){0,2})")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(match: re.Match, counts: Counter) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if 13 <= len(digits) <= 19 and _luhn(digits):
        counts["card"] += 1
        return "[CARD]"
    if 7 <= len(digits) <= 15:
        counts["phone"] += 1
        return "[PHONE]"
    return text


def scrub(text: str) -> tuple[str, Counter]:
    """Return the text with personal data replaced, and what was replaced (kind -> count)."""
    counts: Counter = Counter()

    def sub(pattern: re.Pattern, label: str, value: str) -> str:
        def repl(m: re.Match) -> str:
            counts[label.strip("[]").lower()] += 1
            return label
        return pattern.sub(repl, value)

    out = sub(EMAIL, "[EMAIL]", text or "")
    out = sub(URL, "[URL]", out)
    out = sub(IBAN, "[IBAN]", out)
    out = sub(IPV4, "[IP]", out)
    out = sub(STREET, "[ADDRESS]", out)
    out = DIGIT_RUN.sub(lambda m: _digits(m, counts), out)
    out = sub(HANDLE, "[HANDLE]", out)

    def name(m: re.Match) -> str:
        counts["name"] += 1
        return f"{m.group(1)} [NAME]"
    out = NAME.sub(name, out)
    return out, counts
