"""Rewriting a settings file's credential references for a restored tree keeps everything
else byte for byte."""

from __future__ import annotations

from daemon.dr.paths import rewrite_references

SETTINGS = """# the edge site
clusters:
  - name: edge  # the field box
    kubeconfig: /etc/gitopsd/edge.kubeconfig
  - name: lab
    kubeconfig: 'credentials/lab.kubeconfig'
apiTokens:
  - {name: ops, tokenFile: "/etc/gitopsd/edge.kubeconfig.bak", role: admin}
settings:
  metricsTokenFile: /srv/cfg/metrics.token   # scraped by the host
"""


def test_only_the_moved_references_change_and_comments_stay() -> None:
    """Absolute references to moved files become the restored relative paths (in any scalar
    style); a relative one already right, and a path that merely shares a prefix, are left
    alone; comments and layout survive."""
    text, count = rewrite_references(
        SETTINGS,
        "/srv/cfg",
        {
            "/etc/gitopsd/edge.kubeconfig": "_external/credentials/0/edge.kubeconfig",
            "/srv/cfg/credentials/lab.kubeconfig": "credentials/lab.kubeconfig",
            "/srv/cfg/metrics.token": "metrics.token",
        },
        where="config/gitopsd.yaml",
    )
    assert count == 2
    assert text == SETTINGS.replace(
        "kubeconfig: /etc/gitopsd/edge.kubeconfig\n",
        'kubeconfig: "_external/credentials/0/edge.kubeconfig"\n',
    ).replace("metricsTokenFile: /srv/cfg/metrics.token", 'metricsTokenFile: "metrics.token"')
