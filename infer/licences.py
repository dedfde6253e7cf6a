"""Model licences as data: what each licence allows, a model's own licence, and which ones a service offers
(standard library only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A model whose licence nobody has told this service: a custom checkpoint, or a file under a catalog name whose
# bytes differ from the catalog's. An operator who lists licences names it to allow such models.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class LicenceTerms:
    """What a licence asks of a service that offers a model under it."""

    id: str  # the SPDX identifier
    url: str
    commercial: bool  # a service that charges, or belongs to a business, may use it
    attribution: bool  # the author is named where the model is offered
    share_alike: bool = False  # a model derived from it is shared under the same licence


_CC = "https://creativecommons.org/licenses"
TERMS: dict[str, LicenceTerms] = {t.id: t for t in (
    LicenceTerms("Apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0", True, True),
    LicenceTerms("MIT", "https://opensource.org/license/mit", True, True),
    LicenceTerms("BSD-3-Clause", "https://opensource.org/license/bsd-3-clause", True, True),
    LicenceTerms("CC0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/", True, False),
    LicenceTerms("CC-BY-4.0", f"{_CC}/by/4.0/", True, True),
    LicenceTerms("CC-BY-SA-4.0", f"{_CC}/by-sa/4.0/", True, True, share_alike=True),
    LicenceTerms("CC-BY-NC-4.0", f"{_CC}/by-nc/4.0/", False, True),
    LicenceTerms("CC-BY-NC-SA-4.0", f"{_CC}/by-nc-sa/4.0/", False, True, share_alike=True),
    LicenceTerms("CC-BY-NC-ND-4.0", f"{_CC}/by-nc-nd/4.0/", False, True),
)}


@dataclass(frozen=True)
class ModelLicence:
    """One model's licence, who to credit and where both are published; `id` is UNKNOWN where nobody said."""

    id: str = UNKNOWN
    attribution: str = ""  # the author, as the licence asks to name them
    source: str = ""  # where the model and its licence are published
    note: str = ""  # what the licence's name alone does not say

    @property
    def terms(self) -> LicenceTerms | None:
        return TERMS.get(self.id)

    @property
    def known(self) -> bool:
        return self.id != UNKNOWN

    def line(self) -> str:
        """How lists and logs say it: "CC-BY-4.0, by Philip Hofmann (Phhofm)" or "licence unknown"."""
        if not self.known:
            return "licence unknown"
        parts = [self.id]
        if self.attribution:
            parts.append(f"by {self.attribution}")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def as_json(self) -> dict[str, Any]:
        terms = self.terms
        return {"id": self.id, "attribution": self.attribution or None, "source": self.source or None,
                "note": self.note or None, "url": terms.url if terms else None,
                "commercial": terms.commercial if terms else None}


def parse_allowed(text: str | None) -> frozenset[str] | None:
    """`SR_ALLOWED_LICENCES` ("Apache-2.0,MIT,CC-BY-4.0,unknown") as a set, None when unset (every licence);
    ValueError naming an identifier this service does not know, with the ones it does."""
    items = [part.strip() for part in (text or "").split(",") if part.strip()]
    if not items:
        return None
    by_case = {name.casefold(): name for name in (*TERMS, UNKNOWN)}
    allowed = set()
    for item in items:
        name = by_case.get(item.casefold())
        if name is None:
            raise ValueError(f"{item!r} is not a licence this service knows; use SPDX identifiers from: "
                             f"{', '.join(TERMS)}, or {UNKNOWN} for models whose licence nobody has said")
        allowed.add(name)
    return frozenset(allowed)


def is_allowed(licence: ModelLicence, allowed: frozenset[str] | None) -> bool:
    return allowed is None or licence.id in allowed


def withheld_reason(name: str, licence: ModelLicence) -> str:
    """Why a model is not offered, for the operator (logs and /healthz)."""
    what = "has no known licence" if not licence.known else f"is under {licence.id}"
    return f"{name} {what}, which SR_ALLOWED_LICENCES does not list"
