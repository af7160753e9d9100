"""Command line: argument parsing only; everything else is called from the layers below."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from daemon import __version__, yamlio
from daemon.errors import ConfigError, GitopsdError

T = TypeVar("T")


def _run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run `fn` on asyncio with uvloop's event loop (measured: about a sixth less CPU and wall
    time on a 1,000-object sync; see the README's dependency table), or asyncio's own where
    uvloop is not available."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(fn, *args)
    return anyio.run(fn, *args, backend_options={"use_uvloop": True})


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(lines)


def _load(path: str) -> Any:
    from daemon import settings

    cfg = settings.load(path)
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return cfg


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config and render every app (no cluster writes)."""
    from daemon.engine import Engine

    cfg = _load(args.config)

    async def main() -> int:
        from daemon import appsets

        async with Engine.open(cfg) as engine:
            expansion = await appsets.expand(cfg, engine.repos)
            engine.reconciler.generated = dict(expansion.owner)
            failures = len(expansion.errors)
            for name, error in expansion.errors.items():
                print(f"error ApplicationSet/{name}: {error}")
            for app in [*cfg.applications, *expansion.apps.values()]:
                try:
                    _, desired = await engine.reconciler.checked_desired(app)
                    print(
                        f"ok    {app.name}: {len(desired.manifests)} resources "
                        f"({desired.tool}) at {desired.revision[:12]}"
                    )
                except GitopsdError as e:
                    failures += 1
                    print(f"error {app.name}: {e}")
            return 1 if failures else 0

    return _run(main)


def cmd_render(args: argparse.Namespace) -> int:
    """Print an app's manifests in sync order, each marked with phase and wave."""
    from daemon.engine import Engine
    from daemon.plan.order import build_tasks

    cfg = _load(args.config)

    async def main() -> int:
        async with Engine.open(cfg) as engine:
            app = cfg.app(args.app)
            _, desired = await engine.reconciler.checked_desired(app)
            tasks = build_tasks(desired.manifests, {}, prune_last=False)
            docs = []
            for t in tasks:
                assert t.target is not None
                out = f"# {t.phase} wave {t.wave}: {t.key}\n" + yamlio.dump(t.target)
                docs.append(out)
            sys.stdout.write("---\n".join(docs))
            return 0

    return _run(main)


