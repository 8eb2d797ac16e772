"""``GET /metrics``: the Prometheus text format, read from the database on each scrape.

Open by default, like most exporters: it shows counts, times and feed names, never an
address or a token. Bind the app to loopback or keep ``/metrics`` out of the public
proxy (deploy/web.md); or set ``[metrics] token_env`` and scrape with that bearer token.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, request

from newsletter.pipeline.metrics import CONTENT_TYPE, QueueDepth, render_metrics
from newsletter.web.context import web_context
from newsletter.web.logsafe import guard

log = guard(logging.getLogger(__name__))

metrics = Blueprint("metrics", __name__)


def _authorised() -> Response | None:
    """None when the request may read the metrics, else the answer to give."""
    settings = web_context().settings
    env = settings.metrics.token_env
    if not env:
        return None
    expected = settings.secret(env)
    if expected is None:  # configured but not set: closed, not open
        log.error("/metrics: [metrics] token_env names %s, which is not set", env)
        return Response("metrics token not configured\n", status=503, mimetype="text/plain")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), expected):
        return None
    return Response(
        "unauthorised\n",
        status=401,
        mimetype="text/plain",
        headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
    )


def _queue_depth() -> QueueDepth | None:
    settings = web_context().settings
    if not settings.queue.enabled:
        return None
    from newsletter.workers.app import make_app, queue_depth  # Celery only with a [queue]

    return lambda: queue_depth(make_app(settings))


@metrics.get("/metrics")
def scrape() -> Response:
    refused = _authorised()
    if refused is not None:
        return refused
    body = render_metrics(web_context().engine, queue_depth=_queue_depth())
    return Response(body, headers={"Content-Type": CONTENT_TYPE})
