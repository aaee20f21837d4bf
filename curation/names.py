"""File names and paths as manifests store them: lossless, valid UTF-8, safe to print. No dependencies.

A POSIX file name is a byte string; Python hands it over as ``str`` with the bytes that are not
UTF-8 surrogate-escaped (``os.fsdecode``). Arrow strings must be valid UTF-8, and terminals, logs
and the UI must not receive control characters (a newline or an escape sequence in a name).
:func:`encode_name` maps any name or path (``bytes`` or such a ``str``) to text that is both:

* valid UTF-8 without a backslash and with only printable characters (:meth:`str.isprintable`:
  no control, format -- bidi overrides, zero-width --, separator other than the space, unassigned
  or private-use character) -> unchanged (every ordinary name: ordinary manifests read as before);
* otherwise a backslash becomes ``\\\\``, each byte that is not valid UTF-8 becomes ``\\xNN``, and
  each byte of a character that is not printable becomes ``\\xNN`` (``a\\nb`` -> ``a\\x0ab``).

The mapping is one-to-one (an unchanged name holds no backslash, an escaped one always holds one),
so :func:`decode_name` gives back the exact bytes and :func:`fs_path` a path ``open`` accepts.
The raw pool also keeps the original bytes of an escaped path (``source_path_bytes``).
"""

from __future__ import annotations

import os

_HEX = frozenset("0123456789abcdefABCDEF")


def _as_bytes(name: str | bytes | os.PathLike) -> bytes:
    if isinstance(name, bytes):
        return name
    name = os.fspath(name)
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate that no file name gives (text from elsewhere)
        return name.encode("utf-8", "surrogatepass")


def _plain(text: str) -> bool:
    """True when ``text`` is stored as it is (no backslash, nothing :meth:`str.isprintable` refuses)."""
    return "\\" not in text and text.isprintable()


def encode_name(name: str | bytes | os.PathLike) -> str:
    """The stored (and displayed) text of a name or path: see the module docstring."""
    raw = _as_bytes(name)
    text = raw.decode("utf-8", "surrogateescape")
    if _plain(text):
        return text
    out = []
    for c in text:
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        elif not c.isprintable():
            out.append("".join(f"\\x{b:02x}" for b in c.encode("utf-8")))
        else:
            out.append(c)
    return "".join(out)


#: the same mapping, for any text about to be printed or stored (an error message naming a file)
safe_text = encode_name


def is_escaped(stored: str) -> bool:
    """True when ``stored`` is an escaped form (its bytes differ from its UTF-8 encoding)."""
    return "\\" in stored


def decode_name(stored: str) -> bytes:
    """The original bytes of a stored name or path (inverse of :func:`encode_name`).

    A backslash not followed by ``\\`` or ``xNN`` (a manifest written before names were escaped)
    is taken literally."""
    if "\\" not in stored:
        return stored.encode("utf-8", "surrogateescape")
    out = bytearray()
    i, n = 0, len(stored)
    while i < n:
        c = stored[i]
        if c == "\\" and i + 1 < n and stored[i + 1] == "\\":
            out += b"\\"
            i += 2
            continue
        if c == "\\" and i + 3 < n and stored[i + 1] == "x" and all(h in _HEX for h in stored[i + 2:i + 4]):
            out.append(int(stored[i + 2:i + 4], 16))
            i += 4
            continue
        out += c.encode("utf-8", "surrogateescape")
        i += 1
    return bytes(out)


def fs_path(stored: str) -> str:
    """A stored path as a ``str`` the OS functions accept (undecodable bytes surrogate-escaped)."""
    if "\\" not in stored:
        return stored
    return os.fsdecode(decode_name(stored))
