"""Tokenizers: byte-level, llama2.c ``tokenizer.bin`` and Hugging Face ``tokenizer.json``.

All tokenizers share one small interface (:class:`Tokenizer`):

* ``encode(text, bos=True, eos=False) -> list[int]``
* ``decode(ids) -> str`` (control tokens produce no text)
* ``stream_decoder() -> StreamDecoder`` whose ``push(id)`` returns the text
  that became complete with that token, so generated text can be printed as it
  is produced even when a UTF-8 character spans several byte tokens, and whose
  ``flush()`` returns what is left at the end.
* ``vocab_size``, ``bos_id``, ``eos_id``

The two byte-oriented tokenizers (:class:`ByteTokenizer` and
:class:`Llama2cTokenizer`) also have ``token_bytes(id, prev)`` and
``decode_bytes(ids)``.

The llama2.c id layout is used for bytes everywhere: 0 ``<unk>``, 1 BOS,
2 EOS, and id ``3 + b`` for the raw byte ``b`` (0..255).
"""

from __future__ import annotations

import codecs
import re
import struct
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

from ..errors import InputError
from ..files import PathLike, atomic_write_bytes
from .errors import ModelFormatError

__all__ = [
    "Tokenizer",
    "StreamDecoder",
    "ByteTokenizer",
    "Llama2cTokenizer",
    "HFTokenizer",
    "read_tokenizer_bin",
    "write_tokenizer_bin",
    "byte_vocab_pieces",
    "load_hf_tokenizer",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "BYTE_OFFSET",
]


UNK_ID = 0
BOS_ID = 1
EOS_ID = 2
BYTE_OFFSET = 3
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


class StreamDecoder(Protocol):
    """Incremental detokenizer for streaming output."""

    def push(self, token: int) -> str:
        """Feed one token id; return the text completed by it (possibly "")."""
        ...

    def flush(self) -> str:
        """Return any text still held back (an incomplete UTF-8 tail becomes U+FFFD)."""
        ...


class Tokenizer(Protocol):
    """What the rest of :mod:`lpu.llm` needs from a tokenizer."""

    vocab_size: int
    bos_id: int
    eos_id: int

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> List[int]:
        """Token ids of ``text``, with BOS first when ``bos`` and EOS last when ``eos``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of ids (control tokens give no text)."""
        ...

    def stream_decoder(self) -> StreamDecoder:
        """A fresh incremental decoder."""
        ...


