"""The translation objective: how a batch of sentence pairs becomes a loss.

Cross-entropy over the target tokens (padding excluded), with label smoothing,
scheduled sampling (the teacher probability and mode go to the model) and word-level
knowledge distillation from a teacher model; and the per-token validation loss.
"""

from __future__ import annotations

import torch

from s2s.data.corpus import Batch, Corpus, collate, length_batches
from s2s.data.tokenize import PAD
from s2s.nn.fused import TokenLoss, linear_cross_entropy, pad_rows
from s2s.nn.sampled import column_layer, sample_columns, smoothing_correction
from s2s.nn.seq2seq import Seq2Seq

EAGER = TokenLoss("never")
VALID_LOSS_TOKENS = 2048


def bucket_rows(rows: torch.Tensor, target: torch.Tensor):
    """Rows padded to a multiple of ROW_BUCKET (``pad_rows``), their targets ignored (-100)."""
    padded = pad_rows(rows)
    extra = padded.shape[0] - rows.shape[0]
    return padded, torch.cat([target, target.new_full((extra,), -100)]) if extra else target


def batch_loss(
    model: Seq2Seq,
    batch: Batch,
    label_smoothing: float = 0.0,
    *,
    teacher_prob: float = 1.0,
    sample: bool = False,
    parallel: bool = False,
    teacher: Seq2Seq | None = None,
    temperature: float = 1.0,
    distill_weight: float = 0.0,
    token_loss: TokenLoss = EAGER,
    sampled: int = 0,
) -> torch.Tensor:
    """Summed cross-entropy over the target tokens of a batch (padding excluded); with a
    ``teacher``, mixed with the cross-entropy to its softened distribution.
    ``token_loss``: eager or compiled (``s2s.nn.fused``), the same value. ``sampled``:
    in training, the output layer over that many of its columns (``s2s.nn.sampled``;
    0 = all of them)."""
    features = model(
        batch.src,
        batch.src_lengths,
        batch.tgt_in,
        teacher_prob=teacher_prob,
        sample=sample,
        parallel=parallel,
    )  # (batch, tgt_len, out)
    mask = batch.tgt_out != PAD
    rows, target = features[mask], batch.tgt_out[mask]  # none spent on padding
    distilling = teacher is not None and distill_weight > 0.0
    if not distilling:  # the output layer and loss a chunk of rows at a time
        rows, target = bucket_rows(rows, target)
        output = model.decoder.output
        train = sampled and model.training
        columns = sample_columns(target, output.out_features, sampled) if train else None
        if columns is None:
            return linear_cross_entropy(rows, output, target, label_smoothing, token_loss)
        layer, target = column_layer(output, columns), columns.target
        loss = linear_cross_entropy(rows, layer, target, label_smoothing, token_loss)
        if label_smoothing:
            loss = loss + label_smoothing * smoothing_correction(rows, target, layer, columns)
        return loss
    logits = model.logits(rows)
    loss = token_loss(logits, target, label_smoothing)  # the softmax in float32
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    with torch.no_grad():
        t_features = teacher(batch.src, batch.src_lengths, batch.tgt_in)
        target = torch.softmax(teacher.logits(t_features[mask]).to(logits.dtype) / temperature, -1)
    # Hinton et al. 2015, §2: soft-target gradients scale as 1/T^2, hence the T^2.
    soft = -(target * torch.log_softmax(logits / temperature, dim=-1)).sum()
    return (1.0 - distill_weight) * loss + distill_weight * temperature**2 * soft


@torch.no_grad()
def validation_loss(
    model: Seq2Seq, corpus: Corpus, device: torch.device, tokens_per_batch: int = VALID_LOSS_TOKENS
) -> float:
    """Mean cross-entropy per target token, in batches of about ``tokens_per_batch``
    padded tokens, whatever decoding's batch size: the float32 logits of a batch (tokens x
    vocabulary) add to a run's peak memory, and batches of 256 sentences raised it by
    about 0.3 GB (docs/speed.md)."""
    was_training = model.training
    model.eval()
    lengths = corpus.costs()
    total, tokens = 0.0, 0
    batches = length_batches(lengths, batch_size=tokens_per_batch, unit="tokens", pool=1, rng=None)
    for idx in batches:
        batch = collate(corpus, idx).to(device)
        total += float(batch_loss(model, batch))
        tokens += batch.n_tokens
    model.train(was_training)
    return total / max(1, tokens)
