"""Load generator for the fake and for the client's per-request cost.

    python -m dripline.fake.loadgen --url http://127.0.0.1:8089 --mode raw --concurrency 256
    python -m dripline.fake.loadgen --url http://127.0.0.1:8089 --mode client --concurrency 150
    ... --mode client --http-client aiohttp

`raw` posts prebuilt bodies with a bare aiohttp session (measures the server);
`client` sends through `CloudApiClient` (measures the client: CPU ms per request of
this process, with its builtin HTTP/1.1 transport or with aiohttp). Prints one JSON
line with requests/s, CPU ms/request and error counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import aiohttp

from dripline.errors import WhatsAppError
from dripline.whatsapp.client import CloudApiClient, HttpClient

__all__ = ["main", "run_load"]


async def run_load(
    url: str,
    *,
    mode: str = "raw",
    concurrency: int = 150,
    duration_s: float = 10.0,
    token: str = "test-token",  # noqa: S107 (the fake's default credential)
    phone_number_id: str = "100000000000001",
    http_client: HttpClient = "builtin",
) -> dict[str, object]:
    """Keep `concurrency` requests in flight for `duration_s`; return the figures."""
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + duration_s
    counter = 0

    def next_to() -> str:
        nonlocal counter
        counter += 1
        return f"+1555{counter % 10_000_000:07d}"

    client = CloudApiClient(
        base_url=url,
        access_token=token,
        phone_number_id=phone_number_id,
        read_timeout_s=30,
        http_client=http_client,
    )
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    target = f"{url.rstrip('/')}/v23.0/{phone_number_id}/messages"

    async def raw_worker() -> None:
        while time.monotonic() < deadline:
            body = (
                b'{"messaging_product":"whatsapp","to":"%s","type":"text","text":{"body":"hi"}}'
                % (next_to().encode())
            )
            try:
                async with session.post(target, data=body) as resp:
                    await resp.read()
                    outcomes[str(resp.status)] += 1
            except aiohttp.ClientError as exc:
                outcomes[type(exc).__name__] += 1

    async def client_worker() -> None:
        while time.monotonic() < deadline:
            try:
                await client.send_text(next_to(), "hi", callback_data="bench")
                outcomes["200"] += 1
            except WhatsAppError as exc:
                outcomes[str(exc.code or exc.error_class)] += 1

    worker = raw_worker if mode == "raw" else client_worker
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await client.close()
    await session.close()
    total = sum(outcomes.values())
    return {
        "mode": mode,
        **({"http_client": http_client} if mode == "client" else {}),
        "concurrency": concurrency,
        "requests": total,
        "requests_per_s": round(total / wall, 1),
        "cpu_ms_per_request": round(cpu * 1000 / max(total, 1), 4),
        "outcomes": dict(outcomes),
    }


def main() -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="http://127.0.0.1:8089")
    parser.add_argument("--mode", choices=("raw", "client"), default="raw")
    parser.add_argument("--concurrency", type=int, default=150)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--http-client", choices=("builtin", "aiohttp"), default="builtin")
    args = parser.parse_args()
    result = asyncio.run(
        run_load(
            args.url,
            mode=args.mode,
            concurrency=args.concurrency,
            duration_s=args.duration_s,
            token=args.token,
            http_client=args.http_client,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
