"""Lineage link providers, one module per stage; every module here is imported on first use."""
