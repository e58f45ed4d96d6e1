"""Alignment losses."""
