"""Results: collect finished runs, aggregate them into the papers' tables and plots."""
