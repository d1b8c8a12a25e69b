"""Synthetic worlds with ground truth: latent blocks, caption masks, invertible generators."""
