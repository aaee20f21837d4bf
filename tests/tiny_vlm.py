"""A tiny random-weight Qwen3-VL, built offline from a config, for tests that need the real model code.

:class:`TinyQwen3VL` builds, without any download:

* a :class:`transformers.Qwen3VLForConditionalGeneration` from a seeded config (2 text layers,
  hidden size 64, a 2-block vision tower of width 32), random weights, ``eval()`` on CPU;
* a byte-level BPE tokenizer trained in memory on a few sentences (``tokenizers``), wrapped as a
  :class:`transformers.PreTrainedTokenizerFast` with the chat / vision special tokens the
  Qwen3-VL processor looks up (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``,
  ``<|vision_end|>``, ``<|image_pad|>``, ``<|video_pad|>``); the model config gets their ids;
* the image processor from its class defaults, with the pixel budget made small so a big
  image becomes a handful of vision tokens; the :class:`transformers.Qwen3VLProcessor` joins
  them (when it cannot be built, the image processor is used directly and the image
  placeholders are expanded here).

:meth:`TinyQwen3VL.generate` takes OpenAI chat ``messages`` (text parts and ``data:`` image URLs),
writes the Qwen chat prompt, decodes the images to PIL and runs the real ``model.generate``
(greedy, ``max_new_tokens`` tokens). The answer is garbage by construction: tests use it to check
that callers survive a real model's bad output. ``calls`` counts generations. A lock makes it
safe behind the threaded test server.
"""

from __future__ import annotations

import base64
import io
import re
import threading
from typing import Any

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]

_CORPUS = [
    "A photograph of a mountain lake under a clear blue sky, with pine trees along the shore.",
    "The long caption describes every object, its colour, texture and position in the image.",
    "<json> {\"artifact\": false, \"severity\": 0, \"reason\": \"clean\"} </json>",
    "{\"description\": \"a red car\", \"importance\": 7, \"short_caption\": \"a street at night\"}",
    "Composition, visual elements, technical execution, originality, theme and emotion.",
    "tangible tags: person, dog, tree, building, sky, water, road, flower, chair, table.",
]


def build_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer trained in memory, wrapped for transformers (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIALS[1:])
    return fast


def build_config(tokenizer):
    from transformers import Qwen3VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                 "mrope_interleaved": True},
                pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], bos_token_id=ids["<|im_start|>"])
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, temporal_patch_size=2,
                  spatial_merge_size=2, out_hidden_size=64, num_position_embeddings=64,
                  deepstack_visual_indexes=[1])
    return Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                         video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                         vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)


def build_image_processor(max_pixels: int = 128 * 128, min_pixels: int = 32 * 32):
    """The Qwen3-VL image processor from its class defaults, with a small pixel budget."""
    from transformers import Qwen2VLImageProcessor

    ip = Qwen2VLImageProcessor()
    ip.patch_size, ip.temporal_patch_size, ip.merge_size = 16, 2, 2
    ip.size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    return ip


def decode_data_url(url: str):
    from PIL import Image

    m = re.match(r"data:image/[a-zA-Z0-9.+-]+;base64,(.*)\Z", url, re.DOTALL)
    if not m:
        raise ValueError("not a data:image URL")
    im = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
    im.load()
    return im.convert("RGB")


def chat_prompt(messages: list[dict]) -> tuple[str, list]:
    """The Qwen chat prompt of OpenAI ``messages`` (an image part becomes one vision placeholder)
    and the PIL images in order."""
    parts, images = [], []
    for msg in messages:
        content = msg.get("content")
        chunks = []
        if isinstance(content, str):
            chunks.append(content)
        else:
            for p in content or []:
                if p.get("type") == "text":
                    chunks.append(p.get("text", ""))
                elif p.get("type") == "image_url":
                    images.append(decode_data_url(p["image_url"]["url"]))
                    chunks.append("<|vision_start|><|image_pad|><|vision_end|>")
        parts.append(f"<|im_start|>{msg.get('role', 'user')}\n{''.join(chunks)}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts), images


class TinyQwen3VL:
    """See the module docstring."""

    def __init__(self, seed: int = 0, max_new_tokens: int = 24, max_prompt_tokens: int = 1024,
                 max_pixels: int = 128 * 128) -> None:
        import torch
        from transformers import Qwen3VLForConditionalGeneration

        self.max_new_tokens = int(max_new_tokens)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.calls = 0
        self.outputs: list[str] = []
        self.lock = threading.Lock()
        self.tokenizer = build_tokenizer()
        self.config = build_config(self.tokenizer)
        torch.manual_seed(seed)
        self.model = Qwen3VLForConditionalGeneration(self.config).eval()
        self.image_processor = build_image_processor(max_pixels=max_pixels)
        self.processor = None
        try:
            from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

            self.processor = Qwen3VLProcessor(image_processor=self.image_processor, tokenizer=self.tokenizer,
                                              video_processor=Qwen3VLVideoProcessor())
        except Exception:  # the processor cannot be built offline: expand the placeholders here
            self.processor = None

    def _inputs(self, text: str, images: list) -> dict:
        if self.processor is not None:
            return dict(self.processor(text=[text], images=images or None, return_tensors="pt"))
        feats: dict = {}
        if images:
            feats = dict(self.image_processor(images=images, return_tensors="pt"))
            merge = self.image_processor.merge_size ** 2
            counts = iter(int(g.prod()) // merge for g in feats["image_grid_thw"])
            text = re.sub(re.escape("<|image_pad|>"), lambda _m: "<|image_pad|>" * next(counts), text)
        feats.update(self.tokenizer([text], return_tensors="pt"))
        return feats

    def _trim(self, text: str) -> str:
        """Keep the end of an over-long prompt's text (the placeholders stay whole)."""
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) <= self.max_prompt_tokens:
            return text
        head, _, tail = text.rpartition("<|vision_end|>")
        if head:
            keep = self.tokenizer.decode(self.tokenizer(tail)["input_ids"][-self.max_prompt_tokens:])
            return head + "<|vision_end|>" + keep
        return self.tokenizer.decode(ids[-self.max_prompt_tokens:])

    def generate(self, messages: list[dict]) -> str:
        import torch

        text, images = chat_prompt(messages)
        text = self._trim(text)
        with self.lock:
            inputs = self._inputs(text, images)
            inputs.pop("token_type_ids", None)
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
            self.calls += 1
            n = inputs["input_ids"].shape[1]
            answer = self.tokenizer.decode(out[0, n:], skip_special_tokens=True)
            self.outputs.append(answer)
        return answer


def answer_fn(tiny: TinyQwen3VL):
    """The test server's ``default``: ``body -> str`` through the tiny model."""

    def answer(body: dict[str, Any]) -> str:
        return tiny.generate(body["messages"])

    return answer


__all__ = ["TinyQwen3VL", "build_tokenizer", "build_config", "build_image_processor", "chat_prompt",
           "decode_data_url", "answer_fn", "SPECIALS"]
