"""Latents for Schemes I / II: the Flux2 VAE behind a small interface, and a latent cache.

:class:`Flux2LatentEncoder` turns ``(B, 3, H, W)`` pixels in [-1, 1] into the transformer's
input space exactly as the FLUX.2 pipelines do: VAE mode (argmax), 2x2 patchify
(``C -> 4C``, ``H/8 -> H/16``) and the VAE's batch-norm statistics
(``(z - running_mean) / sqrt(running_var + eps)``); one token then covers 16 x 16 px.
Production: ``AutoencoderKLFlux2.from_pretrained(path, subfolder="vae")`` (a local path or the
HF cache). Tests: :func:`tiny_flux2_vae` (random weights, 4 latent channels -> 16 after
patchify, matching the tiny transformer of DESIGN section 8).

:class:`LatentCache` stores one latent per ``(sample key, encoder fingerprint)`` as a
safetensors file (content-addressed file name, written to ``.tmp`` then renamed). A sample key
names the image, the crop box and the output size (training/data/datasets.py), so a cache hit
is exactly the same pixels through the same VAE.

Scheme III trains in pixel space: no encoder, the pixels are the clean sample.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


def patchify_latents(z: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)`` (same layout as Flux2's ``_patchify_latents``)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def pack(z: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H*W, C)`` row-major tokens (Flux2's ``_pack_latents``)."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h * w).permute(0, 2, 1)


def unpack(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    b, n, c = tokens.shape
    return tokens.permute(0, 2, 1).reshape(b, c, int(grid[0]), int(grid[1]))


def tiny_flux2_vae(seed: int = 0):
    """A random-weight ``AutoencoderKLFlux2`` small enough for CPU tests (8x down, 4 latent ch)."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                             norm_num_groups=4, mid_block_add_attention=False)
    return vae.eval().requires_grad_(False)


class Flux2LatentEncoder:
    name = "flux2-vae"

    def __init__(self, vae, fingerprint: str | None = None):
        self.vae = vae.eval().requires_grad_(False)
        self.fingerprint = fingerprint or self._fingerprint(vae)

    @staticmethod
    def _fingerprint(vae) -> str:
        h = hashlib.sha256(repr(sorted(dict(vae.config).items())).encode())
        for name, p in sorted(vae.state_dict().items())[:8]:  # cheap weight identity
            h.update(name.encode())
            h.update(p.detach().float().flatten()[:64].cpu().numpy().tobytes())
        return "vae-" + h.hexdigest()[:16]

    @classmethod
    def from_pretrained(cls, path: str, subfolder: str = "vae", torch_dtype=torch.bfloat16):  # pragma: no cover
        from diffusers import AutoencoderKLFlux2

        return cls(AutoencoderKLFlux2.from_pretrained(path, subfolder=subfolder, torch_dtype=torch_dtype),
                   fingerprint=f"vae:{path}")

    @property
    def downsample(self) -> int:
        """Pixels per token side: VAE factor x 2 (patchify)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1) * 2

    @property
    def channels(self) -> int:
        return int(self.vae.config.latent_channels) * 4

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        dev = next(vae.parameters()).device
        dtype = next(vae.parameters()).dtype
        z = vae.encode(pixels.to(dev, dtype)).latent_dist.mode()
        z = patchify_latents(z)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(z)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(z)
        return ((z - mean) / std).float()

    def to(self, device):
        self.vae.to(device)
        return self


class LatentCache:
    """Latents on disk, one safetensors file per (sample key, encoder fingerprint)."""

    def __init__(self, root: str | os.PathLike, fingerprint: str):
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        h = hashlib.sha256(f"{self.fingerprint}|{key}".encode()).hexdigest()
        return self.root / h[:2] / f"{h}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        p = self.path(key)
        if not p.exists():
            return None
        return load_file(str(p))["latent"]

    def put(self, key: str, latent: torch.Tensor) -> None:
        from safetensors.torch import save_file

        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        save_file({"latent": latent.detach().cpu().contiguous()}, str(tmp), metadata={"key": key,
                                                                                     "encoder": self.fingerprint})
        os.replace(tmp, p)

    def encode(self, encoder, pixels: torch.Tensor, keys: list[str] | None) -> torch.Tensor:
        """Latents of a batch: cached ones are read, the rest encoded (one VAE call) and stored."""
        if keys is None:
            return encoder(pixels)
        got = [self.get(k) for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            z = encoder(pixels[todo])
            for j, i in enumerate(todo):
                got[i] = z[j].cpu()
                self.put(keys[i], z[j])
        return torch.stack(got).to(pixels.device)
