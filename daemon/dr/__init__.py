"""Disaster recovery: backups, restores, and imports from Argo CD."""
