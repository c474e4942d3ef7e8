"""The simulated services' answers: deterministic data drawn from the request's input.

What SimService's endpoints answer for a valid request (``search_result``,
``extract_result``, ``contacts_result``, ``verify_result``), and the stable hash
(``_unit``) its failures, latencies and answers are drawn from, so any process gets the
same answer for the same input.

Example:
    >>> search_result("Acme")["domain"], domain_of("Acme Corp.")
    ('acme.example', 'acme-corp.example')
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

__all__ = ["contacts_result", "domain_of", "extract_result", "search_result", "verify_result"]

_INDUSTRIES = ("software", "fintech", "healthcare", "logistics", "retail", "energy",
               "manufacturing", "media", "education", "biotech")
_SIZES = ("1-10", "11-50", "51-200", "201-500", "501-1000", "1001-5000", "5000+")
_TECH = ("python", "postgres", "react", "aws", "kubernetes", "snowflake", "go", "java",
         "salesforce", "shopify", "gcp", "azure", "rust", "kafka")
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia",
          "Ken", "Margaret", "Dennis", "Leslie", "Tim", "Sophie", "Guido")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus",
         "Perlman", "Thompson", "Hamilton", "Ritchie", "Lamport", "Berners-Lee", "Wilson",
         "van Rossum")
_TITLES = ("CEO", "CTO", "VP Engineering", "Head of Data", "VP Sales", "COO")
_DOMAIN_SUFFIX = ".example"



def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts (stable across processes)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _pick(seq: tuple[str, ...], *parts: object) -> str:
    return seq[int(_unit(*parts) * len(seq))]


def domain_of(company: str) -> str:
    """The domain the simulated search gives a company: its slug + ``.example``.

    Example:
        >>> domain_of("Acme Corp.")
        'acme-corp.example'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", company.lower()).strip("-") or "company"
    return slug + _DOMAIN_SUFFIX


def search_result(company: str) -> dict[str, Any]:
    """What ``GET /search?q=COMPANY`` answers for a known company.

    Example:
        >>> search_result("Acme")["domain"]
        'acme.example'
    """
    industry = _pick(_INDUSTRIES, "industry", company)
    return {"company": company, "domain": domain_of(company), "industry": industry,
            "snippet": f"{company} is a {industry} company founded in "
                       f"{1950 + int(_unit('founded', company) * 70)}."}


def extract_result(text: str) -> dict[str, Any]:
    """What ``POST /extract`` answers for a text: size, industry, revenue, tech stack, tokens.

    The industry is the first known industry named in the text, else drawn from it.

    Example:
        >>> extract_result("Acme is a retail company.")["industry"]
        'retail'
    """
    lowered = text.lower()
    industry = next((i for i in _INDUSTRIES if i in lowered), None) \
        or _pick(_INDUSTRIES, "industry", text)
    size_index = int(_unit("size", text) * len(_SIZES))
    stack_n = 2 + int(_unit("stack-n", text) * 3)
    stack = sorted({_pick(_TECH, "stack", text, i) for i in range(stack_n)})
    return {"size": _SIZES[size_index], "industry": industry,
            "revenue": int(10 ** (5 + size_index * 0.6 + _unit("revenue", text))),
            "tech_stack": stack, "tokens": 1500 + len(text) // 4}


def contacts_result(domain: str) -> dict[str, Any]:
    """What ``GET /contacts?domain=D`` answers: two to four decision-makers with e-mails.

    Example:
        >>> contacts_result("acme.example")["contacts"][0]["email"].endswith("@acme.example")
        True
    """
    n = 2 + int(_unit("contacts-n", domain) * 3)
    contacts = []
    f0 = int(_unit("first", domain) * len(_FIRST))
    l0 = int(_unit("last", domain) * len(_LAST))
    for i in range(n):  # steps coprime with 16: distinct names
        first = _FIRST[(f0 + 5 * i) % len(_FIRST)]
        last = _LAST[(l0 + 3 * i) % len(_LAST)]
        local = f"{first}.{last}".lower().replace(" ", "").replace("-", "")
        contacts.append({"name": f"{first} {last}", "title": _pick(_TITLES, "title", domain, i),
                         "email": f"{local}@{domain}"})
    return {"domain": domain, "contacts": contacts}


def verify_result(emails: list[str]) -> dict[str, Any]:
    """What ``POST /verify`` answers: one ``{"email", "valid"}`` per address, in order.

    An address is valid if well formed, at an ``.example`` domain, and not in the ~15%
    the simulator rejects (decided by the address).

    Example:
        >>> verify_result(["not-an-address"])["results"]
        [{'email': 'not-an-address', 'valid': False}]
    """
    results = []
    for email in emails:
        well_formed = re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", email) is not None
        valid = well_formed and email.lower().endswith(_DOMAIN_SUFFIX) \
            and _unit("valid", email.lower()) >= 0.15
        results.append({"email": email, "valid": valid})
    return {"results": results}
