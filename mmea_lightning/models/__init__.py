"""Models: encoders, losses and aligners (an aligner file holds only what makes that aligner different)."""