class _ByteStream:
    """Streaming decoder over a tokenizer that maps each id to bytes."""

    def __init__(self, tok: "_BytesTokenizerBase") -> None:
        self._tok = tok
        self._prev: Optional[int] = None
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        data = self._tok.token_bytes(token, self._prev)
        self._prev = token
        return self._utf8.decode(data)

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class _BytesTokenizerBase:
    """Shared decode logic for tokenizers whose tokens are byte strings."""

    vocab_size: int
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def token_bytes(self, token: int, prev: Optional[int] = None) -> bytes:  # pragma: no cover - abstract
        """Bytes that ``token`` contributes when it follows ``prev``."""
        raise NotImplementedError

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenated bytes of ``ids`` (what run.c would write, minus its isprint filter)."""
        out = bytearray()
        prev: Optional[int] = None
        for t in ids:
            out += self.token_bytes(int(t), prev)
            prev = int(t)
        return bytes(out)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; invalid UTF-8 becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> _ByteStream:
        """A fresh incremental decoder (see :class:`StreamDecoder`)."""
        return _ByteStream(self)

    def _check_id(self, token: int) -> None:
        if not 0 <= token < self.vocab_size:
            raise InputError(f"token id {token} is outside the vocabulary (0..{self.vocab_size - 1})")


# --------------------------------------------------------------------------- byte-level


def byte_vocab_pieces(vocab_size: int = 256 + BYTE_OFFSET) -> List[bytes]:
    """Pieces of the byte-level vocabulary in llama2.c's ``tokenizer.bin`` spelling.

    ids 0..2 are ``<unk>``, ``"\\n<s>\\n"``, ``"\\n</s>\\n"`` (as llama2.c's
    exporter writes them); id ``3 + b`` is the byte ``b``, spelled as the raw
    character for printable ASCII including space and as ``<0xNN>`` otherwise.
    With this vocabulary run.c's ``encode`` finds the ``" "`` piece it needs
    for the dummy prefix and maps every other byte to ``3 + b``, so it gives
    exactly :class:`ByteTokenizer`'s ids. Ids past 258 (padding) are spelled
    ``<pad_N>``.
    """
    if vocab_size < 256 + BYTE_OFFSET:
        raise InputError(f"a byte-level vocabulary needs at least 259 ids, got {vocab_size}")
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    for b in range(256):
        pieces.append(bytes([b]) if 0x20 <= b < 0x7F else b"<0x%02X>" % b)
    pieces += [b"<pad_%d>" % i for i in range(256 + BYTE_OFFSET, vocab_size)]
    return pieces


class ByteTokenizer(_BytesTokenizerBase):
    """Byte-level tokenizer in llama2.c's id layout (the bundled model's tokenizer).

    ids: 0 ``<unk>`` (never produced), 1 BOS, 2 EOS, ``3 + b`` for byte ``b``.
    Ids at or above 259 (when ``vocab_size`` is padded) decode to nothing.

    With ``dummy_prefix=True`` (the default, matching SentencePiece and
    llama2.c's run.c) ``encode`` puts the id of ``" "`` in front of any
    non-empty text, and ``decode`` drops one leading space from the token that
    directly follows BOS. Encoding is therefore ``[BOS, 35] + [3 + b for b in
    text.encode("utf-8")]``.
    """

    def __init__(self, vocab_size: int = 256 + BYTE_OFFSET, dummy_prefix: bool = True) -> None:
        if vocab_size < 256 + BYTE_OFFSET:
            raise InputError(f"ByteTokenizer needs vocab_size >= 259, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        self.dummy_prefix = bool(dummy_prefix)
        self.bos_id = BOS_ID
        self.eos_id = EOS_ID

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size}, dummy_prefix={self.dummy_prefix})"

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> List[int]:
        """Ids of ``text`` (UTF-8 bytes shifted by 3); see the class docstring."""
        ids = [BOS_ID] if bos else []
        data = text.encode("utf-8")
        if data and self.dummy_prefix:
            ids.append(ord(" ") + BYTE_OFFSET)
        ids.extend(b + BYTE_OFFSET for b in data)
        if eos:
            ids.append(EOS_ID)
        return ids

    def token_bytes(self, token: int, prev: Optional[int] = None) -> bytes:
        """The byte of ``token`` (empty for control and padding ids)."""
        self._check_id(token)
        if not BYTE_OFFSET <= token < 256 + BYTE_OFFSET:
            return b""
        if self.dummy_prefix and prev == BOS_ID and token == ord(" ") + BYTE_OFFSET:
            return b""
        return bytes([token - BYTE_OFFSET])

    def pieces(self) -> List[bytes]:
        """This vocabulary spelled for a llama2.c ``tokenizer.bin``."""
        return byte_vocab_pieces(self.vocab_size)


# --------------------------------------------------------------------------- llama2.c


def read_tokenizer_bin(path: PathLike, vocab_size: Optional[int] = None) -> Tuple[List[bytes], List[float], int]:
    """Read a llama2.c ``tokenizer.bin``.

    Layout: ``uint32 max_token_length`` then, per token, ``float32 score``,
    ``int32 len`` and ``len`` bytes. The file does not store the vocabulary
    size (run.c takes it from the checkpoint); pass ``vocab_size`` to read
    exactly that many tokens (extra bytes after them are an error), or
    ``None`` to read to the end of the file.

    Returns ``(pieces, scores, max_token_length)``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: tokenizer file not found") from None
    if len(data) < 4:
        raise ModelFormatError(f"{path}: truncated tokenizer.bin (no max_token_length field)")
    (max_len,) = struct.unpack_from("<I", data, 0)
    pos = 4
    pieces: List[bytes] = []
    scores: List[float] = []
    while (vocab_size is None and pos < len(data)) or (vocab_size is not None and len(pieces) < vocab_size):
        i = len(pieces)
        if pos + 8 > len(data):
            raise ModelFormatError(f"{path}: truncated tokenizer.bin at token {i} (score/length field)")
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        if n < 0 or pos + n > len(data):
            raise ModelFormatError(f"{path}: truncated or corrupt tokenizer.bin at token {i} (length {n})")
        pieces.append(data[pos : pos + n])
        scores.append(float(score))
        pos += n
    if pos != len(data):
        raise ModelFormatError(
            f"{path}: {len(data) - pos} bytes left after {len(pieces)} tokens; "
            "the tokenizer does not match the model's vocab_size"
        )
    return pieces, scores, int(max_len)


def write_tokenizer_bin(
    path: PathLike, pieces: Sequence[bytes], scores: Optional[Sequence[float]] = None, max_token_length: Optional[int] = None
) -> None:
    """Write a llama2.c ``tokenizer.bin`` (see :func:`read_tokenizer_bin`).

    ``scores`` default to 0.0; ``max_token_length`` defaults to the longest piece.
    """
    if scores is None:
        scores = [0.0] * len(pieces)
    if len(scores) != len(pieces):
        raise InputError(f"write_tokenizer_bin: {len(pieces)} pieces but {len(scores)} scores")
    if max_token_length is None:
        max_token_length = max((len(p) for p in pieces), default=0)
    out = bytearray(struct.pack("<I", max_token_length))
    for piece, score in zip(pieces, scores):
        piece = bytes(piece)
        out += struct.pack("<fi", float(score), len(piece))
        out += piece
    atomic_write_bytes(path, bytes(out))


class Llama2cTokenizer(_BytesTokenizerBase):
    """The tokenizer of llama2.c's ``run.c`` over a ``tokenizer.bin`` vocabulary.

    Encoding follows run.c step by step: optional BOS (id 1); for non-empty
    text the id of the piece ``" "`` (SentencePiece's dummy prefix); each UTF-8
    code point looked up as a whole piece, or else its bytes as ids ``byte +
    3``; then, repeatedly, the adjacent pair whose concatenation is a piece
    with the highest score is merged (leftmost pair on equal scores; scores
    must exceed -1e10); optional EOS (id 2). When a piece occurs several times
    the lowest id is used.

    Decoding drops one leading space from the piece right after BOS, turns
    ``<0xNN>`` pieces into the raw byte, and gives nothing for ids 0..2. (run.c
    additionally hides non-printable single bytes when printing; this class
    returns them.)
    """

    def __init__(self, pieces: Sequence[bytes], scores: Sequence[float], max_token_length: Optional[int] = None,
                 source: str = "<memory>") -> None:
        if len(pieces) != len(scores):
            raise InputError(f"Llama2cTokenizer: {len(pieces)} pieces but {len(scores)} scores")
        if len(pieces) < BYTE_OFFSET:
            raise InputError("Llama2cTokenizer: the vocabulary needs at least the 3 control tokens")
        self.pieces: List[bytes] = [bytes(p) for p in pieces]
        self.scores: List[float] = [float(s) for s in scores]
        self.vocab_size = len(self.pieces)
        self.max_token_length = max_token_length if max_token_length is not None else max(len(p) for p in self.pieces)
        self.bos_id = BOS_ID
        self.eos_id = EOS_ID
        self.source = source
        self._lookup: Dict[bytes, int] = {}
        for i, p in enumerate(self.pieces):
            self._lookup.setdefault(p, i)
        self._piece_bytes: List[bytes] = []
        for p in self.pieces:
            m = _BYTE_PIECE.fullmatch(p)
            self._piece_bytes.append(bytes([int(m.group(1), 16)]) if m else p)

    def __repr__(self) -> str:
        return f"Llama2cTokenizer(vocab_size={self.vocab_size}, source={self.source!r})"

    @classmethod
    def from_file(cls, path: PathLike, vocab_size: Optional[int] = None) -> "Llama2cTokenizer":
        """Read ``tokenizer.bin`` (see :func:`read_tokenizer_bin`)."""
        pieces, scores, max_len = read_tokenizer_bin(path, vocab_size)
        return cls(pieces, scores, max_len, source=str(path))

    def save(self, path: PathLike) -> None:
        """Write this vocabulary as a ``tokenizer.bin``."""
        write_tokenizer_bin(path, self.pieces, self.scores, self.max_token_length)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> List[int]:
        """run.c's ``encode``; raises ValueError if the dummy-prefix piece ``" "`` is missing."""
        ids: List[int] = [BOS_ID] if bos else []
        if text:
            space = self._lookup.get(b" ")
            if space is None:
                raise InputError(f"{self.source}: the vocabulary has no ' ' piece, needed for the dummy prefix")
            ids.append(space)
        for ch in text:
            cp = ch.encode("utf-8")
            tid = self._lookup.get(cp)
            if tid is not None:
                ids.append(tid)
            else:
                ids.extend(b + BYTE_OFFSET for b in cp)
        while True:
            best_score = -1e10
            best_id = -1
            best_idx = -1
            for i in range(len(ids) - 1):
                tid = self._lookup.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]], -1)
                if tid != -1 and self.scores[tid] > best_score:
                    best_score, best_id, best_idx = self.scores[tid], tid, i
            if best_idx == -1:
                break
            ids[best_idx : best_idx + 2] = [best_id]
        if eos:
            ids.append(EOS_ID)
        return ids

    def token_bytes(self, token: int, prev: Optional[int] = None) -> bytes:
        """run.c's ``decode(prev, token)`` as bytes (nothing for ids 0..2)."""
        self._check_id(token)
        if token < BYTE_OFFSET:
            return b""
        piece = self._piece_bytes[token]
        if prev == BOS_ID and self.pieces[token][:1] == b" ":
            piece = piece[1:]
        return piece


