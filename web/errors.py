"""JSON error bodies, `{"error": {"code": ..., "message": ...}}`, for every failure the service answers."""

from __future__ import annotations

from flask import Flask, Response, jsonify
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


class ApiError(Exception):
    """Raised by a view to answer with a JSON error."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
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
