"""Placeholder (work in progress)."""
