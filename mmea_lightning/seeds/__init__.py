"""Seed links the aligners train on: gold seeds from the split (more seed generators arrive here)."""
