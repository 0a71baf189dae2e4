"""Translation of raw text (level 5): tokenize, batch by length, search, detokenize.

Output order equals input order, one line per line; an empty (or all-whitespace) input
line gives an empty output line without reaching the model.
"""

from __future__ import annotations

import torch

from s2s.data import length_batches, source_ids
from s2s.search import greedy, max_lengths
from s2s.tokenize import BOS, EOS, PAD, Tokenizer


def _clean(line: str) -> str:
    # Control characters (other than tab) carry no meaning for translation.
    return "".join(ch if ch == "\t" or ch.isprintable() else " " for ch in line).strip()


@torch.no_grad()
def translate_lines(
    model,
    src_tok: Tokenizer,
    tgt_tok: Tokenizer,
    lines: list[str],
    *,
    reverse_source: bool,
    batch_size: int = 64,
    max_output_ratio: float = 2.0,
    max_src_len: int = 250,
    device: torch.device | str = "cpu",
) -> list[str]:
    was_training = model.training
    model.eval()
    cleaned = [_clean(line) for line in lines]
    todo = [i for i, line in enumerate(cleaned) if line]
    ids = source_ids(src_tok, [cleaned[i] for i in todo], reverse_source)
    # Very long lines are cut to the length the model can reasonably handle.
    ids = [seq[:max_src_len] if len(seq) > max_src_len else seq for seq in ids]
    outputs = [""] * len(lines)
    order = length_batches(
        [len(s) for s in ids], batch_size=batch_size, unit="sentences", pool=1, rng=None
    )
    for batch in order:
        seqs = [torch.tensor(ids[j]) for j in batch]
        src = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=PAD)
        lengths = torch.tensor([len(s) for s in seqs])
        hyp = greedy(
            model,
            src.to(device),
            lengths,
            bos=BOS,
            eos=EOS,
            max_len=max_lengths(lengths, max_output_ratio),
        )
        for j, text in zip(batch, tgt_tok.decode(hyp.tokens)):
            outputs[todo[j]] = text.replace("\n", " ")
    model.train(was_training)
    return outputs
