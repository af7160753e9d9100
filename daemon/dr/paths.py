"""Rewriting the credential file references of a settings file in place, so a restored tree
points at its own copies: the document is composed (not loaded) to find each reference's exact
position, and only those scalars are replaced; comments and layout stay as the operator wrote
them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import PurePosixPath

import yaml

from daemon.errors import ConfigError

# Where a settings document holds credential file paths ("*": every item of a list or map);
# the same fields `backup.credential_files` reads from the loaded config.
REFERENCES: tuple[tuple[str, ...], ...] = (
    *(("clusters", "*", k) for k in ("kubeconfig", "bearerTokenFile", "caFile")),
    *(
        ("repositories", "*", k)
        for k in (
            "passwordFile",
            "sshPrivateKeyFile",
            "knownHostsFile",
            "caFile",
            "tlsClientCertFile",
            "tlsClientKeyFile",
        )
    ),
    ("apiTokens", "*", "tokenFile"),
    ("webhooks", "*", "secretFile"),
    ("settings", "metricsTokenFile"),
)


def _scalars(node: yaml.Node, pattern: tuple[str, ...]) -> Iterator[yaml.ScalarNode]:
    if not pattern:
        if isinstance(node, yaml.ScalarNode):
            yield node
        return
    head, rest = pattern[0], pattern[1:]
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [
            v
            for k, v in node.value
            if head == "*" or (isinstance(k, yaml.ScalarNode) and k.value == head)
        ]
    elif isinstance(node, yaml.SequenceNode) and head == "*":
        children = list(node.value)
    for child in children:
        yield from _scalars(child, rest)


def rewrite_references(
    text: str, base: str, moved: dict[str, str], *, where: str
) -> tuple[str, int]:
    """`text` (a settings document) with each credential reference that resolves, against
    the directory `base` it was written in, to a key of `moved` replaced by that key's value;
    and how many were replaced."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not YAML: {e}") from e
    edits: list[tuple[int, int, str]] = []
    for pattern in REFERENCES:
        for scalar in _scalars(root, pattern) if root is not None else ():
            value = str(scalar.value)
            if PurePosixPath(value).is_absolute():
                resolved = value
            elif base:
                resolved = os.path.normpath(f"{base}/{value}")
            else:
                continue
            new = moved.get(resolved)
            if new is None or new == value:
                continue
            if scalar.style not in (None, "'", '"'):
                raise ConfigError(f"{where}: {'.'.join(pattern)}: cannot rewrite a block scalar")
            # A JSON string is a valid YAML double-quoted scalar.
            edits.append((scalar.start_mark.index, scalar.end_mark.index, json.dumps(new)))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text, len(edits)
