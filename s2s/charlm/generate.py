"""Sampling text from a char LM, one unit at a time."""

from __future__ import annotations

import torch

from s2s.data.units import Units
from s2s.nn.charlm import CharLM


@torch.no_grad()
def sample(
    model: CharLM,
    units: Units,
    *,
    prime: str = "",
    length: int = 200,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    backward: bool = False,
) -> str:
    """``length`` units drawn one at a time from softmax(logits / temperature) after
    reading ``prime`` (temperature 0: the argmax). Returns the generated text only;
    ``backward`` (a backward LM): the text that comes before ``prime``, drawn from its
    last unit to its first, returned in reading order."""
    model.eval()
    device = model.output.weight.device
    ids = units.encode(prime)[:: -1 if backward else 1]
    ids = ids or [ord("\n") if units.kind == "byte" else 0]
    state = None
    logits, state = model(torch.tensor([ids], device=device), state)
    out = []
    for _ in range(length):
        last = logits[0, -1].float()
        if temperature <= 0:
            nxt = int(last.argmax())
        else:
            probs = torch.softmax(last / temperature, dim=-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]], device=device), state)
    return units.decode(out[::-1] if backward else out)
