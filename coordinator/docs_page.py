"""The `/docs` page: the OpenAPI document rendered as one static HTML page (no script, no CDN).

Every operation with its keys, parameters, body and replies, then every schema with its
properties; names of schemas link to their definitions. All text is HTML-escaped.
"""
from __future__ import annotations

import json
from html import escape
from typing import Any

_METHODS = ("get", "post", "put", "patch", "delete")
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2.5rem}h3{margin:1.6rem 0 .3rem;font-family:monospace}
.m{display:inline-block;min-width:4.5em;padding:0 .3em;border-radius:3px;color:#fff;text-align:center}
.get{background:#2b7bb9}.post{background:#2e8540}.delete{background:#b52d2d}.put,.patch{background:#a66a00}
table{border-collapse:collapse;margin:.3rem 0}td,th{border:1px solid #ddd;padding:.15rem .5rem;
text-align:left;vertical-align:top}code{font-size:90%}small{color:#555}
"""


def _ref_name(ref: str) -> str:
    """`#/components/x/Name` -> `Name`."""
    return ref.rsplit("/", 1)[-1]


def type_text(schema: Any) -> str:
    """A schema in one line of HTML: type, limits, enum, links to referenced schemas."""
    if not isinstance(schema, dict):
        return escape(json.dumps(schema))
    if "$ref" in schema:
        name = escape(_ref_name(schema["$ref"]))
        return f'<a href="#schema-{name}">{name}</a>'
    if "anyOf" in schema:
        return " | ".join(type_text(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    text = escape(" | ".join(kind) if isinstance(kind, list) else kind)
    if "items" in schema:
        text += " of " + type_text(schema["items"])
    limits = [f"{word} {escape(json.dumps(schema[key]))}" for key, word in
              (("minimum", "min"), ("maximum", "max"), ("maxLength", "max length"),
               ("maxItems", "max items"), ("maxProperties", "max entries"), ("pattern", "pattern"),
               ("format", "format"), ("default", "default"))
              if key in schema]
    if "enum" in schema:
        values = [json.dumps(v) for v in schema["enum"]]
        shown = ", ".join(values[:12]) + (f", … ({len(values)} values)" if len(values) > 12 else "")
        limits.insert(0, "one of " + escape(shown))
    return text + (f" <small>({'; '.join(limits)})</small>" if limits else "")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """An HTML table (cells are already HTML)."""
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _content_rows(content: dict[str, Any]) -> str:
    """Media types and their schemas."""
    return "; ".join(f"<code>{escape(media)}</code> {type_text(item.get('schema', {}))}"
                     for media, item in content.items())


def _responses(responses: dict[str, Any], components: dict[str, Any]) -> str:
    """The replies of an operation."""
    rows = []
    for status, reply in responses.items():
        if "$ref" in reply:
            reply = components.get("responses", {}).get(_ref_name(reply["$ref"]), {})
        rows.append((escape(status), escape(reply.get("description", "")),
                     _content_rows(reply.get("content", {}))))
    return _table(("status", "meaning", "body"), rows)


def _operation(method: str, path: str, op: dict[str, Any], components: dict[str, Any]) -> str:
    """One operation's section."""
    keys = " or ".join(escape(name) for alt in op.get("security", []) for name in alt) or "none"
    params = [(f"<code>{escape(p['name'])}</code>", escape(p["in"]), "yes" if p.get("required") else "",
               type_text(p.get("schema", {})), escape(p.get("description", "")))
              for p in op.get("parameters", [])]
    parts = [(f'<h3 id="{escape(op.get("operationId", ""))}"><span class="m {method}">'
              f"{method.upper()}</span> {escape(path)}</h3>"),
             f"<p>{escape(op.get('description', ''))}</p><p><b>API key:</b> {keys}</p>",
             _table(("parameter", "in", "required", "type", "meaning"), params)]
    body = op.get("requestBody")
    if body:
        parts.append(f"<p><b>Body</b>{' (required)' if body.get('required') else ''}: "
                     f"{_content_rows(body.get('content', {}))}</p>")
    parts.append(_responses(op.get("responses", {}), components))
    return "\n".join(parts)


def _schema(name: str, schema: dict[str, Any]) -> str:
    """One component schema's section."""
    required = set(schema.get("required", []))
    rows = [(f"<code>{escape(prop)}</code>", "yes" if prop in required else "", type_text(sub),
             escape(sub.get("description", "")) if isinstance(sub, dict) else "")
            for prop, sub in schema.get("properties", {}).items()]
    return (f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>'
            f"<p>{escape(schema.get('description', ''))}</p>"
            + _table(("property", "required", "type", "meaning"), rows))


def render(document: dict[str, Any]) -> str:
    """The whole page."""
    info, components = document.get("info", {}), document.get("components", {})
    sections: dict[str, list[str]] = {}
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                sections.setdefault(tag, []).append(_operation(method, path, item[method], components))
    body = [f"<h1>{escape(info.get('title', 'API'))} {escape(str(info.get('version', '')))}</h1>",
            f"<p>{escape(info.get('description', ''))}</p>",
            ('<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI '
             f"{escape(str(document.get('openapi', '')))}).</p>")]
    for tag, ops in sections.items():
        body += [f"<h2>{escape(tag)}</h2>", *ops]
    body.append("<h2>Schemas</h2>")
    body += [_schema(name, schema) for name, schema in components.get("schemas", {}).items()]
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(info.get('title', 'API'))}</title><style>{_STYLE}</style></head>"
            "<body>" + "\n".join(body) + "</body></html>")
