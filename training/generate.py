"""A trained checkpoint as an image generator (evaluation/generation.py's ``ImageGenerator``).

:func:`load_generator` builds a :class:`CheckpointGenerator` from a stage's exported weights
folder (``<run>/weights``, safetensors written by ``export_weights``):

* **I-Full / II**: ``Flux2Transformer2DModel.from_pretrained(weights)``; II gets the tier's
  dual-branch window attention processors installed again (processors are code, not weights);
* **I-LoRA**: the base transformer (the tiny random-init base of the same seed, or the
  production backbone) plus the adapter through diffusers' ``load_lora_adapter``;
* **III**: ``TinyPatchDiffusion.from_pretrained(weights)``, sampled directly in pixel space.

Sampling integrates the flow ODE of training/schemes/flow.py (``x_t = (1 - t) x_0 + t eps``,
velocity ``v = eps - x_0``) with Euler steps from ``t = 1`` (pure noise, seeded) to ``t = 0``:
``x <- x + (t_next - t) v(x, t)``; step count, timestep shift and guidance scale come from
``training.sampling`` (not in the paper). Latent schemes decode the final latent by inverting
:class:`training.data.latents.Flux2LatentEncoder` (undo the batch-norm statistics, unpatchify
2x2, VAE decode). Output: an ``(H, W, 3)`` uint8 array; ``H`` and ``W`` must be multiples of
the scheme's token / patch size.

A checkpoint trained from the tiny random-init backbone says so in :meth:`describe` (its
``offline_note``), which the bench stores with every score it produces.

Library only: no Dagster.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import curriculum

TINY_NOTE = ("tiny random-init backbone trained on CPU (offline stand-in for the production backbone): "
             "its images and scores are not comparable to the paper's")


def sampling_config(cfg) -> dict:
    s = dict(curriculum._training(cfg).get("sampling") or {})
    return {"steps": int(s.get("steps", 28)), "shift": float(s.get("shift", 1.0)),
            "guidance_scale": float(s.get("guidance_scale", 1.0))}


def timesteps(steps: int, shift: float = 1.0) -> torch.Tensor:
    """``steps + 1`` times from 1 to 0, shifted as ``s t / (1 + (s - 1) t)`` (s = 1: uniform)."""
    if steps < 1:
        raise ValueError(f"sampling needs at least one step, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1 + (shift - 1) * t) if shift != 1.0 else t


def euler_sample(velocity, noise: torch.Tensor, steps: int, shift: float = 1.0) -> torch.Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` from ``t = 1`` (``noise``) to ``t = 0``; ``velocity``
    takes ``(x, t)`` with ``t`` a ``(B,)`` tensor. Returns the clean sample ``x_0``."""
    x = noise
    ts = timesteps(steps, shift)
    for i in range(steps):
        t, t_next = float(ts[i]), float(ts[i + 1])
        v = velocity(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))
        x = x + (t_next - t) * v.to(x.dtype)
    return x


