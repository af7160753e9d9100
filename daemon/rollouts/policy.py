"""The analysis policy of one app: its allow-list (settings plus its AppProject's), which
Secrets a `secretKeyRef` arg may read (those the project lets the app manage), whether the
`job` provider may create Jobs (likewise), and the daemon's own API address. Pure."""

from __future__ import annotations

import ipaddress

from daemon.appproject import AppProject
from daemon.plan.project import check_resource
from daemon.rollouts.egress import Address, Entry, Policy
from daemon.settings import Application, ClusterConfig


def own_api(listen: str) -> tuple[Address | None, int] | None:
    """The daemon's API as (address, port) from `settings.listen`; None address: every
    address of the host (it listens on all of them)."""
    host, _, port = listen.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        return None
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::", "*"):
        return None, number
    try:
        return ipaddress.ip_address(host), number
    except ValueError:
        return None, number  # a host name: treat every address of the host as the API's


def for_app(
    app: Application,
    project: AppProject,
    cluster: ClusterConfig,
    *,
    allowed: tuple[Entry, ...],
    listen: str,
) -> Policy:
    """The policy of the analyses of `app`'s Rollouts."""

    def secret(namespace: str, name: str) -> str:
        v = check_resource(
            project,
            group="",
            kind="Secret",
            name=name,
            namespace=namespace,
            namespaced=True,
            server=cluster.server,
            cluster_name=cluster.name,
        )
        return "" if v is None else v.message

    def job(namespace: str) -> str:
        v = check_resource(
            project,
            group="batch",
            kind="Job",
            namespace=namespace,
            namespaced=True,
            server=cluster.server,
            cluster_name=cluster.name,
        )
        return "" if v is None else v.message

    return Policy(
        owner=f"Application/{app.name} (project {project.name})",
        entries=(*allowed, *project.analysis_allowed),
        own_api=own_api(listen),
        secret_check=secret,
        job_check=job,
    )


def unowned(*, allowed: tuple[Entry, ...], listen: str) -> Policy:
    """The policy of a Rollout no app deploys (controller mode `always`): the settings'
    allow-list; Secrets and Jobs of its own namespace, as Argo Rollouts allows."""
    return Policy(
        owner="a Rollout no app deploys (settings only)", entries=allowed, own_api=own_api(listen)
    )
