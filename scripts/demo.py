"""`make demo`: gitopsd's main job end to end on the local test cluster.

Starts the control plane (unless one is up), makes a git repository from config/examples/,
runs the daemon against it, shows the apps syncing wave by wave with health, commits a change
(scale the web tier, remove a Service) and shows the daemon pick it up and prune, then cleans up.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.testenv.prometheus import Exporter, running_prometheus  # noqa: E402
from tests.testenv.session import ensure_cluster, stop_cluster, write_settings  # noqa: E402

DEMO = ROOT / ".demo"
VENV_BIN = Path(sys.executable).parent
KUBECONFIG = ROOT / ".cluster" / "kubeconfig"
PORT = int(os.environ.get("GITOPSD_DEMO_PORT", "18080"))
API = f"http://127.0.0.1:{PORT}"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def sh(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(args)}\n{r.stderr}")
    return r.stdout


def kubectl(*args: str, check: bool = True) -> str:
    return sh("kubectl", f"--kubeconfig={KUBECONFIG}", *args, check=check)


def git(*args: str) -> str:
    env = ("-c", "user.name=gitopsd demo", "-c", "user.email=demo@gitopsd.invalid")
    return sh("git", *env, *args, cwd=DEMO / "work")


def api(path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(
        API + path, method=method, data=b"{}" if method == "POST" else None
    )
    token = DEMO / "state" / "local-api-token"  # API writes need the daemon's local token
    if method != "GET" and token.exists():
        req.add_header("Authorization", f"Bearer {token.read_text().strip()}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def app_table() -> str:
    rows = []
    for item in api("/api/v1/applications")["items"]:
        st = item["status"]
        op = (st.get("operationState") or {}).get("message", "")
        rows.append(
            f"  {item['metadata']['name']:<10} {st.get('sync', {}).get('status', '?'):<10}"
            f" {st.get('health', {}).get('status', '?'):<12} {op[:70]}"
        )
    return "  APP        SYNC       HEALTH       LAST OPERATION\n" + "\n".join(rows)


def wait_api(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if api("/readyz").get("ready"):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the daemon did not become ready; see .demo/gitopsd.log")


def watch_waves(ns: str, until: float) -> None:
    """Print objects as they appear in `ns`, with their sync wave and health."""
    seen: set[str] = set()
    while time.monotonic() < until:
        out = kubectl("get", "secret,pvc,deploy,svc,cm", "-n", ns, "-o", "json", check=False)
        items = json.loads(out)["items"] if out.strip() else []
        for it in sorted(items, key=lambda i: i["metadata"]["creationTimestamp"]):
            ann = it["metadata"].get("annotations") or {}
            if "argocd.argoproj.io/tracking-id" not in ann:
                continue
            ref = f"{it['kind']}/{it['metadata']['name']}"
            if ref in seen:
                continue
            seen.add(ref)
            wave = ann.get("argocd.argoproj.io/sync-wave", "0")
            print(f"  {time.strftime('%H:%M:%S')}  wave {wave:>3}  created {ref}", flush=True)
        try:
            item = api("/api/v1/applications/db-app")
            st = item["status"]
            if (
                st.get("sync", {}).get("status") == "Synced"
                and st.get("health", {}).get("status") == "Healthy"
                and len(seen) >= 6
            ):
                return
        except OSError:
            pass
        time.sleep(0.3)


def rollout_line() -> tuple[str, str]:
    """One line about the canary Rollout: phase, step, pods per ReplicaSet."""
    raw = kubectl("get", "rollout", "webapp", "-n", "demo-canary", "-o", "json", check=False)
    if not raw.strip():
        return "", "no Rollout yet"
    ro = json.loads(raw)
    st = ro.get("status") or {}
    sets = json.loads(
        kubectl("get", "rs", "-n", "demo-canary", "-l", "rollouts-pod-template-hash", "-o", "json")
    )["items"]
    parts = []
    for rs in sets:
        h = rs["metadata"]["labels"]["rollouts-pod-template-hash"]
        mark = " (stable)" if h == st.get("stableRS") else ""
        available = (rs.get("status") or {}).get("availableReplicas", 0)
        parts.append(f"{h[:5]}{mark}={available}/{rs['spec']['replicas']}")
    pods = ", ".join(parts)
    steps = len(ro["spec"]["strategy"]["canary"]["steps"])
    weight = ((st.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight", 0)
    line = (
        f"{st.get('phase', '?'):<11} step {st.get('currentStepIndex', '?')}/{steps} "
        f"weight {weight:>3}%  pods {pods}"
    )
    return str(st.get("phase", "")), line


def analysis_line() -> str:
    """The newest AnalysisRun: phase and measured values."""
    raw = kubectl("get", "analysisrun", "-n", "demo-canary", "-o", "json", check=False)
    items = json.loads(raw)["items"] if raw.strip() else []
    if not items:
        return ""
    run = max(items, key=lambda r: r["metadata"]["creationTimestamp"])
    st = run.get("status") or {}
    values = [
        f"{m.get('value', '?')}:{m.get('phase', '?')}"
        for r in st.get("metricResults") or []
        for m in r.get("measurements") or []
    ]
    return f"analysis {run['metadata']['name']}: {st.get('phase', 'Pending')} {' '.join(values)}"


def follow(start: float, until: str, deadline: float, promote: bool) -> None:
    """Print the Rollout (and its analysis) whenever they change, until phase `until`."""
    last, promoted = "", False
    while time.monotonic() < deadline:
        phase, line = rollout_line()
        line = f"{line}\n           {analysis_line()}".rstrip()
        if line != last:
            print(f"  +{time.monotonic() - start:5.1f}s  {line}")
            last = line
        if promote and phase == "Paused" and not promoted:
            print(
                "           the first pause waits for a person: "
                "gitopsd rollout promote webapp --app canary"
            )
            out = sh(
                str(VENV_BIN / "gitopsd"),
                "rollout",
                "promote",
                "webapp",
                "--app",
                "canary",
                "--server",
                API,
            )
            print(f"           {out.strip()}")
            promoted = True
        if phase == until and (promoted or not promote):
            return
        time.sleep(0.3)


def app_health(app: str, expected: str, seconds: float = 15) -> str:
    """The app's health once it is `expected` (the daemon refreshes it from the Rollout's
    status change, a moment after it), or whatever it is when time runs out."""
    deadline = time.monotonic() + seconds
    health = ""
    while time.monotonic() < deadline:
        health = api(f"/api/v1/applications/{app}")["status"]["health"]["status"]
        if health == expected:
            break
        time.sleep(0.3)
    return health


def canary_step_through(exporter: Exporter) -> None:
    """Commit a new image for the canary Rollout and follow it step by step, with its
    background analysis querying Prometheus; then a bad version that the analysis aborts."""
    say(
        "Progressive delivery: the seed's canary Rollout and success-rate analysis, run by "
        "gitopsd itself (no Argo Rollouts)"
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and rollout_line()[0] != "Healthy":
        time.sleep(1)
    print(f"  first deploy goes straight to 100%: {rollout_line()[1]}")
    manifest = DEMO / "work" / "canary" / "rollout.yaml"
    manifest.write_text(manifest.read_text().replace("image: webapp:v1", "image: webapp:v2"))
    git("commit", "-q", "-am", "canary: webapp v2")
    git("push", "-q", str(DEMO / "repo.git"), "HEAD:main")
    api("/api/v1/applications/canary/refresh", method="POST")
    print("  pushed webapp:v2; following the Rollout (kubectl get rollout works too):")
    follow(time.monotonic(), "Healthy", time.monotonic() + 180, promote=True)
    health = app_health("canary", "Healthy")
    print(f"  the canary is the new stable; app canary is {health}")

    say("A bad version: webapp's success rate drops to 50% and v3 is pushed")
    exporter.success = 0.5
    time.sleep(5)  # the query's 4 s rate window forgets the good traffic
    manifest.write_text(manifest.read_text().replace("image: webapp:v2", "image: webapp:v3"))
    git("commit", "-q", "-am", "canary: webapp v3")
    git("push", "-q", str(DEMO / "repo.git"), "HEAD:main")
    api("/api/v1/applications/canary/refresh", method="POST")
    follow(time.monotonic(), "Degraded", time.monotonic() + 120, promote=False)
    time.sleep(3)
    print(f"  {rollout_line()[1]}")
    out = sh(
        str(VENV_BIN / "gitopsd"),
        "rollout",
        "get",
        "webapp",
        "--app",
        "canary",
        "--server",
        API,
        check=False,
    )
    print("\n".join("    " + line for line in out.splitlines()))
    health = app_health("canary", "Degraded")
    print(f"  the analysis aborted v3: all traffic is back on v2; app canary is {health}")
    exporter.success = 1.0


def ab_test() -> None:
    """The seed's A/B test as an nginx-routed canary: the canary Ingress gitopsd makes from
    webapp-ingress, with the seed's header route and the step's weight."""
    say(
        "A/B by header through nginx: the seed's webapp-ingress, and a canary Ingress with "
        "canary-by-header X-Canary-Test made by gitopsd"
    )
    ns, canary_ingress = "demo-ab", "webapp-webapp-ingress-canary"

    def phase() -> str:
        raw = kubectl("get", "rollout", "webapp", "-n", ns, "-o", "json", check=False)
        return str((json.loads(raw).get("status") or {}).get("phase", "")) if raw.strip() else ""

    def wait(want: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and phase() != want:
            time.sleep(0.5)

    def show() -> None:
        raw = kubectl("get", "ingress", canary_ingress, "-n", ns, "-o", "json", check=False)
        if not raw.strip():
            print("  no canary Ingress yet")
            return
        ing = json.loads(raw)
        for key, value in sorted(ing["metadata"]["annotations"].items()):
            print(f"    {key}: {value}")
        rule = ing["spec"]["rules"][0]
        backend = rule["http"]["paths"][0]["backend"]["service"]["name"]
        print(f"    {rule['host']}/ -> Service {backend}")
        sets = json.loads(
            kubectl("get", "rs", "-n", ns, "-l", "rollouts-pod-template-hash", "-o", "json")
        )["items"]
        pods = ", ".join(
            f"{rs['metadata']['labels']['rollouts-pod-template-hash'][:5]}={rs['spec']['replicas']}"
            for rs in sets
        )
        print(f"    pods per ReplicaSet: {pods}")

    wait("Healthy", 90)
    manifest = DEMO / "work" / "ab-test" / "rollout.yaml"
    manifest.write_text(manifest.read_text().replace("image: webapp:v1", "image: webapp:v2"))
    git("commit", "-q", "-am", "ab-test: webapp v2 for the testers")
    git("push", "-q", str(DEMO / "repo.git"), "HEAD:main")
    api("/api/v1/applications/ab-test/refresh", method="POST")
    wait("Paused", 90)
    print(f"  pushed webapp:v2; the Rollout is {phase()} at setWeight 10. {canary_ingress}:")
    show()
    print("  (the stable set keeps its 3 pods: nginx moves requests, not pods)")
    out = sh(
        str(VENV_BIN / "gitopsd"),
        "rollout",
        "promote",
        "webapp",
        "--app",
        "ab-test",
        "--server",
        API,
    )
    print(f"  $ gitopsd rollout promote webapp --app ab-test\n    {out.strip()}")
    wait("Healthy", 90)
    time.sleep(1)
    print(f"  v2 is stable; the Rollout is {phase()}; the canary weight is back to 0:")
    show()


def start_daemon(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (DEMO / "gitopsd.log").open("ab")
    return subprocess.Popen(
        [str(VENV_BIN / "gitopsd"), "run", "-c", str(config)], stdout=log, stderr=log, env=env
    )


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(30)
    except subprocess.TimeoutExpired:
        daemon.kill()


def scaled_back_by_hand(replicas: int, seconds: float = 30) -> bool:
    """Scale demo-db's webapp by hand to `replicas`; True once the daemon has it back at 1."""
    kubectl("scale", "deploy/webapp", "-n", "demo-db", f"--replicas={replicas}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reps = kubectl(
            "get", "deploy", "webapp", "-n", "demo-db", "-o", "jsonpath={.spec.replicas}"
        )
        if reps.strip() == "1":
            return True
        time.sleep(0.3)
    return False