def cmd_diff(args: argparse.Namespace) -> int:
    """Show live vs desired for an app; exit 1 when it is out of sync."""
    from daemon.engine import Engine
    from daemon.plan import diff as diffing

    cfg = _load(args.config)

    async def main() -> int:
        async with Engine.open(cfg) as engine:
            app = cfg.app(args.app)
            desired, cmp = await engine.reconciler.diff(app)
            out_of_sync = False
            for m in desired.manifests:
                st = cmp.status.get(m.key)
                if st is None or str(st) == "Synced":
                    continue
                out_of_sync = True
                live = cmp.live.get(m.key)
                d = cmp.diffs.get(m.key)
                if m.key in cmp.errors:
                    print(f"===== {m.key}: {cmp.errors[m.key]}")
                    continue
                print(f"===== {m.key} ({'modified' if live else 'missing'})")
                a = d.normalized_live if d else None
                b = d.normalized_desired if d else m.body
                print(diffing.unified_diff(a, b, from_name="live", to_name="desired"))
            for key, body in cmp.owned_extra.items():
                out_of_sync = True
                print(f"===== {key} (requires pruning)")
                shown = diffing.normalize(body, rules=[], key=key)  # no server noise
                print(diffing.unified_diff(shown, None, from_name="live", to_name="desired"))
            return 1 if out_of_sync else 0

    return _run(main)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon, or reconcile everything once with --once."""
    from daemon.engine import run_once
    from daemon.status.logs import setup_logging

    setup_logging(level=args.log_level, fmt=args.log_format)
    if args.once:
        cfg = _load(args.config)
        results = _run(run_once, cfg)
        rows = []
        ok = True
        for name, st in results:
            sync = st.get("sync", {}).get("status", "Unknown")
            health = st.get("health", {}).get("status", "Unknown")
            op = st.get("operationState", {}) or {}
            msg = op.get("message", "") or "; ".join(
                c.get("message", "") for c in st.get("conditions", [])
            )
            ok = ok and sync == "Synced" and health == "Healthy"
            rows.append(
                [name, sync, health, str(st.get("sync", {}).get("revision", ""))[:12], msg[:140]]
            )
        print(_table(rows, ["APP", "SYNC", "HEALTH", "REVISION", "MESSAGE"]))
        return 0 if ok else 1
    from daemon.runner import run_daemon

    return _run(run_daemon, args.config)


def cmd_app(args: argparse.Namespace) -> int:
    """`gitopsd app ...` (the API client)."""
    from daemon.client import cmd_app as run

    return run(args)


def cmd_rollout(args: argparse.Namespace) -> int:
    """`gitopsd rollout ...` (the API client)."""
    from daemon.client import cmd_rollout as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gitopsd",
        description="An Argo CD-compatible GitOps daemon: syncs Applications from git into "
        "Kubernetes in waves, with health gates, pruning and self-heal.",
    )
    p.add_argument("--version", action="version", version=f"gitopsd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", required=True, help="settings file (gitopsd.yaml)")

    sp = sub.add_parser("check", help="validate the config and render every app")
    with_config(sp)
    sp.set_defaults(func=cmd_check)
    sp = sub.add_parser("render", help="print an app's manifests in sync order")
    with_config(sp)
    sp.add_argument("app")
    sp.set_defaults(func=cmd_render)
    sp = sub.add_parser("diff", help="show live vs desired; exit 1 when out of sync")
    with_config(sp)
    sp.add_argument("app")
    sp.set_defaults(func=cmd_diff)
    sp = sub.add_parser("run", help="run the daemon (or every app once with --once)")
    with_config(sp)
    sp.add_argument(
        "--once",
        action="store_true",
        help="reconcile every app once, wait for health, print a table; exit 0 "
        "only if every app is Synced and Healthy",
    )
    sp.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sp.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])
    sp.set_defaults(func=cmd_run)

    app = sub.add_parser("app", help="talk to a running daemon (list, get, sync, diff, ...)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        default=argparse.SUPPRESS,
        help="daemon URL (env GITOPSD_SERVER, default http://127.0.0.1:8080)",
    )
    common.add_argument(
        "--token-file", default=argparse.SUPPRESS, help="bearer token file (or env GITOPSD_TOKEN)"
    )
    common.add_argument(
        "-o", "--output", default=argparse.SUPPRESS, choices=["table", "json", "yaml"]
    )
    app.add_argument("--server", help=argparse.SUPPRESS)
    app.add_argument("--token-file", help=argparse.SUPPRESS)
    app.add_argument("-o", "--output", default="table", choices=["table", "json", "yaml"])
    verbs = app.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="list applications", parents=[common])
    for verb, text in (
        ("get", "show one application"),
        ("diff", "live vs desired"),
        ("history", "deployment history"),
        ("refresh", "refresh now"),
    ):
        v = verbs.add_parser(verb, help=text, parents=[common])
        v.add_argument("name")
    v = verbs.add_parser("sync", help="sync an application", parents=[common])
    v.add_argument("name")
    v.add_argument("--revision", help="sync to this revision instead of targetRevision")
    v.add_argument("--prune", action="store_true", help="allow pruning")
    v.add_argument("--dry-run", action="store_true")
    v.add_argument("--wait", action="store_true", help="follow the sync wave by wave")
    v = verbs.add_parser("rollback", help="sync to a revision from history", parents=[common])
    v.add_argument("name")
    v.add_argument("id", type=int)
    v.add_argument("--prune", action="store_true")
    v.add_argument("--wait", action="store_true")
    app.set_defaults(func=cmd_app)

    ro = sub.add_parser(
        "rollout", help="Argo Rollouts operations through a running daemon (get, promote, ...)"
    )
    ro.add_argument("--server", help=argparse.SUPPRESS)
    ro.add_argument("--token-file", help=argparse.SUPPRESS)
    ro.add_argument("-o", "--output", default="table", choices=["table", "json", "yaml"])
    ro_verbs = ro.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, text in (
        ("get", "show a Rollout: step, weight, pods, pause"),
        ("promote", "go past the current pause (or step); --full skips every step"),
        ("abort", "back to 100%% stable (the Rollout becomes Degraded)"),
        ("retry", "run an aborted update again from step 0"),
        ("undo", "put a previous revision's pod template back"),
        ("pause", "pause the Rollout (spec.paused)"),
        ("resume", "resume a paused Rollout"),
        ("restart", "restart the Rollout's pods, a few at a time (spec.restartAt)"),
    ):
        v = ro_verbs.add_parser(verb, help=text, parents=[common])
        v.add_argument("name", help="the Rollout's name")
        v.add_argument("-n", "--namespace", default="", help="when several apps have one")
        v.add_argument("--app", default="", help="the application the Rollout belongs to")
        if verb == "promote":
            v.add_argument("--full", action="store_true", help="skip all remaining steps")
        if verb == "undo":
            v.add_argument("--to-revision", type=int, default=None)
    ro.set_defaults(func=cmd_rollout)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"error: no application named {e.args[0]!r}", file=sys.stderr)
        return 2
    except GitopsdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