# --------------------------------------------------------------------------- Hugging Face


class _PrefixDiffStream:
    """Streaming for tokenizers that can only decode whole id lists."""

    def __init__(self, tok: "HFTokenizer") -> None:
        self._tok = tok
        self._ids: List[int] = []
        self._emitted = ""

    def push(self, token: int) -> str:
        self._ids.append(int(token))
        text = self._tok.decode(self._ids)
        if text.endswith("\ufffd"):  # probably an incomplete byte sequence: wait
            return ""
        new = text[len(self._emitted):] if text.startswith(self._emitted) else text
        self._emitted = text
        return new

    def flush(self) -> str:
        text = self._tok.decode(self._ids)
        new = text[len(self._emitted):] if text.startswith(self._emitted) else ""
        self._emitted = text
        return new


class HFTokenizer:
    """Wraps ``tokenizers.Tokenizer`` loaded from a ``tokenizer.json``.

    Needs the optional ``tokenizers`` package. ``encode`` does not let the
    tokenizer add special tokens itself; BOS/EOS are added here from
    ``bos_id``/``eos_id``.
    """

    def __init__(self, path: PathLike, bos_id: Optional[int] = None, eos_id: Optional[int] = None,
                 vocab_size: Optional[int] = None) -> None:
        path = Path(path)
        try:
            from tokenizers import Tokenizer as _HFTok
        except ImportError:
            raise ModelFormatError(
                f"{path}: reading tokenizer.json needs the optional 'tokenizers' package (pip install tokenizers)"
            ) from None
        try:
            self._tok = _HFTok.from_file(str(path))
        except Exception as e:
            raise ModelFormatError(f"{path}: could not read tokenizer.json ({e})") from e
        self.source = str(path)

        def find(*names: str) -> Optional[int]:
            for n in names:
                i = self._tok.token_to_id(n)
                if i is not None:
                    return int(i)
            return None

        self.bos_id = int(bos_id) if bos_id is not None else (find("<s>", "<|begin_of_text|>", "<bos>") or BOS_ID)
        self.eos_id = int(eos_id) if eos_id is not None else (find("</s>", "<|end_of_text|>", "<eos>") or EOS_ID)
        self.vocab_size = int(vocab_size) if vocab_size is not None else int(self._tok.get_vocab_size(with_added_tokens=True))

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, source={self.source!r})"

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> List[int]:
        """Ids from ``tokenizers`` plus BOS/EOS as requested."""
        ids = list(self._tok.encode(text, add_special_tokens=False).ids)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens skipped."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def stream_decoder(self) -> _PrefixDiffStream:
        """A fresh incremental decoder (re-decodes the whole prefix each step)."""
        return _PrefixDiffStream(self)


