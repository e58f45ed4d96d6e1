"""Lightning wrappers: one LightningModule for every aligner, and the callbacks they share."""
