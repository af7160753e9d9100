#!/usr/bin/env bash
# A real Prometheus server for the analysis tests, from Debian's `prometheus` package
# (install-deb.sh: downloaded and unpacked, cached by version, nothing started).
# The absolute path of the prometheus binary is the last line on stdout:
#   PROMETHEUS=$(tests/testenv/install-prometheus.sh | tail -n1)
exec bash "$(dirname "$0")/install-deb.sh" prometheus usr/bin/prometheus
