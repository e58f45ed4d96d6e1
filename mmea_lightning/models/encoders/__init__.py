"""Graph and feature encoders."""
