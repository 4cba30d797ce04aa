"""Integrations of celery-resumable with other frameworks (each an optional extra)."""
