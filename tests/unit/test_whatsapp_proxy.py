"""Proxy settings: parsing, NO_PROXY matching, and credentials that never show."""

from __future__ import annotations

import base64

import pytest

from dripline.errors import ConfigError
from dripline.whatsapp.proxy import Proxy, ProxyConfig, proxy_env, redact_proxy_url


def test_a_proxy_url_with_credentials() -> None:
    proxy = Proxy.from_url("http://ana:p%40ss:w0rd@proxy.internal:3128")
    assert (proxy.host, proxy.port, proxy.username, proxy.password) == (
        "proxy.internal",
        3128,
        "ana",
        "p@ss:w0rd",
    )
    assert proxy.authorization == "Basic " + base64.b64encode(b"ana:p@ss:w0rd").decode()
    assert proxy.url == "http://proxy.internal:3128"
    for shown in (proxy.display, str(proxy), repr(proxy)):
        assert "ana" not in shown and "w0rd" not in shown
        assert "proxy.internal" in shown
    assert set(proxy.secrets()) == {"p@ss:w0rd", proxy.authorization.removeprefix("Basic ")}


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://proxy:8080", "proxy", 8080),
        ("proxy:8080", "proxy", 8080),  # no scheme: http, as curl and requests read it
        ("http://proxy", "proxy", 80),
        ("HTTP://Proxy.Example:3128/", "proxy.example", 3128),
        ("http://[::1]:3128", "::1", 3128),
    ],
)
def test_proxy_urls(url: str, host: str, port: int) -> None:
    proxy = Proxy.from_url(url)
    assert (proxy.host, proxy.port, proxy.authorization) == (host, port, None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://u:secret@proxy:443", "only http:// proxies"),
        ("socks5://u:secret@proxy:1080", "only http:// proxies"),
        ("http://u:secret@:3128", "names no host"),
        ("http://u:secret@proxy:99999", "not a proxy URL"),
    ],
)
def test_bad_proxy_urls_are_config_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Proxy.from_url(url)
    assert "secret" not in str(info.value)
    assert str(info.value).startswith("https_proxy: ")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:secret@proxy:3128", "http://***:***@proxy:3128"),
        ("http://secret@proxy:3128", "http://***:***@proxy:3128"),
        ("http://proxy:3128", "http://proxy:3128"),
        ("u:secret@proxy", "http://***:***@proxy"),
        ("http://u:secret@[::1]:3128", "http://***:***@[::1]:3128"),
        ("http://u:secret@proxy:99999", "<unparseable proxy url>"),
    ],
)
def test_redact_proxy_url(url: str, shown: str) -> None:
    assert redact_proxy_url(url) == shown


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        ("", "graph.facebook.com", 443, False),
        ("*", "graph.facebook.com", 443, True),
        (" * ", "graph.facebook.com", 443, True),
        ("facebook.com", "graph.facebook.com", 443, True),  # subdomains match
        (".facebook.com", "graph.facebook.com", 443, True),
        ("*.facebook.com", "graph.facebook.com", 443, True),
        ("facebook.com", "facebook.com", 443, True),
        ("book.com", "graph.facebook.com", 443, False),  # a suffix, not a domain
        ("FACEBOOK.COM", "Graph.Facebook.com", 443, True),
        ("localhost, graph.facebook.com", "graph.facebook.com", 443, True),
        ("graph.facebook.com:443", "graph.facebook.com", 443, True),
        ("graph.facebook.com:8443", "graph.facebook.com", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("10.0.0.0/8", "graph.facebook.com", 443, False),
        ("::1", "::1", 443, True),
        ("[::1]:443", "::1", 443, True),
        ("fd00::/8", "fd12::1", 443, True),
        ("127.0.0.1", "127.0.0.1", 8443, True),
        ("bad:port:", "graph.facebook.com", 443, False),
    ],
)
def test_no_proxy(no_proxy: str, host: str, port: int, direct: bool) -> None:
    config = ProxyConfig.from_strings("http://proxy:3128", no_proxy)
    assert (config.for_target("https", host, port) is None) is direct


def test_plain_http_targets_never_use_the_https_proxy() -> None:
    config = ProxyConfig.from_strings("http://proxy:3128", None)
    assert config.for_target("http", "127.0.0.1", 8089) is None
    assert config.for_target("https", "127.0.0.1", 8089) == Proxy("proxy", 3128)
    assert ProxyConfig().for_target("https", "graph.facebook.com", 443) is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, (None, None)),
        ({"HTTPS_PROXY": "http://a:1", "NO_PROXY": "x"}, ("http://a:1", "x")),
        ({"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:1"}, ("http://low:1", None)),
        ({"https_proxy": "  ", "no_proxy": ""}, (None, None)),
        ({"HTTP_PROXY": "http://plain:1", "ALL_PROXY": "http://all:1"}, (None, None)),
    ],
)
def test_proxy_env(environ: dict[str, str], expected: tuple[str | None, str | None]) -> None:
    assert proxy_env(environ) == expected
