"""Health assessment: pure per-kind checks (checks.py) and the app-level aggregation."""
