"""The server's access rules as a table: token, Host, Origin, JSON only, public routes."""

from __future__ import annotations

import base64

import pytest

from dripline.server.guard import AccessPolicy, HostRule, check_request
from dripline.settings import load_settings

TOKEN = "t" * 32
BEARER = f"Bearer {TOKEN}"
BASIC = "Basic " + base64.b64encode(f"any:{TOKEN}".encode()).decode()
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
POLICY = AccessPolicy(TOKEN, HostRule(frozenset({"localhost", "dripline.example.com"})))


def headers(**kw: str) -> dict[str, str]:
    out = {"host": "127.0.0.1:8080"}
    out.update({k.replace("_", "-"): v for k, v in kw.items()})
    return out


CASES = [
    # method, path, headers, expected status (None: allowed)
    (
        "POST",
        "/v1/conversations",
        headers(authorization=BEARER, content_type=JSON, content_length="9"),
        None,
    ),
    ("POST", "/v1/conversations", headers(content_type=JSON, content_length="9"), 401),
    (
        "POST",
        "/v1/conversations",
        headers(authorization="Bearer nope", content_type=JSON, content_length="9"),
        401,
    ),
    (
        "POST",
        "/v1/conversations",
        headers(authorization=TOKEN, content_type=JSON, content_length="9"),
        401,
    ),
    # Basic credentials are replayed by browsers on their own: reads only.
    (
        "POST",
        "/v1/conversations",
        headers(authorization=BASIC, content_type=JSON, content_length="9"),
        401,
    ),
    ("GET", "/v1/conversations", headers(authorization=BASIC), None),
    ("GET", "/v1/conversations", headers(), 401),
    # JSON only for bodies; an empty POST (cancel) needs no type.
    (
        "POST",
        "/v1/conversations",
        headers(authorization=BEARER, content_type=FORM, content_length="9"),
        415,
    ),
    (
        "POST",
        "/v1/conversations",
        headers(authorization=BEARER, content_type="text/plain", content_length="9"),
        415,
    ),
    ("POST", "/v1/conversations", headers(authorization=BEARER, transfer_encoding="chunked"), 415),
    (
        "POST",
        "/v1/conversations",
        headers(
            authorization=BEARER, content_type="application/merge-patch+json", content_length="2"
        ),
        None,
    ),
    ("POST", "/v1/conversations/1/cancel", headers(authorization=BEARER), None),
    (
        "POST",
        "/v1/conversations/1/cancel",
        headers(authorization=BEARER, content_length="0", content_type="application/octet-stream"),
        None,
    ),
    # Host: loopback, the public host, nothing else (DNS rebinding).
    ("GET", "/v1/conversations", headers(authorization=BEARER, host="evil.example"), 421),
    ("GET", "/v1/conversations", headers(authorization=BEARER, host="localhost:8080"), None),
    ("GET", "/v1/conversations", headers(authorization=BEARER, host="[::1]:8080"), None),
    ("GET", "/v1/conversations", headers(authorization=BEARER, host="dripline.example.com"), None),
    ("GET", "/v1/conversations", headers(authorization=BEARER, host="x.dripline.example.com"), 421),
    ("GET", "/v1/conversations", headers(authorization=BEARER, host=""), 421),
    ("GET", "/v1/conversations", headers(authorization=BEARER, host="a:b:c"), 421),
    # Origin: a browser page elsewhere may not call (CSRF), with or without the token.
    (
        "POST",
        "/v1/conversations",
        headers(
            authorization=BEARER,
            content_type=JSON,
            content_length="9",
            origin="https://evil.example",
        ),
        403,
    ),
    (
        "POST",
        "/v1/conversations",
        headers(content_type="text/plain", content_length="9", origin="https://evil.example"),
        403,
    ),
    ("GET", "/", headers(authorization=BASIC, origin="null"), 403),
    (
        "POST",
        "/v1/conversations",
        headers(
            authorization=BEARER,
            content_type=JSON,
            content_length="9",
            origin="https://dripline.example.com",
        ),
        None,
    ),
    ("GET", "/", headers(authorization=BASIC, origin="http://127.0.0.1:8080"), None),
    # Dashboard and metrics: behind the token by default.
    ("GET", "/", headers(), 401),
    ("GET", "/api/dashboard", headers(), 401),
    ("GET", "/metrics", headers(), 401),
    ("GET", "/metrics", headers(authorization=BEARER), None),
    ("GET", "/openapi.json", headers(), 401),
    # Public and signed routes: no token, any Host (probes, Meta).
    ("GET", "/healthz", headers(host="10.0.0.7:8080"), None),
    ("GET", "/readyz", headers(host="pod-ip"), None),
    (
        "POST",
        "/webhook",
        headers(host="dripline.example.com", content_type=JSON, content_length="9"),
        None,
    ),
    ("GET", "/webhook", headers(host="anything"), None),
]


@pytest.mark.parametrize(("method", "path", "hdrs", "expected"), CASES)
def test_check_request(method: str, path: str, hdrs: dict[str, str], expected: int | None) -> None:
    refusal = check_request(method, path, hdrs, POLICY)
    assert (refusal.status if refusal else None) == expected
    if refusal is not None:
        assert TOKEN not in refusal.detail


def test_a_browser_is_asked_for_basic_credentials_an_api_client_for_a_bearer() -> None:
    page = check_request("GET", "/", headers(accept="text/html,*/*"), POLICY)
    api = check_request("GET", "/v1/conversations", headers(accept="application/json"), POLICY)
    assert page is not None and dict(page.headers)["www-authenticate"].startswith("Basic")
    assert api is not None and dict(api.headers)["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("settings", "host", "allowed"),
    [
        ({}, "127.0.0.5", True),
        ({}, "localhost", True),
        ({}, "example.com", False),
        ({"public_url": "https://dripline.example.com/base"}, "dripline.example.com", True),
        ({"public_url": "dripline.example.com"}, "DRIPLINE.example.com.", True),
        ({"allowed_hosts": [".example.org"]}, "a.b.example.org", True),
        ({"allowed_hosts": [".example.org"]}, "example.org", True),
        ({"allowed_hosts": [".example.org"]}, "badexample.org", False),
        ({"allowed_hosts": ["*"]}, "anything", True),
    ],
)
def test_host_rule_from_settings(settings: dict[str, object], host: str, allowed: bool) -> None:
    rule = HostRule.from_settings(load_settings(**settings))
    assert rule.allows(host) is allowed


def test_opting_out_opens_reads_only() -> None:
    policy = AccessPolicy.from_settings(
        load_settings(dashboard_public=True, metrics_public=True), TOKEN
    )
    for path in ("/", "/api/dashboard", "/metrics"):
        assert check_request("GET", path, headers(), policy) is None
    assert check_request("GET", "/v1/conversations", headers(), policy) is not None
    assert check_request("POST", "/metrics", headers(), policy) is not None
