"""Several gitopsd replicas sharing the apps (`settings.sharding`), coordinated only through
the Kubernetes API: one Lease per member, one per app (its owner), one for the leader.

- `shard`: which member reconciles which app (pure).
- `leases`: Lease bodies and the decisions on them: alive, expired, who may take what (pure).
- `membership`: the member's Leases on the cluster, its write fence, the app claims.
"""
