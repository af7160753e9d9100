"""The per-cluster API rate limit (token bucket) in daemon/kube.py."""

from __future__ import annotations

import time

from daemon.kube import RateLimiter


async def test_rate_limit_holds_requests_beyond_the_burst() -> None:
    """After the burst, requests are spaced at 1/qps: 30 requests at 50 qps with a burst of 5
    cannot finish sooner than (30 - 5) / 50 s."""
    limiter = RateLimiter(qps=50, burst=5)
    start = time.monotonic()
    for _ in range(30):
        await limiter.acquire()
    assert time.monotonic() - start >= 0.45


async def test_burst_passes_at_once_and_zero_qps_disables() -> None:
    """Requests within the burst are not delayed; qps 0 means no limit."""
    for limiter, n in ((RateLimiter(qps=1, burst=20), 20), (RateLimiter(qps=0, burst=1), 200)):
        start = time.monotonic()
        for _ in range(n):
            await limiter.acquire()
        assert time.monotonic() - start < 0.5
