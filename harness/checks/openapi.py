"""OpenAPI conformance of a live HTTP service: generated requests and a check that
judges nothing, only observes.

Two halves, for any team's service that publishes an OpenAPI document:

- ``generated_requests(service, ...)``: a Hypothesis strategy of requests that
  schemathesis generates from the live service's own document (positive: valid by
  the schema; negative: invalid in one place), each mapped to a plain dict (method,
  path template, path parameters, query, headers, body), so that a counterexample is
  JSON in the regression store and replays against the next instance of the service.
  A property falsifier's strategy is called with no arguments: name a small function
  of your own that calls this one (this repository's ``falsifiers/strategies/service.py``).
- ``conforms(ctx)`` (a check) and ``conformance(ctx, ...)`` (the same, for a check of
  your own that prepares fixtures first): send each request of ``ctx.params["requests"]``
  and observe, per response, a 5xx, a status the operation does not document, a
  content type it does not document, a body or documented header that does not
  validate against the schema documented for that status and content type (all four
  by schemathesis's own checks), and the headers ``ctx.params["headers"]`` requires.

A request dict (what the strategy yields, what a contract lists, what the store keeps)::

    {"method": "POST", "path": "/api/generate",          # as in the document
     "path_parameters": {...}, "query": {...}, "headers": {...},
     "body": <JSON>, "media_type": "application/json",   # or "body_base64" for bytes
     "mode": "positive" | "negative"}                     # informative only

A string value ``"{{name}}"`` (a whole path parameter, query value, header or
top-level body property) is a fixture: ``conformance(ctx, fixtures={"name": value})``
substitutes it before sending. Generated requests use fixtures for the names given to
``generated_requests(fixtures=...)`` (e.g. the id of a run that exists), so a saved
counterexample replays on a new instance, where that id differs.

schemathesis is imported only inside functions: ``harness`` works without it, and a
check that needs it SKIPs (never passes) when it is missing.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.context import CheckContext
from harness.services import env_prefix

DEFAULT_DOCUMENT = "/openapi.json"
DEFAULT_MODES = ("positive", "negative")
MAX_PROBLEMS = 10  # problems described in the observations (all are counted)
_FIXTURE = re.compile(r"^\{\{([A-Za-z_][A-Za-z0-9_-]*)\}\}$")
# schemathesis's response checks, by the observation that counts their failures
_CHECKS = (
    ("server_errors", "not_a_server_error"),
    ("undocumented_status", "status_code_conformance"),
    ("undocumented_content_type", "content_type_conformance"),
    ("schema_violations", "response_schema_conformance"),
    ("schema_violations", "response_headers_conformance"),
)
_SCHEMAS: dict[tuple[str, str], Any] = {}  # (base URL, document path) -> loaded schema


class OpenAPIError(LookupError):
    """A request names no operation of the document, or a fixture nobody gave."""


# ---------------------------------------------------------------- the service


def service_url(service: str, ctx: Any = None) -> str:
    """The base URL of a service the harness started: ``ctx.service(name)``, else its
    environment variable (a strategy has no context)."""
    getter = getattr(ctx, "service", None)
    if callable(getter):
        return str(getter(service)).rstrip("/")
    var = env_prefix(service) + "URL"
    url = os.environ.get(var)
    if not url:
        raise OpenAPIError(
            f"service {service!r} is not running here: no ${var}; declare it "
            f"under `services:` and list it in the invariant's `services: [{service}]`"
        )
    return url.rstrip("/")


def load_schema(url: str, document: str = DEFAULT_DOCUMENT, timeout: float = 30.0) -> Any:
    """The schemathesis schema of the document the service at ``url`` serves (cached per
    URL: each instance of a service is read once per process)."""
    key = (url, document)
    if key not in _SCHEMAS:
        import schemathesis

        with urllib.request.urlopen(url + document, timeout=timeout) as resp:
            doc = json.loads(resp.read())
        _SCHEMAS[key] = schemathesis.openapi.from_dict(doc)
    return _SCHEMAS[key]


def operation_of(schema: Any, method: str, path: str) -> Any:
    try:
        return schema[path][method.upper()]
    except (KeyError, LookupError):
        raise OpenAPIError(
            f"the OpenAPI document has no operation {method.upper()} {path}"
        ) from None


# ---------------------------------------------------------------- requests as plain data


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def case_to_request(case: Any, mode: str = "") -> dict[str, Any] | None:
    """A schemathesis ``Case`` as a plain request dict; None when a part of it is not
    JSON (it could not be saved, so it is not generated)."""
    from schemathesis.core import NOT_SET

    out: dict[str, Any] = {"method": case.method.upper(), "path": case.operation.path}
    for key, value in (("path_parameters", case.path_parameters), ("query", case.query),
                       ("headers", case.headers), ("cookies", case.cookies)):  # fmt: skip
        if value:
            out[key] = dict(value)
    if case.body is not NOT_SET:
        if isinstance(case.body, (bytes, bytearray)):
            out["body_base64"] = base64.b64encode(bytes(case.body)).decode()
        else:
            out["body"] = case.body
    if case.media_type:
        out["media_type"] = case.media_type
    if mode:
        out["mode"] = mode
    return out if _is_json(out) else None


def request_to_case(schema: Any, request: Mapping[str, Any]) -> Any:
    """The ``Case`` a plain request dict describes (fixtures already substituted)."""
    from schemathesis.core import NOT_SET

    op = operation_of(schema, str(request["method"]), str(request["path"]))
    body: Any = NOT_SET
    if "body_base64" in request:
        body = base64.b64decode(request["body_base64"])
    elif "body" in request:
        body = request["body"]
    return op.Case(
        path_parameters=dict(request.get("path_parameters") or {}),
        query=dict(request.get("query") or {}),
        headers=dict(request.get("headers") or {}),
        cookies=dict(request.get("cookies") or {}),
        body=body,
        media_type=request.get("media_type"),
    )


def substitute(request: Mapping[str, Any], fixtures: Mapping[str, Any]) -> dict[str, Any]:
    """``request`` with each ``"{{name}}"`` value replaced by ``fixtures[name]``."""

    def value(v: Any) -> Any:
        m = _FIXTURE.match(v) if isinstance(v, str) else None
        if m is None:
            return v
        if m.group(1) not in fixtures:
            raise OpenAPIError(
                f"the request uses fixture {v} but none named {m.group(1)!r} was given"
            )
        return fixtures[m.group(1)]

    out = dict(request)
    for key in ("path_parameters", "query", "headers", "cookies"):
        if isinstance(out.get(key), Mapping):
            out[key] = {k: value(v) for k, v in out[key].items()}
    if isinstance(out.get("body"), Mapping):
        out["body"] = {k: value(v) for k, v in out["body"].items()}
    return out


def _with_fixtures(request: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Every parameter or top-level body property named like a fixture uses it."""
    names = set(names)
    out = dict(request)
    for key in ("path_parameters", "query", "headers", "cookies", "body"):
        part = out.get(key)
        if isinstance(part, dict):
            out[key] = {k: ("{{" + k + "}}" if k in names else v) for k, v in part.items()}
    return out


