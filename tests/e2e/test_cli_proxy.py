"""`dripline` behind an HTTPS proxy, as an operator sets it up: `HTTPS_PROXY` with
credentials in the environment, tinyproxy as the proxy, nginx terminating TLS in front
of the fake Cloud API (its CA trusted through `SSL_CERT_FILE`). The credentials must
never appear in `config show` or in any log line.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from dripline.fake import FakeConfig, running_fake
from dripline.store import open_store
from tests.e2e.test_dispatcher_processes import DRIPLINE, start_worker, worker_env
from tests.fixtures.dispatch import TOKEN, enroll, phones
from tests.fixtures.nginx import (
    PROXY_PASSWORD,
    PROXY_USER,
    Tinyproxy,
    Tls,
    start_nginx,
    stop_nginx,
)

ENCODED = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()


def test_config_show_redacts_the_proxy(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPLINE_")}
    env.update(HTTPS_PROXY=f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.internal:3128")
    env.update(NO_PROXY="localhost", COLUMNS="200", NO_COLOR="1")
    shown = {}
    for args in (("config", "show", "--json"), ("config", "show")):
        proc = subprocess.run(
            [DRIPLINE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        shown[args] = proc.stdout + proc.stderr
        assert "http://***:***@proxy.internal:3128" in shown[args]
        for secret in (PROXY_PASSWORD, ENCODED, f"{PROXY_USER}:"):
            assert secret not in shown[args]
    data = json.loads(shown[("config", "show", "--json")])
    assert data["settings"]["no_proxy"] == "localhost"


@pytest.mark.nginx
@pytest.mark.parametrize("good_password", [True, False], ids=["sends", "wrong-password"])
async def test_run_through_the_proxy(
    sqlite_url: str,
    tmp_path: Path,
    tls: Tls,
    tinyproxy: Tinyproxy,
    good_password: bool,
) -> None:
    store = await open_store(sqlite_url)
    try:
        await enroll(store, phones(5))
    finally:
        await store.close()
    password = PROXY_PASSWORD if good_password else "n0t-the-pa55word"
    config = FakeConfig(access_token=TOKEN, rate_per_s=0, pair_interval_s=0)
    async with running_fake(config) as fake:
        (tmp_path / "nginx").mkdir()
        nginx = start_nginx(
            tmp_path / "nginx",
            {
                "tls": f"""listen 127.0.0.1:{{port}} ssl;
                    ssl_certificate {tls.cert}; ssl_certificate_key {tls.key};
                    location / {{
                        proxy_pass {fake.base_url};
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                    }}"""
            },
        )
        try:
            env = worker_env(
                sqlite_url,
                fake,
                DRIPLINE_WHATSAPP_BASE_URL=f"https://127.0.0.1:{nginx.ports['tls']}",
                HTTPS_PROXY=tinyproxy.url(password=password),
                SSL_CERT_FILE=str(tls.ca_pem),
                DRIPLINE_LOG_LEVEL="DEBUG",
            )
            for name in ("NO_PROXY", "no_proxy", "https_proxy"):
                env.pop(name, None)
            worker = await start_worker(env, tmp_path, "--once", "--max-seconds", "60")
            code = await worker.wait(90)
        finally:
            stop_nginx(nginx)
        accepted = len(fake.state.messages)
    logs = worker.stderr() + worker.stdout()
    for secret in (password, base64.b64encode(f"{PROXY_USER}:{password}".encode()).decode()):
        assert secret not in logs
    if good_password:
        assert code == 0, logs[-3000:]
        assert accepted == 5
        assert any(f"127.0.0.1:{nginx.ports['tls']}" in c for c in tinyproxy.connects())
    else:
        # The proxy refused the credentials: sending stops (exit 3), nothing reached the API.
        assert code == 3, logs[-3000:]
        assert accepted == 0
        assert f"http://***:***@127.0.0.1:{tinyproxy.port}" in logs