def _to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in [-1, 1] -> ``(H, W, 3)`` uint8."""
    a = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(a.permute(1, 2, 0).cpu().numpy())


def unpatchify_latents(z: torch.Tensor) -> torch.Tensor:
    """``(B, 4C, h, w) -> (B, C, 2h, 2w)``: inverse of :func:`training.data.latents.patchify_latents`."""
    b, c4, h, w = z.shape
    c = c4 // 4
    return z.view(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * 2, w * 2)


def decode_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """Transformer-space latents ``(B, 4C, h, w)`` -> pixels ``(B, 3, 16h, 16w)`` in [-1, 1]
    (inverse of :class:`training.data.latents.Flux2LatentEncoder`)."""
    dev = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(dev, torch.float32)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(dev, torch.float32)
    z = z.to(dev, torch.float32) * std + mean
    return vae.decode(unpatchify_latents(z).to(dtype)).sample


class CheckpointGenerator:
    """prompt -> image from one trained stage. ``name`` names it on the bench."""

    def __init__(self, scheme: str, tier: str, weights: str | os.PathLike, *, name: str, backbone: str = "tiny",
                 steps: int = 28, shift: float = 1.0, guidance_scale: float = 1.0, seed: int = 0,
                 window_schedule=None, lora: dict | None = None, device: str | None = None,
                 token_px: int = 16, patch: int | None = None):
        self.scheme, self.tier, self.weights = scheme, tier, Path(weights)
        self.name, self.backbone = name, backbone
        self.steps, self.shift, self.guidance_scale = int(steps), float(shift), float(guidance_scale)
        self.seed = int(seed)
        self.window_schedule = [tuple(f) for f in window_schedule] if window_schedule else None
        self.lora = dict(lora or {})
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.token_px, self.patch = int(token_px), patch
        self._parts: dict | None = None
        self.calls = 0

    # -- interface ------------------------------------------------------------------------------
    def availability(self) -> tuple[bool, str | None]:
        if not self.weights.is_dir():
            return False, f"no exported weights at {self.weights}"
        if not any(self.weights.glob("*.safetensors")):
            return False, f"no safetensors file in {self.weights}"
        if self.backbone != "tiny" and self.scheme != "III" and not os.path.isdir(self.backbone):
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(self.backbone, "transformer/config.json"), str):
                return False, f"backbone {self.backbone} is neither a local folder nor in the Hugging Face cache"
        return True, None

    def describe(self) -> dict:
        d = {"name": self.name, "scheme": self.scheme, "tier": self.tier, "weights": str(self.weights),
             "backbone": "tiny (random init)" if self.backbone == "tiny" else self.backbone,
             "sampler": "euler (flow matching)", "steps": self.steps, "shift": self.shift,
             "guidance_scale": self.guidance_scale, "device": self.device}
        if self.window_schedule:
            d["window_schedule"] = [list(f) for f in self.window_schedule]
        if self.backbone == "tiny":
            d["offline_note"] = TINY_NOTE
        return d

    @torch.no_grad()
    def generate(self, prompt: str, width: int, height: int, seed: int) -> np.ndarray:
        width, height = int(width), int(height)
        unit = self.patch if self.scheme == "III" else self.token_px
        if width % unit or height % unit:
            raise ValueError(f"{self.name}: {width}x{height} is not a multiple of the {unit}-px "
                             f"{'patch' if self.scheme == 'III' else 'token'}")
        parts = self._load()
        self.calls += 1
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        if self.scheme == "III":
            return self._generate_pixels(parts, prompt, width, height, gen)
        return self._generate_latents(parts, prompt, width, height, gen)

    # -- loading --------------------------------------------------------------------------------
    def _load(self) -> dict:
        if self._parts is not None:
            return self._parts
        ok, why = self.availability()
        if not ok:
            raise RuntimeError(f"{self.name} not available: {why}")
        from .schemes.text import HashTextEncoder

        if self.scheme == "III":
            from .schemes.pixel import TinyPatchDiffusion

            model = TinyPatchDiffusion.from_pretrained(str(self.weights)).eval().to(self.device)
            self.patch = int(model.config.patch_size)
            text = HashTextEncoder(dim=model.config.text_dim, seed=self.seed)
            self._parts = {"model": model, "text": text}
            return self._parts
        from diffusers import Flux2Transformer2DModel

        from .data.latents import tiny_flux2_vae
        from .schemes.flux2 import load_flux2_transformer, tiny_flux2_transformer

        if self.scheme == "I_lora":
            base = tiny_flux2_transformer(seed=self.seed) if self.backbone == "tiny" else \
                load_flux2_transformer(self.backbone)  # pragma: no cover - production backbone
            lora_file = next(self.weights.glob("*.safetensors"))
            base.load_lora_adapter(str(self.weights), weight_name=lora_file.name, use_safetensors=True, prefix=None,
                                   adapter_name="uhrforge")
            transformer = base
        else:
            transformer = Flux2Transformer2DModel.from_pretrained(str(self.weights))
        if self.window_schedule:
            from .schemes.window_attention import install_window_attention

            install_window_attention(transformer, self.window_schedule)
        transformer = transformer.eval().to(self.device)
        if self.backbone == "tiny":
            vae = tiny_flux2_vae(seed=self.seed)
            text = HashTextEncoder(dim=transformer.config.joint_attention_dim, seed=self.seed)
        else:  # pragma: no cover - needs the FLUX.2-klein weights
            from diffusers import AutoencoderKLFlux2

            from .schemes.text import Flux2KleinTextEncoder

            vae = AutoencoderKLFlux2.from_pretrained(self.backbone, subfolder="vae", torch_dtype=torch.bfloat16)
            text = Flux2KleinTextEncoder(self.backbone, device=self.device)
        self._parts = {"transformer": transformer, "vae": vae.eval().to(self.device), "text": text}
        return self._parts

    # -- sampling -------------------------------------------------------------------------------
    def _guided(self, predict, text, prompt: str):
        """velocity(x, t) with classifier-free guidance when ``guidance_scale != 1``."""
        cond = text([prompt])
        uncond = text([""]) if self.guidance_scale != 1.0 else None

        def velocity(x, t):
            v = predict(x, t, cond)
            if uncond is not None:
                v_u = predict(x, t, uncond)
                v = v_u + self.guidance_scale * (v - v_u)
            return v
        return velocity

    def _generate_pixels(self, parts, prompt, width, height, gen) -> np.ndarray:
        model = parts["model"]
        noise = torch.randn((1, 3, height, width), generator=gen).to(self.device)

        def predict(x, t, cond):
            return model(x, t, cond[0].to(self.device))
        x0 = euler_sample(self._guided(predict, parts["text"], prompt), noise, self.steps, self.shift)
        return _to_uint8(x0)

    def _generate_latents(self, parts, prompt, width, height, gen) -> np.ndarray:
        from .data.latents import pack, unpack
        from .schemes.flux2 import position_ids

        transformer, vae = parts["transformer"], parts["vae"]
        grid = (height // self.token_px, width // self.token_px)
        channels = int(transformer.config.in_channels)
        noise = pack(torch.randn((1, channels, *grid), generator=gen)).to(self.device)
        img_ids, _ = position_ids(grid, 0)
        img_ids = img_ids.to(self.device)

        def predict(x, t, cond):
            emb, txt_ids = cond
            kwargs = None
            if self.window_schedule:
                from .schemes.window_attention import window_kwargs

                kwargs = window_kwargs(emb.shape[1], grid)
            dtype = next(transformer.parameters()).dtype
            return transformer(hidden_states=x.to(dtype), encoder_hidden_states=emb.to(self.device, dtype), timestep=t.to(dtype),
                               img_ids=img_ids, txt_ids=txt_ids.to(self.device), joint_attention_kwargs=kwargs,
                               return_dict=False)[0].float()
        z = euler_sample(self._guided(predict, parts["text"], prompt), noise, self.steps, self.shift)
        return _to_uint8(decode_latents(vae, unpack(z, grid)))


def load_generator(cfg, scheme: str, tier: str, weights_folder: str | os.PathLike, *, backbone: str = "tiny",
                   name: str | None = None, scale: float | None = None, device: str | None = None) -> CheckpointGenerator:
    """The generator of one stage's exported weights (the stage as the curriculum defines it
    under ``cfg``; ``scale`` as in :func:`training.curriculum.ladder`)."""
    from .run import scheme_key

    key = scheme_key(scheme)
    stage = next((s for s in curriculum.ladder(cfg, key, scale) if s.tier.name == tier), None)
    if stage is None:
        raise ValueError(f"{scheme} has no {tier} stage")
    t = curriculum._training(cfg)
    s = sampling_config(cfg)
    return CheckpointGenerator(
        key, tier, weights_folder, name=name or f"{key}-{tier}", backbone=backbone, steps=s["steps"],
        shift=s["shift"], guidance_scale=s["guidance_scale"], seed=int(t.get("seed", 0)),
        window_schedule=stage.partition_factors if key == "II" else None,
        lora={"rank": stage.extra.get("rank"), "alpha": stage.extra.get("alpha")} if key == "I_lora" else None,
        device=device, token_px=stage.tier.token_px, patch=stage.patch if key == "III" else None)

