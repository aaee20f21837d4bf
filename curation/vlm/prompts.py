"""Prompt files: loading, hashing, rendering.

Prompts are files under version control (``prompts/`` at the repository root; see its README).
Placeholders ``{{name}}`` are filled from :attr:`curation.vlm.VLMRequest.variables`; a leading
HTML comment is a maintainer note, hashed but not sent. ``prompt_hash`` is the sha256 of the
file's bytes, recorded with every result and part of the cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the repository's prompt folder (the package is installed editable from the repository)
DEFAULT_PROMPT_DIR = Path(__file__).resolve().parents[2] / "prompts"

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_LEADING_COMMENT = re.compile(r"\A\s*<!--.*?-->\s*", re.DOTALL)


@dataclass(frozen=True)
class Prompt:
    """A prompt file: ``sha256`` of its bytes (recorded with every result) and its text."""

    path: str
    sha256: str
    text: str

    @property
    def body(self) -> str:
        """The text sent to the model: the file without its leading HTML comment(s)."""
        t = self.text
        while True:
            m = _LEADING_COMMENT.match(t)
            if not m:
                return t.strip() + "\n"
            t = t[m.end():]

    @property
    def variables(self) -> list[str]:
        return sorted(set(_PLACEHOLDER.findall(self.body)))

    def render(self, variables: Mapping[str, Any]) -> str:
        """Fill ``{{name}}`` placeholders; strings as they are, anything else as JSON.
        A placeholder without a value raises ``ValueError``."""
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise ValueError(f"prompt {self.path}: no value for placeholder(s) {missing}")

        def repl(m: re.Match) -> str:
            v = variables[m.group(1)]
            return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)

        return _PLACEHOLDER.sub(repl, self.body)


def load_prompt(path: str | os.PathLike) -> Prompt:
    data = Path(path).read_bytes()
    return Prompt(str(path), hashlib.sha256(data).hexdigest(), data.decode("utf-8"))


def prompt_hash(path: str | os.PathLike) -> str:
    """sha256 (hex) of a prompt file's bytes."""
    return load_prompt(path).sha256