def offline_self_heal() -> None:
    """Git goes away: self-heal goes on from the last good render; git comes back."""
    say("Offline edge: the git repository disappears; self-heal goes on from the last good render")
    repo, away = DEMO / "repo.git", DEMO / "repo.git.away"
    repo.rename(away)
    try:
        api("/api/v1/applications/db-app/refresh?refresh=hard", method="POST")
        deadline, cond = time.monotonic() + 60, None
        while time.monotonic() < deadline and cond is None:
            st = api("/api/v1/applications/db-app")["status"]
            cond = next(
                (c for c in st.get("conditions") or [] if c.get("type") == "SourceUnreachable"),
                None,
            )
            time.sleep(0.5)
        print(f"  condition: {(cond or {}).get('message', 'none')[:150]}")
        if scaled_back_by_hand(3):
            print("  scaled by hand to 3 while offline: back to 1 from the last good render")
    finally:
        away.rename(repo)
    print("  git is back: the next poll clears the condition")


def make_key() -> Path:
    """The backup key: scheduled and API backups are signed with it, restores check it."""
    key = DEMO / "backup.key"
    sh(str(VENV_BIN / "gitopsd"), "backup", "--new-key", str(key))
    return key


def disaster_drill(daemon: subprocess.Popen[bytes], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Back up, lose the state directory, restore it: nothing is redone."""
    say("Disaster drill: back up, lose .demo/state, restore, and converge without redoing anything")
    written = api("/api/v1/backup", method="POST")
    print(f"  POST /api/v1/backup -> {written['path']} ({written['bytes']} bytes)")
    history = len(api("/api/v1/applications/db-app")["status"].get("history") or [])
    stop_daemon(daemon)
    shutil.rmtree(DEMO / "state")
    print("  daemon stopped; .demo/state deleted")
    gitopsd = str(VENV_BIN / "gitopsd")
    restored = DEMO / "restored"
    for extra in (["--dry-run"], []):
        name = Path(written["path"]).name
        flags = " ".join(["--key-file", ".demo/backup.key", *extra])
        print(f"\n  $ gitopsd restore {name} --to .demo/restored {flags}")
        key = ("--key-file", str(DEMO / "backup.key"))  # the archive's signature is checked
        out = sh(gitopsd, "restore", written["path"], "--to", str(restored), *key, *extra)
        for line in out.splitlines()[1:8]:
            print(f"  {line}")
    daemon = start_daemon(restored / "gitopsd.yaml", env)
    wait_api()
    time.sleep(3)
    st = api("/api/v1/applications/db-app")["status"]
    print(
        f"  db-app after the restore: {st['sync']['status']}/{st['health']['status']}, "
        f"{len(st.get('history') or [])} history entries (backed up: {history})"
    )
    return daemon


class Inbox:
    """A webhook receiver on loopback standing in for a chat or incident tool."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                outer.messages.append(self.rfile.read(size).decode(errors="replace"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def notifications_config(inbox: Inbox) -> str:
    """argocd-notifications-cm: every app's deploys and failed syncs go to the inbox."""
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-notifications-cm"},
        "data": {
            "service.webhook.inbox": f"url: {inbox.url}/notify\n",
            "template.to-inbox": (
                "webhook:\n  inbox:\n    method: POST\n"
                "    body: '{{.app.metadata.name}} {{.trigger}}: revision "
                "{{.app.status.sync.revision | trunc 12}}, {{.app.status.health.status}}'\n"
            ),
            "trigger.on-deployed-inbox": (
                "- when: app.status.operationState != nil and "
                "app.status.operationState.phase in ['Succeeded'] and "
                "app.status.health.status == 'Healthy'\n"
                "  oncePer: app.status.sync.revision\n  send: [to-inbox]\n"
            ),
            "subscriptions": "- recipients: [inbox]\n  triggers: [on-deployed-inbox]\n",
        },
    }
    return json.dumps(doc)


