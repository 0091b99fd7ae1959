"""Watching decisions: anchor-risk alerts with webhook delivery, explanation drift."""
