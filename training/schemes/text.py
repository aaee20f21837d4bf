"""Prompt encoders: captions in, ``(B, T, dim)`` embeddings + ``(T, 4)`` text position ids out.

* :class:`HashTextEncoder` -- offline and deterministic: words are hashed (crc32) into a fixed
  vocabulary whose embedding table is drawn from a seeded generator; no weights to download.
  It is what tests and CPU runs use, and it says so (``name = "hash"``).
* :class:`Flux2KleinTextEncoder` -- production: the Qwen3 text encoder of a FLUX.2-klein
  checkpoint through ``Flux2KleinPipeline.from_pretrained(path, transformer=None, vae=None)``
  and its ``encode_prompt`` (a local path or the HF cache; nothing is downloaded here).

Encoders are plain objects, not ``nn.Module`` attributes of the LightningModule, so their
(frozen) weights never land in a training checkpoint or the optimiser.
"""

from __future__ import annotations

import re
import zlib

import torch


def text_ids(length: int) -> torch.Tensor:
    """Flux2 text coordinates ``(t, h, w, l) = (0, 0, 0, l)``, as the pipeline's ``_prepare_text_ids``."""
    return torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(length))


class HashTextEncoder:
    name = "hash"

    def __init__(self, dim: int = 64, max_tokens: int = 8, vocab: int = 4096, seed: int = 0):
        self.dim, self.max_tokens, self.vocab = int(dim), int(max_tokens), int(vocab)
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(self.vocab, self.dim, generator=g) / self.dim ** 0.5

    @property
    def fingerprint(self) -> str:
        return f"hash-{self.dim}-{self.max_tokens}-{self.vocab}"

    def token_ids(self, prompt: str) -> list[int]:
        words = re.findall(r"[a-z0-9]+", prompt.lower())[: self.max_tokens]
        return [1 + zlib.crc32(w.encode()) % (self.vocab - 1) for w in words]

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.zeros(len(prompts), self.max_tokens, self.dim)
        for i, p in enumerate(prompts):
            ids = self.token_ids(p)
            if ids:
                out[i, : len(ids)] = self.table[torch.tensor(ids)]
        return out, text_ids(self.max_tokens)

    def to(self, device):
        self.table = self.table.to(device)
        return self


class Flux2KleinTextEncoder:  # pragma: no cover - needs the FLUX.2-klein weights
    name = "flux2-klein-qwen3"

    def __init__(self, path: str, max_sequence_length: int = 512, torch_dtype=torch.bfloat16, device="cuda"):
        from diffusers import Flux2KleinPipeline

        self.pipe = Flux2KleinPipeline.from_pretrained(path, transformer=None, vae=None, torch_dtype=torch_dtype)
        self.pipe.text_encoder.to(device).requires_grad_(False)
        self.max_sequence_length = int(max_sequence_length)
        self.device = device
        self.fingerprint = f"qwen3:{path}:{max_sequence_length}"

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb, ids = self.pipe.encode_prompt(prompts, device=self.device, max_sequence_length=self.max_sequence_length)
        return emb, ids[0]

    def to(self, device):
        self.pipe.text_encoder.to(device)
        self.device = device
        return self
