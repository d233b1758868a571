"""The built-in ``webhook`` task: an HTTP POST with the standard library's client.

Payload fields:

- ``url`` (required): an ``http://`` or ``https://`` URL.
- ``body`` (optional): sent as JSON (``application/json``), or as is when it is a
  string (``text/plain``); no body: an empty JSON object.
- ``headers`` (optional): an object of extra request headers (strings).
- ``timeout_ms`` (optional, default 10000): the HTTP client's own timeout.

Any 2xx status is a success. Any other status, a redirect included (urllib
would follow a 301, 302 or 303 as a GET without the body, and report the
target's answer), a refused connection or a timeout raises, which makes the
run a failure that goes through the retry rules. The body of a 2xx answer is
not read: only its status counts (a server trickling it cannot hold the run).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

DEFAULT_TIMEOUT_MS = 10_000
USER_AGENT = "jobsched-webhook/0.1"


class WebhookError(Exception):
    """The webhook did not answer 2xx (or the payload cannot make a request)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is the answer, not a place to go: urllib raises it as an HTTPError."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _request(payload: Any) -> tuple[urllib.request.Request, float]:
    if not isinstance(payload, dict):
        raise WebhookError("payload must be an object with a url")
    url = payload.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise WebhookError("payload.url must be an http:// or https:// URL")
    body = payload.get("body", {})
    if isinstance(body, str):
        data, ctype = body.encode(), "text/plain; charset=utf-8"
    else:
        data, ctype = json.dumps(body).encode(), "application/json"
    headers = {"Content-Type": ctype, "User-Agent": USER_AGENT}
    extra = payload.get("headers") or {}
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
    ):
        raise WebhookError("payload.headers must be an object of strings")
    headers.update(extra)
    timeout = payload.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise WebhookError("payload.timeout_ms must be a positive integer")
    return urllib.request.Request(url, data=data, headers=headers, method="POST"), timeout / 1000


def webhook(payload: Any) -> int:
    """POST ``payload["body"]`` to ``payload["url"]``; return the status (2xx)."""
    request, timeout = _request(payload)
    try:
        with _opener.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"{request.full_url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookError(f"POST {request.full_url} failed: {reason}") from None
    if not 200 <= status < 300:
        raise WebhookError(f"{request.full_url} answered HTTP {status}")
    return status
