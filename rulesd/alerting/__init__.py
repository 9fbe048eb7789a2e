"""Alerts: payload building and what the OpsGenie API means (pure), the transports (to OpsGenie
over HTTP, or printed for a dry run)."""
