#!/usr/bin/env python
"""A copy of a checkpoint that an older s2s (the one running this script) can load: config
keys the older code does not know are dropped and values it does not accept are mapped
(precision ``auto`` -> ``fp32``, which is what that code decoded in). The weights and
tokenizers are copied as they are. Used by scripts/bench_speed.sh to decode the same
weights with the code before the speed work.

Usage: OLD_VENV/bin/python scripts/old_checkpoint.py NEW.pt OLD.pt
"""

import dataclasses
import sys

import torch

from s2s import config


def known(data: dict, reference: dict) -> dict:
    """``data`` restricted to the keys of ``reference``, recursively."""
    kept = {}
    for key, value in data.items():
        if key not in reference:
            continue
        ref = reference[key]
        kept[key] = (
            known(value, ref) if isinstance(value, dict) and isinstance(ref, dict) else value
        )
    return kept


def main() -> None:
    source, target = sys.argv[1:3]
    payload = torch.load(source, map_location="cpu", weights_only=True)
    reference = dataclasses.asdict(config.Config())
    cfg = known(payload["config"], reference)
    if cfg["train"].get("precision") not in config.PRECISIONS:
        cfg["train"]["precision"] = "fp32"
    config.from_dict(cfg)  # fails here, with the older code's message, if it still cannot load
    payload["config"] = cfg
    for key in ("optimizer", "rng"):  # not needed to translate
        payload.pop(key, None)
    torch.save(payload, target)


if __name__ == "__main__":
    main()
