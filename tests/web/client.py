"""A small HTTP client over http.client for talking to a real server on loopback."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, (filename, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class HttpClient:
    base_url: str
    token: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None  # for https:// base URLs
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (X-Forwarded-For, say)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Reply:
        url = urlsplit(self.base_url)
        if url.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                url.hostname, url.port, timeout=timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        all_headers = {**self.headers, **(headers or {})}
        if self.token:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        if self.cookies:
            all_headers.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)

    def upload(
        self, data: bytes, filename: str = "photo.png", fields: dict[str, str] | None = None,
        path: str = "/api/jobs", field_name: str = "image", timeout: float = 60.0,
    ) -> Reply:
        body, content_type = multipart(fields or {}, {field_name: (filename, data)})
        return self.request("POST", path, body=body, headers={"Content-Type": content_type}, timeout=timeout)

    def job(self, job_id: str) -> dict[str, Any]:
        reply = self.get(f"/api/jobs/{job_id}")
        assert reply.status == 200, (reply.status, reply.body)
        return reply.json()

    def wait(self, job_id: str, until: tuple[str, ...] = ("done", "failed"), timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
            time.sleep(0.05)
