"""Data layer: readers of the ``mmkg`` layout, the in-memory pair, features and splits."""
