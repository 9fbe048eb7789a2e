"""Alerts: payload building (pure) and transport to OpsGenie."""
