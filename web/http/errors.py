"""JSON error bodies, `{"error": {"code": ..., "message": ...}}`, for every failure the service answers."""

from __future__ import annotations

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

# Machine-readable codes for the HTTP errors Flask itself raises.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_type",
    422: "unprocessable",
    500: "internal_error",
    503: "unavailable",
}

_HTTP_MESSAGES = {
    404: "there is nothing here; check the address (jobs are removed after their time to live)",
    405: "this address does not accept that method",
    413: "the upload is larger than the size limit; send a smaller photo",
    500: "something went wrong inside the service; try again, and report it if it keeps happening",
}


class Refusal(Exception):
    """A request the service will not do, raised where the rule lives: the HTTP status, the error code, a message
    for the person, and (`retry_after`, seconds) when trying again may work. One handler answers it."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Refusal)
    def _refusal(err: Refusal) -> Response:
        if g.get("upload_attempt"):
            from web.services import services  # the services module imports every layer that raises a Refusal

            services().metrics.upload_rejected(err.status)
        return error_response(err.status, err.code, err.message, err.headers)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = _HTTP_MESSAGES.get(status) or (err.description or err.name)
        response = error_response(status, code, message)
        if status == 405 and err.get_headers():
            for key, value in err.get_headers():
                if key.lower() == "allow":
                    response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", _HTTP_MESSAGES[500])
