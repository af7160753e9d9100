"""Command line: argument parsing only; everything else is called from the layers below."""

from __future__ import annotations

import argparse
import os
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

        options = {"use_uvloop": True}
    except ImportError:
        options = {}
    try:
        return anyio.run(fn, *args, backend_options=options)
    except BaseExceptionGroup as group:
        # A task group wraps the error a command stopped on; report that error itself.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, GitopsdError):
            raise leaf from group
        raise


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
    v = verbs.add_parser("list", help="list applications", parents=[common])
    v.add_argument("-l", "--selector", default="", help="label selector (app=web,tier!=db)")
    v.add_argument("-p", "--project", action="append", default=[], help="only this project")
    for verb, text in (
        ("history", "deployment history"),
        ("refresh", "refresh now"),
        ("resources", "the app's resources and their status"),
        ("terminate-op", "stop the running sync at its next step (it ends Failed)"),
    ):
        v = verbs.add_parser(verb, help=text, parents=[common])
        v.add_argument("name")
    v = verbs.add_parser("get", help="show one application", parents=[common])
    v.add_argument("name")
    v.add_argument("--refresh", action="store_true", help="compare with git and live first")
    v = verbs.add_parser(
        "diff", help="live vs desired (exit 1 when they differ, 2 on error)", parents=[common]
    )
    v.add_argument("name")
    v.add_argument("--local", metavar="DIR", help="render DIR instead of git, compare to live")
    v = verbs.add_parser("manifests", help="the app's manifests", parents=[common])
    v.add_argument("name")
    v.add_argument("--source", choices=["git", "live"], default="git")
    v = verbs.add_parser("wait", help="wait until the app is healthy/synced", parents=[common])
    v.add_argument("name")
    v.add_argument("--health", action="store_true", help="wait for health Healthy")
    v.add_argument("--sync", action="store_true", help="wait for sync Synced")
    v.add_argument("--operation", action="store_true", help="wait for no running operation")
    v.add_argument("--degraded", action="store_true", help="wait for health Degraded")
    v.add_argument("--suspended", action="store_true", help="wait for health Suspended")
    v.add_argument("--timeout", type=int, default=0, help="seconds (0: no limit)")
    v = verbs.add_parser("delete", help="delete an application", parents=[common])
    v.add_argument("name")
    v.add_argument(
        "--cascade",
        default="true",
        choices=["true", "false"],
        help="also delete its resources (default true)",
    )
    v.add_argument("-y", "--yes", action="store_true", help="do not ask (always: no prompt)")
    for verb, text in (("set", "set Helm parameter overrides"), ("unset", "drop overrides")):
        v = verbs.add_parser(verb, help=text, parents=[common])
        v.add_argument("name")
        v.add_argument(
            "-p",
            "--parameter",
            action="append",
            default=[],
            metavar="KEY=VALUE" if verb == "set" else "KEY",
            required=True,
        )
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

    sp = sub.add_parser("backup", help="write one archive to restore this gitopsd from")
    sp.add_argument("-c", "--config", help="settings file (gitopsd.yaml)")
    sp.add_argument("-o", "--output", help="the archive to write (.tar.gz)")
    sp.add_argument(
        "--include-secrets",
        action="store_true",
        help="embed the credential files the config references, encrypted with --key-file",
    )
    sp.add_argument("--key-file", default="", help="backup key: signs the archive (see --new-key)")
    sp.add_argument("--new-key", metavar="FILE", default="", help="create a backup key and exit")
    sp.set_defaults(func=cmd_backup)
    sp = sub.add_parser("restore", help="check a backup and restore it into a new directory")
    sp.add_argument("archive")
    sp.add_argument("--to", required=True, help="new directory for the config tree")
    sp.add_argument("--dry-run", action="store_true", help="check and print, write nothing")
    sp.add_argument(
        "--state-dir", default="", help="restore app state here (default: the config's stateDir)"
    )
    sp.add_argument(
        "--key-file",
        default="",
        help="backup key: refuse an archive not signed with it; restore its credential files",
    )
    sp.add_argument("--no-cluster", action="store_true", help="do not recreate missing inventories")
    sp.set_defaults(func=cmd_restore)

    imp = sub.add_parser("import", help="convert another tool's configuration (argocd)")
    imp_from = imp.add_subparsers(dest="source", metavar="SOURCE", required=True)
    sp = imp_from.add_parser(
        "argocd",
        help="Argo CD backup files (kubectl get ... -o yaml, cluster and repository Secrets, "
        "argocd-cm) or argocd admin export output",
    )
    sp.add_argument("files", nargs="+", help="YAML files (Lists or documents)")
    sp.add_argument("--to", required=True, help="new directory for the config tree")
    sp.add_argument(
        "--in-cluster-kubeconfig",
        default="",
        help="kubeconfig for Argo CD's in-cluster destination (default: the pod's service "
        "account, as Argo CD does)",
    )
    sp.add_argument(
        "--allow-exec-credentials",
        action="store_true",
        help="carry cluster exec providers over (commands gitopsd runs as its own user to get "
        "a token; default: refused, and listed in IMPORT-REPORT.txt either way)",
    )
    sp.set_defaults(func=cmd_import)
    return p


