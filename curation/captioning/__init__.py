"""The captions pipeline library (paper 3.1.5): tags, grounding, masks, instance pairs,
descriptions, aesthetics analysis, long / short captions and caption quality. No Dagster."""
