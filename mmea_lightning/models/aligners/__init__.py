"""Aligners: ``nn.Module``s mapping a FeatureSet to entity embeddings and a seed-link loss."""
