"""``/<group>/v1/...`` and ``/<group>/v1beta/...``: the same endpoints, confined to a routing group.

The namespace is everything before the last ``/v1/`` or ``/v1beta/`` (``pro``, ``openai/pro``).
The view strips it, remembers it on the request (``route_namespace``) and dispatches the rest as
a plain ``/v1`` or ``/v1beta`` URL; the relay resolves the namespace to a group after the key is
authenticated, within the key's team (management spec §2.2, D16).
"""

from __future__ import annotations

import re
from inspect import isawaitable

from django.http import Http404, HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

# Greedy: the namespace ends at the last version segment.
NAMESPACED = re.compile(r"^(?P<namespace>[A-Za-z0-9_\-/]+)/(?P<rest>(?:v1beta|v1)/.*)$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]+$")


@csrf_exempt  # API clients authenticate with keys, as on the plain /v1 URLs
async def dispatch(request: HttpRequest, namespace: str, rest: str) -> HttpResponseBase:
    """Serve ``/<namespace>/<rest>`` as ``/<rest>`` with the namespace attached to the request."""
    segments = [s for s in namespace.split("/") if s]
    if not segments or not all(_SEGMENT.match(s) for s in segments) or segments[0] in ("admin", "static"):
        raise Http404("no such page")
    try:
        match = resolve("/" + rest)
    except Resolver404:
        raise Http404("no such page") from None
    if match.url_name == "namespaced":
        raise Http404("no such page")
    request.route_namespace = "/".join(segments)  # type: ignore[attr-defined]
    request.path_info = "/" + rest
    response = match.func(request, *match.args, **match.kwargs)
    if isawaitable(response):
        response = await response
    return response
