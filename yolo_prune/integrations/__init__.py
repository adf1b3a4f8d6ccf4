"""Integrations with the tools users already use (ultralytics' trainer)."""
