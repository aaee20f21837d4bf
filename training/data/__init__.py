"""Tier datasets: aspect-ratio buckets at a tier's pixel budget, region crops from the tiled
corpus files, captions as prompts, and the latent cache (Schemes I/II)."""
