"""The upload page, in the language the browser asks for.

Every text the page shows lives in `web/static/i18n/<language>.json`. The language is chosen here from
Accept-Language among the files present, so a translation is one new file; keys a translation lacks
fall back to English.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Blueprint, render_template, request
from markupsafe import Markup

from infer import contract
from web.jobs.choice import catalog_for
from web.services import Services, services

bp = Blueprint("pages", __name__)

CATALOGUE_DIR = Path(__file__).resolve().parents[1] / "static" / "i18n"
FALLBACK = "en"
# Texts only the template shows; the script gets the rest of the catalogue.
TEMPLATE_ONLY = ("title", "sign_out", "intro", "drop_main", "drop_hint")


@lru_cache(maxsize=None)
def _catalogue(language: str) -> dict[str, Any]:
    messages = json.loads((CATALOGUE_DIR / f"{FALLBACK}.json").read_text(encoding="utf-8"))
    if language != FALLBACK:
        own = json.loads((CATALOGUE_DIR / f"{language}.json").read_text(encoding="utf-8"))
        codes = {**messages.get("error_codes", {}), **own.get("error_codes", {})}
        messages = {**messages, **own, "error_codes": codes}
    return messages


def languages() -> list[str]:
    return sorted(p.stem for p in CATALOGUE_DIR.glob("*.json"))


def choose_language() -> str:
    available = languages()
    best = request.accept_languages.best_match(available)
    if best:
        return best
    # "de-AT" asks for German even when only de.json exists.
    for value, _quality in request.accept_languages:
        base = value.split("-")[0].lower()
        if base in available:
            return base
    return FALLBACK


# The scale the page shows where no model is installed at all.
DEFAULT_SCALE = 3


def _default_scale(s: Services) -> int:
    """The scale the page shows before its options arrive: the catalog's default's, else x3."""
    default = catalog_for(s.config, s.runner.backend).default
    return default.scale if default is not None else DEFAULT_SCALE


@bp.get("/")
def index() -> Any:
    s = services()
    language = choose_language()
    messages = _catalogue(language)

    def t(key: str, **values: Any) -> str:
        text = str(messages.get(key, key))
        for name, value in values.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    response = render_template(
        "index.html",
        max_upload_mb=s.config.max_upload_mb,
        max_pixels=s.config.max_pixels,
        scale=_default_scale(s),
        formats=contract.OUTPUT_FORMATS,
        auth=bool(s.config.auth_token),
        language=language,
        t=t,
        markup=Markup,
        messages={k: v for k, v in messages.items() if k not in TEMPLATE_ONLY},
    )
    return response, 200, {"Content-Language": language, "Vary": "Accept-Language"}
