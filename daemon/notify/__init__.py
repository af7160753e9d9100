"""Argo CD notifications: triggers, templates, subscriptions, and the services that deliver."""
