"""The units of a character language model: the 256 byte values, or the characters of
its training text (id 0 for characters the text lacked)."""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = "\ufffd"  # char units: id 0, for characters the training text lacked


@dataclass(frozen=True)
class Units:
    """The LM's vocabulary: bytes, or a list of characters (id 0 = unknown)."""

    kind: str
    chars: tuple[str, ...] = ()
    encoding: str = "utf-8"

    @classmethod
    def fit(cls, kind: str, raw: bytes, encoding: str) -> Units:
        if kind == "byte":
            return cls("byte", encoding=encoding)
        text = raw.decode(encoding)
        return cls("char", (UNKNOWN, *sorted(set(text) - {UNKNOWN})), encoding)

    @property
    def size(self) -> int:
        return 256 if self.kind == "byte" else len(self.chars)

    def encode_raw(self, raw: bytes, encoding: str | None = None) -> list[int]:
        """Ids of file contents: byte units take the bytes as they are; char units
        decode them (with ``encoding``, default the training text's)."""
        if self.kind == "byte":
            return list(raw)
        return self.encode(raw.decode(encoding or self.encoding))

    def encode(self, text: str) -> list[int]:
        if self.kind == "byte":
            return list(text.encode(self.encoding, errors="replace"))
        index = {c: i for i, c in enumerate(self.chars)}
        return [index.get(c, 0) for c in text]

    def decode(self, ids: list[int]) -> str:
        if self.kind == "byte":
            return bytes(ids).decode(self.encoding, errors="replace")
        return "".join(self.chars[i] for i in ids)

    def state(self) -> dict:
        return {"kind": self.kind, "chars": list(self.chars), "encoding": self.encoding}

    @classmethod
    def from_state(cls, state: dict) -> Units:
        return cls(state["kind"], tuple(state["chars"]), state["encoding"])
