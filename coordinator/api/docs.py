"""GET /openapi.json and GET /docs: the API contract, generated from the code, no key needed
(it describes the API, it grants nothing; every operation still needs its key)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from ..docs_page import render
from ..openapi import HTML, OBJECT, build_document, documented

bp = Blueprint("docs", __name__)

_CACHE_KEY = "dubfleet.openapi"


def document() -> dict[str, Any]:
    """The app's OpenAPI document, built once (the routes do not change after start-up)."""
    cached = current_app.extensions.get(_CACHE_KEY)
    if cached is None:
        from .. import __version__
        cached = {"json": build_document(current_app, __version__)}
        cached["html"] = render(cached["json"])
        current_app.extensions[_CACHE_KEY] = cached
    return cached


@bp.get("/openapi.json")
@documented("docs", ok=OBJECT)
def openapi_json() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(document()["json"])


@bp.get("/docs")
@documented("docs", ok=HTML)
def docs_page() -> Response:
    """The API reference as an HTML page."""
    return Response(document()["html"], mimetype="text/html")
