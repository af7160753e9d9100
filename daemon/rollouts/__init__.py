"""Progressive delivery inside the daemon: Argo Rollouts' `Rollout` (canary and blue-green),
`AnalysisTemplate`, `ClusterAnalysisTemplate` and `AnalysisRun`, reconciled by the daemon itself
so an edge host gets canaries without a second controller.

- `spec`: the Rollout spec and status as typed values (pure).
- `replicas`: canary pod arithmetic (pure).
- `plan`: one reconcile of one Rollout, from its spec, status and ReplicaSets to the writes and
  the new status (pure).
- `controller`: reads and writes through `daemon.kube`, one task per Rollout, driven by watches.
"""