def operator_view(inbox: Inbox) -> None:
    """What an operator sees: the CLI, the status page, the notifications sent."""
    say("Operator view: argocd-style CLI, the status page, notifications")
    gitopsd = str(VENV_BIN / "gitopsd")
    for args in (
        ("app", "wait", "db-app", "--health", "--sync", "--timeout", "60"),
        ("app", "resources", "db-app"),
        ("app", "list", "-p", "default"),
    ):
        print(f"  $ gitopsd {' '.join(args)}")
        out = sh(gitopsd, *args, "--server", API, check=False)
        print("\n".join("    " + line for line in out.splitlines()[:12]))
    page = urllib.request.urlopen(API + "/", timeout=5).read().decode()
    rows = page.count("<tr data-app=")
    print(f"  status page {API}/ : {rows} applications listed (open it in a browser)")
    print(f"  notifications delivered to the demo inbox ({len(inbox.messages)}):")
    for message in inbox.messages:
        print(f"    {message}")


def main() -> int:
    if not (ROOT / ".cluster" / "ready").exists():
        say(
            "Starting the local Kubernetes control plane (etcd, kube-apiserver, "
            "kube-controller-manager, node simulator)"
        )
    _, started_cluster = ensure_cluster()
    # `gitopsd app` / `gitopsd rollout` writes need the daemon's local token: it lives in the
    # demo's stateDir rather than the default /var/lib/gitopsd.
    os.environ["GITOPSD_LOCAL_TOKEN_FILE"] = str(DEMO / "state" / "local-api-token")
    daemon: subprocess.Popen[bytes] | None = None
    exporter = Exporter("webapp")
    stack = contextlib.ExitStack()
    try:
        shutil.rmtree(DEMO, ignore_errors=True)
        (DEMO / "work").mkdir(parents=True)
        (DEMO / "apps").mkdir()
        say("Starting Prometheus (Debian's package) scraping a demo exporter of webapp's requests")
        prometheus = stack.enter_context(running_prometheus(DEMO / "prometheus", exporter))
        print(f'  {prometheus}  (http_requests_total{{service="webapp"}}, 100% success)')
        say("Creating a git repository from config/examples/apps")
        shutil.copytree(ROOT / "config/examples/apps", DEMO / "work", dirs_exist_ok=True)
        analysis = DEMO / "work" / "canary" / "analysis.yaml"
        analysis.write_text(
            analysis.read_text().replace(
                "http://prometheus-server.monitoring.svc.cluster.local", prometheus
            )
        )
        sh("git", "init", "-q", "--bare", "-b", "main", str(DEMO / "repo.git"))
        git("init", "-q", "-b", "main")
        git("add", "-A")
        git("commit", "-q", "-m", "initial: database-app sync waves + web chart")
        git("push", "-q", str(DEMO / "repo.git"), "HEAD:main")
        repo_url = f"file://{DEMO / 'repo.git'}"
        for f in (ROOT / "config/examples/applications").glob("*.yaml"):
            (DEMO / "apps" / f.name).write_text(f.read_text().replace("REPO_URL", repo_url))
        inbox = Inbox()
        stack.callback(inbox.close)
        (DEMO / "apps" / "notifications.yaml").write_text(notifications_config(inbox))
        helm = sh("bash", str(ROOT / "tests/testenv/install-helm.sh")).strip().splitlines()[-1]
        write_settings(
            DEMO / "gitopsd.yaml",
            kubeconfig=KUBECONFIG,
            work=DEMO,
            listen=f"127.0.0.1:{PORT}",
            reconcileInterval="60s",
            syncWaveDelay="1s",
            backup={"dir": str(DEMO / "backups"), "keep": 3, "keyFile": str(make_key())},
            # Analyses reach only listed addresses; loopback only when named, as here.
            rollouts={"analysis": {"allowedAddresses": [prometheus]}},
        )
        say(f"Running: gitopsd run -c .demo/gitopsd.yaml   (logs in .demo/gitopsd.log, API {API})")
        log = (DEMO / "gitopsd.log").open("wb")
        env = {**os.environ, "GITOPSD_HELM": helm}
        daemon = subprocess.Popen(
            [str(VENV_BIN / "gitopsd"), "run", "-c", str(DEMO / "gitopsd.yaml")],
            stdout=log,
            stderr=log,
            env=env,
        )
        wait_api()
        say("db-app syncs wave by wave; each wave waits until the previous one is Healthy")
        watch_waves("demo-db", time.monotonic() + 120)
        time.sleep(1)
        print(app_table())

        say("Commit: scale the web tier to 1 replica and remove webapp-service from git")
        manifest = DEMO / "work" / "db-app" / "db.yaml"
        text = manifest.read_text().replace("  replicas: 3\n", "  replicas: 1\n")
        text = text.split("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: webapp-service")[
            0
        ]
        manifest.write_text(text)
        git("commit", "-q", "-am", "scale web tier down, drop webapp-service")
        git("push", "-q", str(DEMO / "repo.git"), "HEAD:main")
        new_sha = git("rev-parse", "HEAD").strip()
        print(f"  pushed {new_sha[:12]}; asking the daemon to refresh (as a webhook would)")
        api("/api/v1/applications/db-app/refresh", method="POST")
        deadline = time.monotonic() + 60
        st: dict = {}
        while time.monotonic() < deadline:
            st = api("/api/v1/applications/db-app")["status"]
            op = st.get("operationState") or {}
            if op.get("syncResult", {}).get("revision") == new_sha and op.get("finishedAt"):
                break
            time.sleep(0.5)
        for r in st["operationState"]["syncResult"]["resources"]:
            print(f"  {r['status']:<8} {r['kind']}/{r['namespace']}/{r['name']}: {r['message']}")
        svc = kubectl(
            "get", "svc", "webapp-service", "-n", "demo-db", "--ignore-not-found", "-o", "name"
        )
        print(f"  webapp-service in the cluster: {'still there' if svc.strip() else 'gone'}")
        print(app_table())

        say("Self-heal: someone scales webapp by hand; the daemon puts it back")
        if scaled_back_by_hand(4):
            print("  webapp back to 1 replica (watch-based self-heal)")

        canary_step_through(exporter)
        ab_test()
        offline_self_heal()
        daemon = disaster_drill(daemon, env)
        operator_view(inbox)

        say("Where to look")
        print(f"  {API}/api/v1/applications      Argo CD-shaped application status")
        print(f"  {API}/metrics                   Prometheus metrics (argocd_app_info, ...)")
        metrics = urllib.request.urlopen(API + "/metrics", timeout=5).read().decode()
        for line in metrics.splitlines():
            if line.startswith(("argocd_app_info", "argocd_app_sync_total")):
                print("   ", line[:160])
        print(f"\n  $ gitopsd app list --server {API}")
        out = sh(str(VENV_BIN / "gitopsd"), "app", "list", "--server", API, check=False)
        print("\n".join("    " + line for line in out.splitlines()))
        print("  (also: gitopsd app get|diff|sync --wait|history|rollback; see README)")
        return 0
    finally:
        say("Cleaning up")
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                print(f"  daemon exited with {daemon.wait(30)}")
            except subprocess.TimeoutExpired:
                daemon.kill()
        stack.close()
        exporter.close()
        for ns in ("demo-db", "demo-web", "demo-canary"):
            kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
        if started_cluster:
            stop_cluster()


if __name__ == "__main__":
    raise SystemExit(main())