def _whole(value: Any) -> Any:
    """``value`` with each whole float (``2.0``) an int (``2``), recursively."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return value


def _capped(request: dict[str, Any], caps: Mapping[str, float]) -> dict[str, Any]:
    """Numbers of the top-level body above their cap set to it (a valid request stays
    cheap: a training run of 100 000 steps is not what a conformance search is for)."""
    body = request.get("body")
    if not isinstance(body, dict):
        return request
    new = dict(body)
    for key, cap in caps.items():
        v = new.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > cap:
            new[key] = type(v)(cap)
    return {**request, "body": new}


# ---------------------------------------------------------------- the strategy


def generated_requests(
    service: str | None = None,
    *,
    url: str | None = None,
    document: str = DEFAULT_DOCUMENT,
    modes: Sequence[str] = DEFAULT_MODES,
    fixtures: Sequence[str] = (),
    caps: Mapping[str, Mapping[str, float]] | None = None,
    exclude: Sequence[str] = (),
    weights: Mapping[str, int] | None = None,
    whole_floats: bool = True,
) -> Any:
    """A Hypothesis strategy of ``{"requests": [request]}`` (params of ``conforms``)
    generated by schemathesis from the OpenAPI document of the live service.

    - ``service``: a service of the contract's ``services:`` (its URL from the check's
      environment), or ``url``: a base URL;
    - ``modes``: ``positive`` (valid by the schema), ``negative`` (invalid somewhere);
    - ``fixtures``: names of parameters or top-level body properties that, in about
      half of the requests, take the fixture ``"{{name}}"`` (a value the check
      substitutes, e.g. the id of a run that exists) instead of a generated value;
    - ``caps``: ``{"POST /path": {"property": max}}``: numbers of a top-level body
      property above ``max`` are set to it (keeps valid requests cheap);
    - ``exclude``: operations (``"METHOD /path"``) never generated;
    - ``weights``: ``{"METHOD /path": n}``: that operation is drawn about n times as
      often as one of weight 1 (the default);
    - ``whole_floats``: False sends a whole number schemathesis spells as a float in a
      JSON body (``2.0``, valid where the schema says integer) as an int (``2``), for a
      service that refuses ``2.0`` for an integer: a valid request then gets past
      validation to the code behind it (the document's schema still holds: an int is
      valid wherever a whole float is).
    """
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    base = url.rstrip("/") if url else service_url(service or "")
    schema = load_schema(base, document)
    known = {"positive": GenerationMode.POSITIVE, "negative": GenerationMode.NEGATIVE}
    unknown = [m for m in modes if m not in known]
    if unknown or not modes:
        raise ValueError(f"modes must be among {sorted(known)}, got {list(modes)}")

    def key(name: str) -> str:
        method, _, path = " ".join(name.split()).partition(" ")
        return f"{method.upper()} {path}"

    skipped = {key(e) for e in exclude}
    weight = {key(k): int(v) for k, v in (weights or {}).items()}
    ops = []
    for result in schema.get_all_operations():
        op = result.ok()
        name = key(f"{op.method} {op.path}")
        if name not in skipped:
            ops.extend([op] * max(0, weight.get(name, 1)))
    if not ops:
        raise ValueError(f"no operation left to generate requests for in {base}{document}")
    caps = {key(k): dict(v) for k, v in (caps or {}).items()}

    def plain(mode: str) -> Any:
        cases = st.one_of([op.as_strategy(generation_mode=known[mode]) for op in ops])
        return cases.map(lambda case: case_to_request(case, mode)).filter(lambda r: r is not None)

    @st.composite
    def one(draw: Any) -> dict[str, Any]:
        request = draw(st.one_of([plain(m) for m in modes]))
        if not whole_floats and "body" in request:
            request["body"] = _whole(request["body"])
        if fixtures and draw(st.booleans()):
            request = _with_fixtures(request, fixtures)
        cap = caps.get(f"{request['method']} {request['path']}")
        if cap:
            request = _capped(request, cap)
        return {"requests": [request]}

    return one()


# ---------------------------------------------------------------- the check


def _header(response: Any, name: str) -> str | None:
    """A response header's value (schemathesis keeps a list per lower-case name; a
    repeated header is read as HTTP combines it: joined by ", ")."""
    values = response.headers.get(name.lower())
    if values is None:
        return None
    return ", ".join(values) if isinstance(values, list) else str(values)


def _media_type(response: Any) -> str:
    return (_header(response, "content-type") or "").split(";")[0].strip().lower()


def _header_problems(response: Any, wanted: Mapping[str, str]) -> list[str]:
    found = []
    for name, pattern in wanted.items():
        got = _header(response, name)
        if got is None:
            found.append(f"no {name} header")
        elif not re.fullmatch(pattern, got):
            found.append(f"{name}: {got!r} does not match {pattern!r}")
    return found


def _failures(case: Any, response: Any, check: Any) -> list[str]:
    from schemathesis.core.failures import Failure, FailureGroup

    try:
        case.validate_response(response, checks=[check])
    except FailureGroup as group:
        return [_describe(f) for f in group.exceptions]
    except Failure as failure:
        return [_describe(failure)]
    return []


def _describe(failure: Any) -> str:
    message = " ".join(str(getattr(failure, "message", "") or "").split())
    return f"{getattr(failure, 'title', type(failure).__name__)}: {message}"[:400]


def conformance(
    ctx: CheckContext,
    requests: Sequence[Mapping[str, Any]] | None = None,
    fixtures: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Send each request (default ``ctx.params["requests"]``) to the service
    ``ctx.params["service"]`` and count what is wrong with the responses.

    Params: ``service``; ``requests``; ``headers`` ({name: regular expression the whole
    value must match}, for responses whose media type matches ``headers_for``, a
    regular expression, default every response); ``document`` (default
    ``/openapi.json``); ``timeout_s`` per request (default 30).

    Observations: ``requests``, ``responses``, ``no_response`` (connection refused
    or reset, timeout), ``unsendable`` (the client cannot encode it), ``server_errors``,
    ``undocumented_status``, ``undocumented_content_type``, ``schema_violations`` (body
    or documented headers), ``header_violations``, ``statuses`` ({status: count}) and
    ``problems`` (the first few, described)."""
    from requests.exceptions import ConnectionError as Refused
    from requests.exceptions import Timeout
    from schemathesis import checks

    params = ctx.params
    url = service_url(str(params["service"]), ctx)
    schema = load_schema(url, str(params.get("document", DEFAULT_DOCUMENT)))
    wanted = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
    headers_for = re.compile(str(params.get("headers_for", ".*")))
    timeout = float(params.get("timeout_s", 30))
    todo = list(params["requests"] if requests is None else requests)
    counts = {"requests": len(todo), "responses": 0, "no_response": 0, "unsendable": 0,
              "server_errors": 0, "undocumented_status": 0, "undocumented_content_type": 0,
              "schema_violations": 0, "header_violations": 0}  # fmt: skip
    statuses: dict[str, int] = {}
    problems: list[str] = []

    def note(what: str, request: Mapping[str, Any], why: str) -> None:
        counts[what] += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append(f"{request['method']} {request['path']}: {what}: {why}")

    for raw in todo:
        request = substitute(raw, fixtures or {})
        case = request_to_case(schema, request)  # an unknown operation raises: ERROR
        try:
            response = case.call(base_url=url, timeout=timeout)
        except (Refused, Timeout) as exc:
            note("no_response", request, f"{type(exc).__name__}: {exc}")
            continue
        except (ValueError, UnicodeError) as exc:  # requests' InvalidHeader/InvalidURL too
            note("unsendable", request, f"{type(exc).__name__}: {exc}")
            continue
        counts["responses"] += 1
        code = str(response.status_code)
        statuses[code] = statuses.get(code, 0) + 1
        for what, name in _CHECKS:
            for why in _failures(case, response, getattr(checks, name)):
                if what == "server_errors":  # what the server said about it
                    why += " " + " ".join(response.text[:300].split())
                note(what, request, f"{code}: {why}")
        if wanted and headers_for.search(_media_type(response)):
            for why in _header_problems(response, wanted):
                note("header_violations", request, f"{code}: {why}")
    return {**counts, "statuses": statuses, "problems": problems}


def conforms(ctx: CheckContext) -> dict[str, Any]:
    """The check (``python: harness.checks.openapi:conforms``): ``conformance`` of the requests
    in ``ctx.params`` with the fixtures in ``ctx.params["fixtures"]``; SKIP when
    schemathesis is not installed."""
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        ctx.skip("schemathesis is not installed: pip install 'ml-contract-harness[openapi]'")
    return conformance(ctx, fixtures=ctx.params.get("fixtures") or {})
