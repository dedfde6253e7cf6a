"""The upload page."""

from __future__ import annotations

from flask import Blueprint, render_template

from web.services import services

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    s = services()
    return render_template(
        "index.html",
        max_upload_mb=s.config.max_upload_mb,
        max_pixels=s.config.max_pixels,
        scale=s.scale,
        auth=bool(s.config.auth_token),
    )