def load_hf_tokenizer(directory: PathLike, hf_config: Mapping[str, Any], vocab_size: int) -> Any:
    """Pick the tokenizer of a Hugging Face style model directory.

    Order: a ``"lpu_tokenizer": {"type": "byte"}`` entry in ``config.json``
    gives :class:`ByteTokenizer`; else ``tokenizer.json`` gives
    :class:`HFTokenizer`; else a model whose ``vocab_size`` is 259 is taken to
    be byte-level (:class:`ByteTokenizer`); else :class:`ModelFormatError`
    names the missing ``tokenizer.json``.
    """
    directory = Path(directory)
    spec = hf_config.get("lpu_tokenizer")
    if isinstance(spec, Mapping) and spec.get("type") == "byte":
        return ByteTokenizer(vocab_size=vocab_size, dummy_prefix=bool(spec.get("dummy_prefix", True)))
    tj = directory / "tokenizer.json"
    if tj.is_file():
        return HFTokenizer(tj, hf_config.get("bos_token_id"), hf_config.get("eos_token_id"), vocab_size)
    if vocab_size == 256 + BYTE_OFFSET:
        return ByteTokenizer(vocab_size=vocab_size)
    raise ModelFormatError(
        f"{tj}: file not found (the model's vocab_size {vocab_size} is not the byte-level 259, "
        "so a tokenizer.json is needed)"
    )

