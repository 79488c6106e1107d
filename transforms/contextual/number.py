"""Number and quantity changes: "12%" -> "36%", "0.05" -> "0.25", "n = 120" -> "n = 60"; units are kept.

A quantity is a free-standing number (not part of an identifier such as "IL-6", "BRCA1", "3T3", not a
range end "10-20", not a year 1900-2099), optionally followed by a unit ("%", "mg", "-fold"), which stays.
The new value is the old one times a factor drawn by the rng, with the same number of decimals, a
percentage stays within (0, 100], and the digits always change.
"""

from __future__ import annotations

import re

from transforms.contextual.common import Candidate, PerturbResources, describe_edit, pick

# Number not glued to a word, hyphen, slash or decimal point on its left, with its unit (if any) on the right.
_NUMBER_RE = re.compile(
    r"(?<![\w\-–/.,^])(?P<num>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?(?P<unit>\s?%|[A-Za-zµμ]*)(?P<after>[\w\-–]*)"
)
_UPPER_UNITS = frozenset("Gy Hz IU U L M K".split())  # units written right after the number with a capital
_FACTORS = (0.25, 0.5, 2.0, 3.0, 4.0, 1.5, 0.2, 5.0)


def _is_year(value: float, frac: str | None, digits: str) -> bool:
    return frac is None and len(digits) == 4 and 1900 <= value <= 2099


def _format(value: float, decimals: int, thousands: bool) -> str:
    return f"{value:,.{decimals}f}" if thousands else f"{value:.{decimals}f}"


def new_quantity(value: float, decimals: int, percent: bool, rng) -> float | None:
    """A different value: value x factor (rng order), rounded to `decimals`; None if no factor changes it."""
    for index in rng.permutation(len(_FACTORS)):
        candidate = round(value * _FACTORS[index], decimals)
        if decimals == 0:
            candidate = float(int(candidate))
        if candidate <= 0 or candidate == value or (percent and candidate > 100):
            continue
        return candidate
    if value == 0:  # zero times anything is zero: use a small positive number instead
        return round(1.0 if decimals == 0 else 10.0**-decimals * 5, decimals)
    return None


def _sites(text: str) -> list[re.Match]:
    sites = []
    for m in _NUMBER_RE.finditer(text):
        if any(c.isdigit() for c in m.group("after")):
            continue  # "3T3", "5HT2A": an identifier; "10-20": a range, one changed end reads oddly
        unit = m.group("unit")
        if unit[:1].isupper() and unit not in _UPPER_UNITS:
            continue  # "3D culture", "class 2A", "4E-BP": a name, not a quantity
        digits = m.group("num").replace(",", "")
        if _is_year(float(digits), m.group("frac"), digits):
            continue
        sites.append(m)
    return sites


def number_candidates(text: str, rng, resources: PerturbResources, attempts: int = 3) -> list[Candidate]:
    """Up to `attempts` candidates, each changing one quantity of the edit window."""
    out = []
    for m in pick(rng, _sites(text), attempts):
        digits = m.group("num").replace(",", "")
        frac = m.group("frac") or ""
        decimals = len(frac) - 1 if frac else 0
        value = float(digits + frac)
        percent = m.group("unit").strip() == "%"
        new_value = new_quantity(value, decimals, percent, rng)
        if new_value is None:
            continue
        new_number = _format(new_value, decimals, "," in m.group("num"))
        start, end = m.start("num"), m.end("frac") if frac else m.end("num")
        old_span = text[start : m.end("unit")]
        new_span = new_number + m.group("unit")
        candidate = text[:start] + new_number + text[end:]
        out.append(Candidate(candidate, describe_edit(old_span, new_span), "number"))
    return out
