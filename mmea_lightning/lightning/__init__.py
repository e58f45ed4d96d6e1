"""Lightning wrappers: the DataModule (data and seed links), one LightningModule for every aligner, and the callbacks
they share."""
