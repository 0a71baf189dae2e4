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
    ids = ids or units.encode("\n")  # no prime: as after a line (a char LM that never
    # saw a newline reads its first unit)
    state = None
    logits, state = model(torch.tensor([ids], device=device), state)
    out = []
    for _ in range(length):
        last = logits[0, -1].float()
        scaled = last / temperature if temperature > 0 else last
        if temperature <= 0 or not bool(torch.isfinite(scaled).all()):  # 0, or so near it
            nxt = int(last.argmax())  # that the division overflows: the argmax
        else:
            probs = torch.softmax(scaled, dim=-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]], device=device), state)
    return units.decode(out[::-1] if backward else out)
