"""`POST /api/damage`: the scratches and dust the worker finds in a photo, as a mask PNG the page lets the person
edit before the job runs with it as its `repair_mask`."""

from __future__ import annotations

import io

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from web.guards.health import UNAVAILABLE_TEXT, availability
from web.guards.space import data_space, out_of_space
from web.http import owners
from web.http.clients import client_address
from web.http.errors import Refusal
from web.jobs.choice import catalog_for
from web.services import services

bp = Blueprint("damage", __name__)


def _photo() -> io.BufferedIOBase:
    """The one photo of the form's `image` field (a Refusal otherwise)."""
    try:
        photos = request.files.getlist("image")
    except RequestEntityTooLarge:
        raise Refusal(413, "too_large", f"the photo is larger than the {services().config.max_upload_mb:g} MB "
                      "limit; send a smaller photo") from None
    if not photos:
        raise Refusal(400, "no_file", "no photo was sent; send it in the multipart form field 'image'")
    if len(photos) > 1:
        raise Refusal(400, "too_many_files", f"the field 'image' holds {len(photos)} files; send one photo")
    return photos[0].stream


@bp.post("/api/damage")
def find_damage() -> Response:
    """The mask (PNG, the photo's size as shown, white where damage was found); nothing of the photo is kept."""
    s = services()
    space = data_space(s.config)
    if not space.ok:
        s.health_log.note(space)
        raise out_of_space()
    state = availability(s.config, s.runner.backend, catalog_for(s.config, s.runner.backend), notes=False)
    if not state.ok:
        s.health_log.note(state)
        raise Refusal(503, "unavailable", UNAVAILABLE_TEXT, retry_after=60)
    mask = s.damage.find(_photo(), owners.current_owner() or client_address())
    return Response(mask, mimetype="image/png")