def cmd_backup(args: argparse.Namespace) -> int:
    """Write one archive with everything needed to restore this gitopsd."""
    from pathlib import Path

    from daemon.dr import archive, backup

    if args.new_key:
        path = Path(args.new_key)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(archive.new_key() + b"\n")
        print(f"new backup key in {path} (keep it apart from the backups)")
        return 0
    if not args.config or not args.output:
        raise ConfigError("backup needs -c/--config and -o/--output (or --new-key FILE)")
    if args.include_secrets and not args.key_file:
        raise ConfigError("--include-secrets needs --key-file (secrets are never stored plain)")
    cfg = _load(args.config)
    key = archive.read_key(args.key_file) if args.key_file else None
    contents = _run(lambda: backup.take(cfg, include_secrets=args.include_secrets, key=key))
    data = archive.pack(contents, key=key)
    backup.write_archive(data, Path(args.output))
    kinds: dict[str, int] = {}
    for member in contents.members:
        kinds[member.split("/", 1)[0]] = kinds.get(member.split("/", 1)[0], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    signed = "signed" if key else "unsigned (no --key-file)"
    print(f"backup {args.output}: {len(data)} bytes, {signed}; {summary}")
    for note in contents.notes:
        print(f"  note: {note}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Check an archive, then write its config tree, state, inventories (and secrets)."""
    from pathlib import Path

    from daemon.dr import archive, restore

    key = archive.read_key(args.key_file) if args.key_file else None
    contents, _ = restore.read(args.archive, key=key)
    print(f"backup {args.archive}: taken {contents.created_at} by {contents.created_by}")
    print(f"  signature: {contents.signature}")
    result = _run(
        lambda: restore.restore(
            contents,
            Path(args.to).resolve(),
            dry_run=args.dry_run,
            state_dir=args.state_dir,
            key=key,
            cluster=not args.no_cluster,
        )
    )
    for line in result.lines:
        print(f"  {line}")
    if not args.dry_run:
        print(f"next: gitopsd run -c {Path(args.to).resolve() / contents.config_file}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Convert Argo CD backup files (or `argocd admin export` output) into a config tree."""
    from pathlib import Path

    from daemon import settings
    from daemon.dr import importdocs, importer
    from daemon.dr.files import write_tree

    documents: list[tuple[str, dict[str, Any]]] = []
    for name in args.files:
        try:
            text = Path(name).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}", file=name) from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"not UTF-8 text: {e}", file=name) from e
        documents.extend(importdocs.read_documents(name, text))
    result = importer.convert(
        documents,
        in_cluster_kubeconfig=args.in_cluster_kubeconfig,
        allow_exec=args.allow_exec_credentials,
    )
    dest = Path(args.to).resolve()
    summary = ", ".join(f"{n} {k}" for k, n in result.counts.items())
    lines: list[str] = []

    def check(tree: Path) -> None:
        # The imported tree must load as gitopsd's own config (paths as they will be); the
        # report goes in with it, so a failed import leaves nothing behind.
        try:
            loaded = settings.load(tree / "gitopsd.yaml")
        except ConfigError as e:
            raise ConfigError(
                f"the imported config does not load: {e}".replace(str(tree), str(dest))
            ) from e
        warnings = [w.replace(str(tree), str(dest)) for w in loaded.warnings]
        report = [*result.report, *(f"config warning: {w}" for w in warnings)]
        lines.extend([f"imported into {dest}: {summary}", *(f"  - {line}" for line in report)])
        (tree / "IMPORT-REPORT.txt").write_text("\n".join(lines) + "\n")

    write_tree(result.files, dest, check=check)
    print("\n".join(lines))
    print(f"next: gitopsd check -c {dest / 'gitopsd.yaml'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # `gitopsd app list -o json | head`: the reader left; no traceback, and nothing more
        # written to the closed pipe at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"error: no application named {e.args[0]!r}", file=sys.stderr)
        return 2
    except GitopsdError as e:
        print(f"error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 1))  # the app verbs' errors carry argocd's codes
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
