"""Finding the debtor's invoice numbers in a transfer's remittance text. Pure.

People write the same number many ways: ``INV-2026-001``, ``inv 2026 001``, ``Rechnung Nr.
2026/001``, ``RE:2026001``. Both the text and each invoice number are cut into *atoms*
(maximal runs of letters, maximal runs of digits; upper-cased; everything else is a
separator). An invoice number is named when the concatenation of its atoms equals the
concatenation of a contiguous run of the text's atoms, so spacing and separators do not
matter but a number is never found inside a longer one (``1001`` is not in ``10012``).

Common prefixes (``RE``, ``Rechnung``, ``INV``, ``Nr.``, …) may be left out or written
differently: an invoice is also named by its *core*, its atoms without leading prefixes.
When several invoices share a core (``RE-7`` and ``INV-7``), only the full form names them;
a bare ``7`` is then ambiguous and names neither, rather than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Upper-cased; stripped from the front of an invoice number to find its core.
PREFIXES: frozenset[str] = frozenset(
    {"RE", "RECHNUNG", "RECHNUNGSNR", "RECHNUNGSNUMMER", "RG", "INV", "INVOICE", "NR", "NO"}
)

_ATOM = re.compile(r"[^\W\d_]+|\d+")


def atoms(text: str) -> list[str]:
    return _ATOM.findall(text.upper())


def core(invoice_number: str) -> str:
    """The invoice number without leading prefixes, as one string of atoms; the full form
    when stripping would leave no digit (``INV`` alone, or ``RE-ABC``)."""
    parts = atoms(invoice_number)
    rest = parts
    while rest and rest[0] in PREFIXES:
        rest = rest[1:]
    if not any(part.isdigit() for part in rest):
        rest = parts
    return "".join(rest)


def _spans(text_atoms: list[str], wanted: str) -> list[tuple[int, int]]:
    """(first, last) atom index of every run of atoms whose concatenation is ``wanted``."""
    found: list[tuple[int, int]] = []
    if not wanted:
        return found
    for first in range(len(text_atoms)):
        joined = ""
        for last in range(first, len(text_atoms)):
            joined += text_atoms[last]
            if joined == wanted:
                found.append((first, last))
                break
            if not wanted.startswith(joined):
                break
    return found


def named_invoices(text: str, invoice_numbers: Iterable[str]) -> list[str]:
    """The invoice numbers ``text`` names, in the order it names them, each once."""
    text_atoms = atoms(text)
    numbers = list(dict.fromkeys(invoice_numbers))
    by_core: dict[str, list[str]] = {}
    for number in numbers:
        by_core.setdefault(core(number), []).append(number)

    hits: list[tuple[int, int, str]] = []  # (first atom, last atom, invoice number)
    full_spans: list[tuple[int, int]] = []
    for number in numbers:
        for first, last in _spans(text_atoms, "".join(atoms(number))):
            hits.append((first, last, number))
            full_spans.append((first, last))
    for key, owners in by_core.items():
        if len(owners) != 1:
            continue  # ambiguous without its prefix: only the full form counts
        for first, last in _spans(text_atoms, key):
            inside_full = any(f <= first and last <= t for f, t in full_spans)
            if not inside_full:
                hits.append((first, last, owners[0]))
    hits.sort()
    return list(dict.fromkeys(number for _, _, number in hits))
