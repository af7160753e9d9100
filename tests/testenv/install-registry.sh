#!/usr/bin/env bash
# A real OCI registry (CNCF distribution) for the OCI chart tests, from Debian's
# `docker-registry` package (install-deb.sh: downloaded and unpacked, cached by version,
# nothing started). The absolute path of the binary is the last line on stdout.
exec bash "$(dirname "$0")/install-deb.sh" docker-registry usr/bin/docker-registry
