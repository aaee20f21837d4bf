"""Training schemes of section 3.2: one LightningModule per scheme (I full, I LoRA, II, III).

Modules import lazily (diffusers / lightning are heavy): ``from training.schemes.flux2 import ...``.
"""
