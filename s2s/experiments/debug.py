"""Debugging a model that does not learn: the checks to run first.

- ``overfit``: train on one small batch with regularisation off; a correct model
  drives the loss to near zero, a broken one (masking, shifting, wiring) does not.
- ``gradcheck``: autograd gradients against central finite differences on a tiny
  float64 copy of the model, per parameter.
- ``lr_find``: the learning-rate range test (Smith 2017): the loss while the rate
  grows exponentially, with a suggested rate.
- ``source_check``: a trained model's validation loss with each sentence's own source
  against the sources shuffled among the sentences; a model that hardly uses its source
  (a decoder started from a language model, misaligned training pairs) shows a small
  difference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from s2s.config import Config
from s2s.data.corpus import Batch, Corpus, collate, encode_corpus, fit_tokenizers
from s2s.data.files import load_split
from s2s.errors import DataError, S2SError
from s2s.nn import fused
from s2s.nn.seq2seq import Seq2Seq, build_model
from s2s.training.optim import make_optimizer
from s2s.training.runfolder import resolve_device
from s2s.translation.checkpoint import load_for_translation
from s2s.translation.objective import batch_loss, validation_loss

log = logging.getLogger(__name__)


def _without_regularisation(cfg: Config) -> Config:
    model = dataclasses.replace(
        cfg.model, dropout=0.0, embedding_dropout=0.0, recurrent_dropout=0.0, word_dropout=0.0
    )
    train = dataclasses.replace(cfg.train, label_smoothing=0.0, weight_decay=0.0, l1=0.0)
    return dataclasses.replace(cfg, model=model, train=train)


def _tokenized(cfg: Config):
    """Tokenizers trained on the training side and the training corpus as ids, its
    empty and over-long pairs handled as training handles them (``data.long_pairs``)."""
    data = load_split(cfg.data, "train")
    if len(data) == 0:
        raise DataError(f"training set is empty: {cfg.data.train}")
    src_tok, tgt_tok = fit_tokenizers(cfg.data, data)
    corpus = encode_corpus(
        data,
        src_tok,
        tgt_tok,
        reverse_source=cfg.data.reverse_source,
        max_len=cfg.data.max_len,
        drop_empty=True,
        long_pairs=cfg.data.long_pairs,
        name="train",
    )
    return corpus, src_tok, tgt_tok


@dataclass
class OverfitResult:
    losses: list[float]  # per step, per target token
    reached: bool


def overfit(cfg: Config, *, sentences: int = 32, steps: int = 500, target: float = 0.05):
    """Train on one batch of ``sentences`` pairs until its loss per token is below
    ``target`` or ``steps`` updates are done (dropout and label smoothing off)."""
    cfg = _without_regularisation(cfg)
    torch.manual_seed(cfg.train.seed)
    corpus, src_tok, tgt_tok = _tokenized(cfg)
    if len(corpus) < sentences:
        raise DataError(f"need {sentences} usable training pairs, found {len(corpus)}")
    device = resolve_device(cfg.train.device)
    batch = collate(corpus, list(range(sentences))).to(device)
    model = build_model(cfg.model, src_vocab=src_tok.vocab_size, tgt_vocab=tgt_tok.vocab_size)
    model.to(device).train()
    optimizer = make_optimizer(model, cfg.train)
    losses = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, batch) / batch.n_tokens
        loss.backward()
        if cfg.train.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0:
            log.info("overfit step %d loss %.4f", step, losses[-1])
        if losses[-1] < target:
            break
    return OverfitResult(losses=losses, reached=losses[-1] < target)


# --------------------------------------------------------------------------- gradcheck


def tiny_copy(cfg: Config) -> Config:
    """The same architecture at toy sizes, regularisation off."""
    m = _without_regularisation(cfg).model
    enc = dataclasses.replace(m.encoder, hidden_size=3)
    dec = dataclasses.replace(m.decoder, hidden_size=6 if m.encoder.bidirectional else 3)
    model = dataclasses.replace(m, embedding_size=4, attention_size=3, encoder=enc, decoder=dec)
    return dataclasses.replace(cfg, model=model)


def toy_batch(vocab: int, generator: torch.Generator) -> Batch:
    src = torch.randint(4, vocab, (2, 4), generator=generator)
    src[1, 3] = 0
    tgt = torch.randint(4, vocab, (2, 3), generator=generator)
    tgt_in = torch.cat([torch.full((2, 1), 2), tgt], dim=1)
    tgt_out = torch.cat([tgt, torch.full((2, 1), 3)], dim=1)
    tgt_out[1, 2:] = torch.tensor([3, 0])
    tgt_in[1, 3] = 0
    return Batch(
        src=src,
        src_lengths=torch.tensor([4, 3]),
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        n_tokens=int((tgt_out != 0).sum()),
    )


@contextlib.contextmanager
def chunked_loss(chunk: int = 2):
    """The output layer and loss CHUNK rows at a time, by their own backward (the path
    of training-sized batches, ``s2s.nn.fused``), also for a toy batch."""
    saved = fused.PLAIN_ROWS, fused.CHUNK
    fused.PLAIN_ROWS, fused.CHUNK = 0, chunk
    try:
        yield
    finally:
        fused.PLAIN_ROWS, fused.CHUNK = saved


def gradcheck(cfg: Config, *, vocab: int = 9, eps: float = 1e-4, seed: int = 0) -> dict:
    """Relative difference ||g_autograd - g_numeric|| / (||g_autograd|| + ||g_numeric||)
    per parameter, with central differences (f(w + eps) - f(w - eps)) / 2 eps; the loss
    with the config's label smoothing, its gradient both ways training takes it (the
    whole logits, and a few rows at a time), the larger difference of the two."""
    small, smoothing = tiny_copy(cfg), cfg.train.label_smoothing
    torch.manual_seed(seed)
    model: Seq2Seq = build_model(small.model, src_vocab=vocab, tgt_vocab=vocab).double()
    model.eval()  # no dropout (all off anyway); gradients work the same
    with torch.no_grad():  # weights of order 1 (zero-initialised ones included), so
        for param in model.parameters():  # that no gradient is too small to compare
            param.uniform_(-0.5, 0.5)
    batch = toy_batch(vocab, torch.Generator().manual_seed(seed))
    grads = []
    for way in (contextlib.nullcontext(), chunked_loss()):
        model.zero_grad()
        with way:
            batch_loss(model, batch, smoothing).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    result = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            numeric = torch.zeros_like(param)
            flat, grad = param.view(-1), numeric.view(-1)
            for i in range(flat.numel()):
                keep = float(flat[i])
                flat[i] = keep + eps
                up = float(batch_loss(model, batch, smoothing))
                flat[i] = keep - eps
                down = float(batch_loss(model, batch, smoothing))
                flat[i] = keep
                grad[i] = (up - down) / (2 * eps)
            result[name] = max(_difference(g[name], numeric) for g in grads)
    return result


def _difference(auto: torch.Tensor | None, numeric: torch.Tensor) -> float:
    auto = auto if auto is not None else torch.zeros_like(numeric)
    return float((auto - numeric).norm()) / max(float(auto.norm() + numeric.norm()), 1e-7)


def gradcheck_variants(cfg: Config, every: bool) -> list[tuple[str, str, dict]]:
    """``gradcheck`` for the config's model, or for every cell kind x attention kind
    (cells set on both sides): (cell, attention, differences) each."""
    from s2s.config import ATTENTIONS, CELLS

    variants = [(cfg.model.encoder.cell, cfg.model.attention)]
    if every:
        variants = [(c, a) for c in CELLS for a in ATTENTIONS]
    results = []
    for cell, attention in variants:
        model = dataclasses.replace(
            cfg.model,
            attention=attention,
            encoder=dataclasses.replace(cfg.model.encoder, cell=cell),
            decoder=dataclasses.replace(
                cfg.model.decoder, cell=cell if every else cfg.model.decoder.cell
            ),
        )
        results.append((cell, attention, gradcheck(dataclasses.replace(cfg, model=model))))
    return results


# --------------------------------------------------------------------------- lr-find


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float


def lr_find(
    cfg: Config,
    *,
    start: float = 1e-6,
    end: float = 1.0,
    steps: int = 100,
    smoothing: float = 0.9,
) -> RangeTest:
    """Raise the learning rate from ``start`` to ``end`` geometrically over ``steps``
    updates on training batches; stop when the smoothed loss exceeds 4x its minimum.
    Suggests the rate where the smoothed loss falls fastest (steepest negative slope
    against log lr), a common reading of the plot."""
    from s2s.data.corpus import epoch_batches

    torch.manual_seed(cfg.train.seed)
    corpus, src_tok, tgt_tok = _tokenized(cfg)
    device = resolve_device(cfg.train.device)
    model = build_model(cfg.model, src_vocab=src_tok.vocab_size, tgt_vocab=tgt_tok.vocab_size)
    model.to(device).train()
    optimizer = make_optimizer(model, cfg.train)
    batches = epoch_batches(corpus, cfg.data, cfg.train.seed, 0)
    factor = (end / start) ** (1.0 / max(1, steps - 1))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    for step in range(steps):
        lr = start * factor**step
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        batch = collate(corpus, batches[step % len(batches)]).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, batch, cfg.train.label_smoothing) / batch.n_tokens
        loss.backward()
        if cfg.train.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
        optimizer.step()
        value = loss.item()
        avg = smoothing * avg + (1 - smoothing) * value
        smoothed = avg / (1 - smoothing ** (step + 1))  # bias-corrected
        if not math.isfinite(smoothed):
            break
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > 4 * best and step > 10:
            break
    slopes = [
        (losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
        for i in range(1, len(lrs) - 1)
    ]
    if not slopes:
        raise S2SError(
            f"lr-find: {len(lrs)} usable steps (the loss was not finite after them), too few "
            "to suggest a learning rate; start lower or clip gradients"
        )
    suggestion = lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]
    return RangeTest(lrs=lrs, losses=losses, suggestion=suggestion)


def plot_range_test(result: RangeTest, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggestion, color="red", linestyle="--", label=f"{result.suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass
class SourceCheck:
    own: float  # validation loss per target token, each sentence with its own source
    shuffled: float  # the same targets, each with another sentence's source
    pairs: int

    @property
    def worth(self) -> float:
        """What the source is worth: the loss it removes, in nats per target token."""
        return self.shuffled - self.own

    @property
    def share(self) -> float:
        """The share of the loss with shuffled sources that the true sources remove."""
        return self.worth / self.shuffled if self.shuffled > 0 else 0.0


def source_check(checkpoint: str, *, split: str = "valid", limit: int = 0, seed: int = 0):
    """``checkpoint``'s loss on its config's ``split`` (the first ``limit`` pairs; 0:
    all) with the true sources and with the sources shifted by a seeded random offset
    among the pairs, so that no target keeps its own (``SourceCheck``)."""
    loaded = load_for_translation(checkpoint)
    data = load_split(loaded.config.data, split)
    if limit:
        data = data.select(range(min(len(data), limit)))
    corpus = encode_corpus(
        data,
        loaded.src_tok,
        loaded.tgt_tok,
        reverse_source=loaded.config.data.reverse_source,
        drop_empty=True,
        name=split,
    )
    n = len(corpus)
    if n < 2:
        raise DataError(f"source check: the {split} split has {n} usable pairs; 2 at least")
    offset = int(torch.randint(1, n, (), generator=torch.Generator().manual_seed(seed)))
    shift = [(i + offset) % n for i in range(n)]
    shuffled = Corpus(src=[corpus.src[i] for i in shift], tgt=corpus.tgt)
    device = torch.device("cpu")
    own = validation_loss(loaded.model, corpus, device)
    return SourceCheck(own=own, shuffled=validation_loss(loaded.model, shuffled, device), pairs=n)
