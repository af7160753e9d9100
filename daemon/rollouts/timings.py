"""Reconcile timings of the Rollout controller, for the metrics (pure bookkeeping)."""

from __future__ import annotations

from dataclasses import dataclass, field

RECONCILE_BUCKETS = (0.01, 0.15, 0.25, 0.5, 1.0)  # Argo Rollouts' reconcile histogram's


@dataclass
class Timings:
    """Reconcile durations and errors per (kind, namespace, name), kind `rollout` or
    `analysis_run`: what Argo Rollouts exports as `rollout_reconcile`,
    `rollout_reconcile_error`, `analysis_run_reconcile` and `analysis_run_reconcile_error`."""

    counts: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    sums: dict[tuple[str, str, str], float] = field(default_factory=dict)
    errors: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def observe(self, key: tuple[str, str, str], seconds: float) -> None:
        counts = self.counts.setdefault(key, [0] * (len(RECONCILE_BUCKETS) + 1))
        for i, le in enumerate(RECONCILE_BUCKETS):
            if seconds <= le:
                counts[i] += 1
        counts[-1] += 1
        self.sums[key] = self.sums.get(key, 0.0) + seconds

    def error(self, key: tuple[str, str, str]) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1

    def forget(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        self.counts.pop(key, None)
        self.sums.pop(key, None)
        self.errors.pop(key, None)
