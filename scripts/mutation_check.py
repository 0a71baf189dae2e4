"""Mutation check: does the test suite notice when a feature silently breaks?

Each mutant below breaks one feature of s2s the way a careless edit would (a dropped
term, an off-by-one, an option not passed on). The script copies the tracked files of
this checkout to a scratch folder, applies one mutant at a time, and runs the tests
named for it (fail-fast); a mutant those tests let through is run against the whole
suite before it counts as survived. It prints one line per mutant and a table of
killed / survived / equivalent per module. Results go to a JSON-lines file as they
come, so an interrupted check resumes where it stopped.

Usage: scripts/mutation_check.sh [--only ID ...] [--list] [--fresh] [--quick]
(``--quick``: no whole-suite rerun of survivors). Not part of ``make test``: it takes
about half an hour on 2 cores. docs/testing.md explains the mutants judged equivalent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    id: str
    feature: str
    edits: tuple[tuple[str, str, str], ...]  # (file, original text, replacement)
    tests: tuple[str, ...]
    equivalent: str = ""  # why this mutant cannot change a result (judged by hand)
    module: str = field(default="")

    def where(self) -> str:
        return self.module or self.edits[0][0]


def m(id, feature, file, old, new, tests, equivalent="", more=()):
    edits = ((file, old, new), *more)
    return Mutant(id, feature, edits, tuple(f"tests/{t}" for t in tests.split()), equivalent)


A, C, INIT, E, D = (
    "s2s/nn/attention.py",
    "s2s/nn/cells.py",
    "s2s/nn/init.py",
    "s2s/nn/encoder.py",
    "s2s/nn/decoder.py",
)
MO, S, EN, TR, CLI = (
    "s2s/nn/seq2seq.py",
    "s2s/decoding/search.py",
    "s2s/decoding/ensemble.py",
    "s2s/decoding/translate.py",
    "s2s/cli/translation.py",
)
DA, TO, TT, SC, CO = (
    "s2s/data/corpus.py",
    "s2s/data/tokenize.py",
    "s2s/translation/task.py",
    "s2s/training/schedules.py",
    "s2s/experiments/compare.py",
)
LT, NC, CK, DB, DI = (
    "s2s/charlm/task.py",
    "s2s/nn/charlm.py",
    "s2s/translation/checkpoint.py",
    "s2s/experiments/debug.py",
    "s2s/training/distributed.py",
)
EV, PB, TF, OB = (
    "s2s/translation/scores.py",
    "s2s/charlm/probe.py",
    "s2s/translation/transfer.py",
    "s2s/translation/objective.py",
)
EG, UP, PR = "s2s/training/engine.py", "s2s/training/update.py", "s2s/training/progress.py"
RE = "s2s/experiments/report.py"
FI, RF, IO = "s2s/data/files.py", "s2s/training/runfolder.py", "s2s/cli/io.py"
SA = "s2s/nn/sampled.py"
UNIT = "test_formulas.py test_model.py test_cells.py"
KEYS = "test_config_keys.py"

MUTANTS = [
    # ------------------------------------------------------------------ attention
    m(
        "attention-additive-no-tanh",
        "additive attention's tanh",
        A,
        "return self.v(torch.tanh(q + prepared.unsqueeze(1))).squeeze(-1)",
        "return self.v(q + prepared.unsqueeze(1)).squeeze(-1)",
        UNIT,
    ),
    m(
        "attention-additive-no-query",
        "additive attention reads the query",
        A,
        "q = self.query_proj(query).unsqueeze(2)",
        "q = 0 * self.query_proj(query).unsqueeze(2)",
        UNIT,
    ),
    m(
        "attention-no-mask",
        "attention never on padding",
        A,
        'scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))',
        "scores = scores",
        UNIT,
    ),
    m(
        "attention-softmax-dim",
        "attention normalised over the source",
        A,
        "weights = torch.softmax(scores, dim=-1)",
        "weights = torch.softmax(scores, dim=1)",
        UNIT,
    ),
    m(
        "attention-general-as-dot",
        "general attention's W",
        A,
        "return keys if self.key_proj is None else self.key_proj(keys)",
        "return keys if self.key_proj is None or keys.shape[-1] == 2 else self.key_proj(keys)",
        UNIT,
    ),
    m(
        "attention-dot-scaled",
        "dot score unscaled (Luong)",
        A,
        "return torch.bmm(query, prepared.transpose(1, 2))",
        "return torch.bmm(query, prepared.transpose(1, 2)) / query.shape[-1] ** 0.5",
        UNIT,
    ),
    # ------------------------------------------------------------------ cells / stacks
    m(
        "stack-dense-is-plain",
        "dense-residual stacking",
        C,
        "                o = o + inputs\n",
        "                o = o\n",
        UNIT,
    ),
    m(
        "stack-residual-no-add",
        "residual stacking's add",
        C,
        "                o = o + _data(inp)\n",
        "                o = o\n",
        UNIT,
    ),
    m(
        "stack-skip-top-only",
        "skip stacking sums every layer's output",
        C,
        "            inp = _with_data(inp, outputs)",
        "            inp = inp",
        UNIT,
    ),
    m(
        "stack-skip-no-input",
        "skip stacking feeds the input to every layer",
        C,
        "torch.cat([_data(rnn_in), _data(x)], dim=-1)",
        "torch.cat([_data(rnn_in), 0 * _data(x)], dim=-1)",
        UNIT,
    ),
    m(
        "stack-no-dropout-between",
        "dropout between layers",
        C,
        "rnn_in = _with_data(inp, self.dropout(_data(inp))) if i > 0 else inp",
        "rnn_in = inp",
        f"{UNIT} {KEYS}",
    ),
    m(
        "cell-peephole-forget",
        "peephole on the forget gate",
        C,
        "            f = f + p_f * c\n",
        "            f = f\n",
        "test_cells.py test_debug.py",
    ),
    m(
        "cell-mlstm-sum",
        "mLSTM's multiplicative transition",
        C,
        "wh = F.linear(mx * F.linear(h, self.weight_mh), self.weight_hh)",
        "wh = F.linear(mx + F.linear(h, self.weight_mh), self.weight_hh)",
        "test_cells.py",
    ),
    m(
        "cell-layernorm-no-c",
        "layer-normalised cell state",
        C,
        "shown = self.norm_c(c_new) if self.layer_norm else c_new",
        "shown = c_new",
        "test_cells.py test_debug.py",
    ),
    m(
        "cell-variational-unmasked",
        "variational recurrent dropout mask",
        C,
        "h_new, c_new = cell.step(wx_t, mx_t, h if mask is None else h * mask, c)",
        "h_new, c_new = cell.step(wx_t, mx_t, h, c)",
        f"test_cells.py test_wiring.py {KEYS}",
    ),
    m(
        "cell-loop-backward-from-padding",
        "backward direction starts at the real end",
        C,
        "order = torch.where(order < lengths[:, None], lengths[:, None] - 1 - order, order)",
        "order = steps - 1 - order",
        "test_cells.py",
    ),
    m(
        "cell-gru-gate-swapped",
        "GRU update gate",
        C,
        "return (1 - z) * n + z * h, None",
        "return z * n + (1 - z) * h, None",
        "test_cells.py",
    ),
    # ------------------------------------------------------------------ init
    m(
        "init-forget-gate-wrong-block",
        "forget-gate bias in the f block",
        INIT,
        'param[hidden : 2 * hidden] = value if name.startswith("bias_ih") else 0.0',
        'param[0:hidden] = value if name.startswith("bias_ih") else 0.0',
        "test_model.py test_cells.py",
    ),
    m(
        "init-no-orthogonal",
        "orthogonal recurrent init",
        INIT,
        '            if hh and init_cfg.recurrent == "orthogonal":',
        "            if False:",
        f"test_cells.py {KEYS}",
    ),
    m(
        "init-xavier-fan-in",
        "Glorot's fan average",
        INIT,
        'variance_scaling_(weight, scale=1.0, mode="fan_avg", distribution="uniform")',
        'variance_scaling_(weight, scale=1.0, mode="fan_in", distribution="uniform")',
        "test_cells.py",
    ),
    m(
        "init-embedding-small",
        "embeddings drawn from U(-1, 1)",
        INIT,
        "module.weight.uniform_(-1.0, 1.0)  # fan_in of a lookup is 1",
        "module.weight.uniform_(-0.1, 0.1)",
        "test_model.py test_cells.py",
    ),
    # ------------------------------------------------------------------ encoder / decoder
    m(
        "encoder-mask-one-too-long",
        "source mask covers real tokens only",
        E,
        "< src_lengths.to(src.device)[:, None]",
        "<= src_lengths.to(src.device)[:, None]",
        UNIT,
    ),
    m(
        "encoder-final-forward-only",
        "final state of both directions",
        E,
        "[torch.cat(list(k), dim=-1) for k in (f if isinstance(f, tuple) else (f,))]",
        "[torch.cat([k[0]] * len(k), dim=-1) for k in (f if isinstance(f, tuple) else (f,))]",
        UNIT,
    ),
    m(
        "decoder-input-feeding-zero",
        "input feeding",
        D,
        "                feed = att_vec.squeeze(1)\n",
        "                feed = feed * 0\n",
        UNIT,
    ),
    m(
        "decoder-bridge-no-tanh",
        "bridge's tanh",
        D,
        "torch.tanh(lin(enc.final))",
        "lin(enc.final)",
        f"{UNIT} test_decoding.py",
    ),
    m(
        "decoder-coin-inverted",
        "scheduled sampling's coin",
        D,
        "use_gold = coins < teacher_prob",
        "use_gold = coins >= teacher_prob",
        "test_tricks.py",
    ),
    m(
        "decoder-parallel-guess-shift",
        "parallel scheduled sampling feeds the previous guess",
        D,
        "fed[:, 1:] = torch.where(use_gold[:, 1:], tgt_in[:, 1:], guess[:, :-1])",
        "fed[:, 1:] = torch.where(use_gold[:, 1:], tgt_in[:, 1:], guess[:, 1:])",
        "test_tricks.py",
    ),
    m(
        "decoder-no-output-dropout",
        "dropout on the attentional vector",
        D,
        "        return self.dropout(att_vec)\n",
        "        return att_vec\n",
        f"test_tricks.py {KEYS}",
    ),
    m(
        "decoder-combine-no-tanh",
        "h~ = tanh(W_c [h; c])",
        D,
        "return (torch.tanh(att_vec) if self.attentional_tanh else att_vec), weights",
        "return att_vec, weights",
        f"{UNIT} test_debug.py",
    ),
    m(
        "decoder-copied-bridge-no-cell",
        "the copied bridge's c",
        D,
        "c = states[:, index, 1].transpose(0, 1) if states.shape[2] == 2 else torch.zeros_like(h)",
        "c = torch.zeros_like(h)",
        "test_formulas.py",
    ),
    m(
        "feeding-linear-vector-ignored",
        "model.attentional_vector linear in the compiled input-feeding step",
        "s2s/nn/feeding.py",
        "    return torch.tanh(att_vec) if tanh else att_vec\n",
        "    return torch.tanh(att_vec)\n",
        "test_feeding.py",
    ),
    # ------------------------------------------------------------------ model builder
    m(
        "build-bridge-ignored",
        "model.bridge",
        MO,
        '        bridge=cfg.bridge_type if cfg.bridge else "none",',
        '        bridge="dense",',
        KEYS,
    ),
    m(
        "build-encoder-activation-ignored",
        "model.encoder.activation",
        MO,
        "        activation=e.activation,",
        '        activation="tanh",',
        f"test_model.py {KEYS}",
    ),
    m(
        "build-decoder-recurrent-dropout-ignored",
        "model.recurrent_dropout in the decoder",
        MO,
        "        recurrent_dropout=cfg.recurrent_dropout,\n    )\n    model = Seq2Seq(",
        "        recurrent_dropout=0.0,\n    )\n    model = Seq2Seq(",
        f"test_wiring.py {KEYS}",
    ),
    m(
        "word-dropout-in-evaluation",
        "model.word_dropout acts while training only",
        MO,
        "        if self.training and self.word_dropout > 0.0:",
        "        if self.word_dropout > 0.0:",
        "test_word_dropout.py",
    ),
    m(
        "word-dropout-drops-bos",
        "word dropout keeps the first (BOS) input",
        "s2s/nn/dropout.py",
        "    drop[:, 0] = False\n",
        "",
        "test_word_dropout.py",
    ),
    m(
        "charlm-backward-into-forward",
        "a backward char LM goes into the encoder's backward direction",
        "s2s/nn/charlm.py",
        '    return name + "_reverse"\n',
        "    return name\n",
        "test_transfer.py",
    ),
    m(
        "charlm-backward-overwrites-rows",
        "the backward LM's embedding rows do not overwrite the forward LM's",
        "s2s/translation/transfer.py",
        "embedding=None if name in has_rows else module.embedding,",
        "embedding=module.embedding,",
        "test_transfer.py",
    ),
    m(
        "charlm-embedding-from-ignored",
        "model.embedding_from copies the other LM's embedding",
        "s2s/charlm/task.py",
        "        mine.copy_(theirs)\n",
        "",
        "test_transfer.py",
    ),
    # ------------------------------------------------------------------ search
    m(
        "search-min-length-off-by-one",
        "beam search's minimum length",
        S,
        "blocked=eos if t < min_len else None",
        "blocked=eos if t < min_len - 1 else None",
        "test_search.py test_wiring.py",
    ),
    m(
        "search-gnmt-penalty",
        "GNMT length penalty",
        S,
        "return ((5.0 + lengths) / 6.0) ** alpha",
        "return ((5.0 + lengths) / 5.0) ** alpha",
        "test_search.py",
    ),
    m(
        "search-normalize-off-by-one",
        "length normalisation",
        S,
        "    if normalize:\n        return lengths",
        "    if normalize:\n        return lengths + 1",
        "test_search.py",
    ),
    m(
        "search-greedy-scores-after-eos",
        "greedy stops a sentence at EOS",
        S,
        "live = live & (token != eos) & (t + 1 < limit[rows])",
        "live = live & (t + 1 < limit[rows])",
        "test_search.py",
    ),
    m(
        "search-beam-state-not-reordered",
        "beam search follows each hypothesis' state",
        S,
        "beam_rows = (keep.unsqueeze(1) * width + parent.index_select(0, keep)).view(-1)",
        "beam_rows = (keep.unsqueeze(1) * width + torch.arange(K, device=device) % width).view(-1)",
        "test_search.py test_decoding.py test_formulas.py",
    ),
    m(
        "search-beam-eos-any-rank",
        "only the K best candidates may finish",
        S,
        "ends = ((token == eos) & (rank < K)) | at_limit",
        "ends = (token == eos) | at_limit",
        "test_search.py test_decoding.py test_formulas.py",
    ),
    m(
        "search-beam-no-early-stop",
        "early stop when no live hypothesis can win",
        S,
        'done = (fin_score[:, K - 1] > float("-inf")) | (fin_score[:, nbest - 1] >= bound)',
        'done = fin_score[:, K - 1] > float("-inf")',
        "test_search.py test_decoding.py test_formulas.py",
    ),
    m(
        "search-beam-ranks-k-tokens",
        "beam search ranks each hypothesis' K + 1 best tokens",
        S,
        "logp = step_top_log_probs(out, K + 1,",
        "logp = step_top_log_probs(out, K,",
        "test_search.py",
    ),
    m(
        "ranking-topk-misses-a-segment",
        "top-k by segments",
        "s2s/decoding/ranking.py",
        "best = parts.view(rows, segments, SEGMENT).amax(dim=-1).topk(k, dim=-1).indices",
        "best = parts.view(rows, segments, SEGMENT).amax(dim=-1).topk(max(1, k - 1), dim=-1)"
        ".indices",
        "test_search.py",
    ),
    m(
        "rank-kernel-skips-segments",
        "the C ranking kernel scans every segment whose maximum can enter the top k",
        "s2s/decoding/rank.c",
        "if (n == k && !(segmax[s] > top[k - 1])) continue;",
        "if (n == k) continue;",
        "test_native.py",
    ),
    m(
        "refine-normaliser-kept",
        "rescored bf16 log-probabilities move with the normaliser's first-order change",
        "s2s/decoding/ranking.py",
        "delta -= (values.exp() * delta).sum(dim=1, keepdim=True)",
        "pass",
        "test_refine.py",
    ),
    m(
        "refine-too-few-candidates",
        "rescoring looks beyond the k best by the rounded logits",
        "s2s/decoding/ranking.py",
        "*top_log_probs(logits, k + REFINE, blocked), k)",
        "*top_log_probs(logits, k, blocked), k)",
        "test_refine.py",
    ),
    m(
        "refine-bias-dropped",
        "rescored logits include the output layer's bias",
        "s2s/decoding/ranking.py",
        "        exact += head.bias[ids].float()",
        "        pass",
        "test_refine.py",
    ),
    m(
        "rescore-kernel-last-term",
        "the C rescoring kernel sums every product",
        "s2s/decoding/rank.c",
        "for (int64_t e = 0; e < h; e++) s += bf16_value(v[e]) * bf16_value(x[e]);",
        "for (int64_t e = 0; e < h - 1; e++) s += bf16_value(v[e]) * bf16_value(x[e]);",
        "test_refine.py",
    ),
    m(
        "rank-kernel-exp-off",
        "the C kernels' exp (the ranking's log-normaliser)",
        "s2s/runtime/native_math.h",
        "p = p * r + 5.0000001201e-1f;",
        "p = p * r + 5.01e-1f;",
        "test_native.py",
    ),
    m(
        "xent-kernel-smoothing-off",
        "the C loss kernel's gradient: label smoothing's share of every column",
        "s2s/nn/xent.c",
        "g16[j] = to_bf16(buf[j] * inv - off);",
        "g16[j] = to_bf16(buf[j] * inv);",
        "test_xent.py test_fused.py",
    ),
    m(
        "xent-kernel-bias-ignored",
        "the C loss kernel adds the output layer's bias to bf16 logits",
        "s2s/nn/xent.c",
        "float v = bf16_value(in[j]) + (bias ? bf16_value(bias[j]) : 0.0f);",
        "float v = bf16_value(in[j]);",
        "test_xent.py test_fused.py",
    ),
    m(
        "xent-add-assigns-nothing",
        "the bf16-into-float32 sum of the weight gradient's first chunk",
        "s2s/nn/xent.c",
        "for (int64_t i = begin; i < end; i++) acc[i] = bf16_value(x[i]);",
        "for (int64_t i = begin; i < end; i++) acc[i] += bf16_value(x[i]);",
        "test_xent.py test_fused.py",
    ),
    m(
        "xent-kernel-bias-gradient-unsmoothed",
        "the C loss kernel's column sums (the bias's gradient): label smoothing's share",
        "s2s/nn/xent.c",
        "for (int64_t j = 0; j < cols; j++) cs[j] += buf[j] * inv - off;",
        "for (int64_t j = 0; j < cols; j++) cs[j] += buf[j] * inv;",
        "test_xent.py",
    ),
    m(
        "feedloop-forget-gate-gradient",
        "the input-feeding loop's C backward: the forget gate's gradient takes the last c",
        "s2s/nn/feedloop.c",
        "st(dgates, g0 + H + j, dcc * pb[j] * f * (1.0f - f), bf);",
        "st(dgates, g0 + H + j, dcc * cb[j] * f * (1.0f - f), bf);",
        "test_feedloop.py",
    ),
    m(
        "feedloop-key-gradient-unweighted",
        "the input-feeding loop's C backward: the keys' gradient weighted by the attention",
        "s2s/nn/feedloop.c",
        "dk[d] += ws * db[d];",
        "dk[d] += db[d];",
        "test_feedloop.py",
    ),
    m(
        "feedloop-padding-attended",
        "the input-feeding loop's C attention: padded source positions masked",
        "s2s/nn/feedloop.c",
        "acc += neg[b * S + s];",
        "acc += 0.0f;",
        "test_feedloop.py",
    ),
    m(
        "feedloop-query-gradient-from-the-last-h",
        "the input-feeding loop: the query weight's gradient by one product over positions",
        "s2s/nn/feedloop.py",
        "d_w_q = DQ.view(rows, -1).t() @ Y.view(rows, -1)[:, :H]",
        "d_w_q = DQ.view(rows, -1).t() @ X[:T].view(rows, -1)[:, N:]",
        "test_feedloop.py",
    ),
    m(
        "clip-in-step-factor-kept",
        "clipping inside fused Adam's step: the factor is dropped after the step",
        "s2s/training/update.py",
        "self.optimizer.grad_scale = None  # (clipping's, where _clip_norm set one)",
        "pass",
        "test_formulas.py",
    ),
    m(
        "clip-in-step-factor-inverted",
        "clipping inside fused Adam's step: its grad_scale divides by the factor",
        "s2s/training/update.py",
        "self.optimizer.grad_scale = ((norm + 1e-6) / limit).float()",
        "self.optimizer.grad_scale = (limit / (norm + 1e-6)).float()",
        "test_formulas.py",
    ),
    m(
        "fused-loss-gradient-unscaled",
        "the output layer's loss: its gradients scaled (in place) by the incoming one",
        "s2s/nn/fused.py",
        "grad.mul_(grad_total.to(grad.dtype))",
        "grad",
        "test_fused.py",
    ),
    m(
        "ranking-last-columns-misplaced",
        "top-k by segments: the last, shorter segment",
        "s2s/decoding/ranking.py",
        "torch.where(seg < k, chosen, index - k * SEGMENT + main)",
        "torch.where(seg < k, chosen, index - k * SEGMENT)",
        "test_search.py",
    ),
    m(
        "ranking-head-block-dropped",
        "the output layer a block of rows at a time",
        "s2s/decoding/ranking.py",
        "for block in features.split(HEAD_ROWS))",
        "for block in features.split(HEAD_ROWS)[:-1])",
        "test_search.py",
    ),
    m(
        "packed-head-bias-dropped",
        "float32 decoding with a packed output layer",
        "s2s/decoding/packed.py",
        "packed_product(output.weight, output.bias, float32=True)",
        "packed_product(output.weight, None, float32=True)",
        "test_decoding.py",
    ),
    m(
        "shortlist-ranked-upside-down",
        "a lexical shortlist: the likeliest target pieces per source piece",
        "s2s/decoding/shortlist.py",
        "order = torch.sort(-score, stable=True).indices",
        "order = torch.sort(score, stable=True).indices",
        "test_shortlist.py",
    ),
    m(
        "shortlist-ids-not-mapped",
        "a lexical shortlist: search's choices mapped back to vocabulary ids",
        "s2s/decoding/ranking.py",
        "return values, ids if vocab is None else vocab[ids]",
        "return values, ids",
        "test_shortlist.py",
    ),
    m(
        "shortlist-blocked-column",
        "a lexical shortlist: no EOS before the minimum length",
        "s2s/decoding/ranking.py",
        "blocked = _column(vocab, blocked)",
        "blocked = blocked",
        "test_shortlist.py",
    ),
    m(
        "shortlist-bf16-rows-not-cast",
        "a lexical shortlist: the bf16 copy's rows",
        "s2s/decoding/translate.py",
        "torch.bfloat16 if bf16 else torch.float32",
        "torch.float32",
        "test_shortlist.py",
    ),
    m(
        "shortlist-vocabulary-digest-unchecked",
        "a lexical shortlist of another model's vocabulary refused",
        "s2s/decoding/shortlist.py",
        "if self.digest and self.digest != vocab_digest(src_tok, tgt_tok):",
        "if False:",
        "test_shortlist.py",
    ),
    m(
        "run-folder-force-deletes-nothing-aside",
        "--force moves the earlier run's files aside",
        "s2s/training/runfolder.py",
        "        kept = set_aside(out)\n",
        "        kept = None\n",
        "test_cli.py",
    ),
    m(
        "run-folder-failed-start-blocks",
        "a start that saved no checkpoint does not block the corrected command",
        "s2s/training/runfolder.py",
        "        if cfg_path.is_file() and not _trained(out):",
        "        if False:",
        "test_cli.py",
    ),
    m(
        "compare-changed-data-not-redecoded",
        "compare decodes a run again when its evaluation data changed",
        "s2s/experiments/compare.py",
        '    if same and "data_sha1" in result:',
        '    if False and "data_sha1" in result:',
        "test_compare.py",
    ),
    m(
        "packed-linear-bias-dropped",
        "decoding's bf16 copy with packed linear layers",
        "s2s/decoding/packed.py",
        'self.packed, self.bias, "none"',
        'self.packed, None, "none"',
        "test_decoding.py",
    ),
    m(
        "gate-table-bias-dropped",
        "search's decoder step with the LSTM's input product as a table",
        "s2s/decoding/gates.py",
        "lstm.weight_ih_l0, lstm.bias_ih_l0)",
        "lstm.weight_ih_l0)",
        "test_gates.py",
    ),
    m(
        "gate-table-cell-swapped",
        "search's decoder step with the LSTM's input product as a table",
        "s2s/decoding/gates.py",
        "cy = (f * c[0]).add_(i * g)",
        "cy = (i * c[0]).add_(f * g)",
        "test_gates.py",
    ),
    m(
        "gate-table-unused",
        "translate searches through the gate table where it applies",
        "s2s/decoding/translate.py",
        "stepper = TableStepper(model) if table_steps(model) else model",
        "stepper = model",
        "test_gates.py",
    ),
    m(
        "cli-quick-exit-unflushed",
        "s2s translate and score exit at once, their output flushed",
        "s2s/cli/__init__.py",
        "        for stream in (sys.stdout, sys.stderr):",
        "        for stream in ():",
        "test_cli.py",
    ),
    m(
        "cli-collector-left-frozen",
        "s2s translate freezes what it loaded while decoding",
        CLI,
        "        gc.unfreeze()",
        "        pass",
        "test_wiring.py",
    ),
    m(
        "decoder-grouped-queries-misassigned",
        "the beams of a sentence share its encoder output",
        D,
        "query = top.reshape(enc.states.shape[0], -1, top.shape[-1])",
        "query = top.reshape(-1, enc.states.shape[0], top.shape[-1]).transpose(0, 1)",
        "test_decoding.py",
    ),
    m(
        "search-max-length-plus-one",
        "output length cap",
        S,
        "return (src_lengths.float() * ratio).long() + extra",
        "return (src_lengths.float() * ratio).long() + extra + 1",
        "test_search.py",
    ),
    # ------------------------------------------------------------------ ensembles, translate
    m(
        "ensemble-first-member-only",
        "ensemble averages all members",
        EN,
        "logits=logp.mean(0)",
        "logits=logp[0]",
        "test_decoding.py",
    ),
    m(
        "cli-ensemble-first-model-only",
        "s2s translate with several checkpoints",
        CLI,
        "model = first.model if len(members) == 1 else Ensemble([m.model for m in members])",
        "model = first.model",
        "test_wiring.py test_decoding.py",
    ),
    m(
        "cli-length-penalty-dropped",
        "--length-penalty",
        CLI,
        "        alpha=args.length_penalty,",
        "        alpha=0.0,",
        "test_wiring.py",
    ),
    m(
        "cli-min-length-dropped",
        "--min-length",
        CLI,
        "        min_len=args.min_length,",
        "        min_len=0,",
        "test_wiring.py test_decoding.py",
    ),
    m(
        "cli-max-length-ratio-dropped",
        "--max-length-ratio",
        CLI,
        "max_output_ratio=args.max_length_ratio or first.config.train.max_output_ratio,",
        "max_output_ratio=first.config.train.max_output_ratio,",
        "test_wiring.py",
    ),
    m(
        "cli-nbest-dropped",
        "--nbest",
        CLI,
        "        nbest=args.nbest,",
        "        nbest=1,",
        "test_wiring.py test_decoding.py",
    ),
    m(
        "translate-alignment-not-unreversed",
        "alignments in original source order",
        TR,
        "            i = n_src - 1 - i",
        "            i = i",
        "test_decoding.py test_cli.py",
    ),
    # ------------------------------------------------------------------ data
    m(
        "data-reverse-source-ignored",
        "data.reverse_source in training and translation",
        DA,
        "return (seq[::-1] if reverse else seq) + [EOS]",
        "return seq + [EOS]",
        "test_data.py test_wiring.py",
    ),
    m(
        "data-long-target-not-truncated",
        "long_pairs: truncate cuts the target",
        DA,
        "s, t = s[:max_len], t[:max_len]  # both keep their sentence's start",
        "s, t = s[:max_len], t",
        "test_data.py test_reliability.py",
    ),
    m(
        "data-reversed-source-cut-at-its-end",
        "a reversed source keeps its sentence's first tokens when cut",
        DA,
        "keep_src.append(as_source(s, reverse_source))",
        "keep_src.append(as_source(s[::-1] if reverse_source else s, False))",
        "test_data.py",
        more=(
            (
                DA,
                "            s, t = s[:max_len], t[:max_len]  # both keep their sentence's start",
                "            s, t = (s[::-1][:max_len][::-1] if reverse_source else s[:max_len]), "
                "t[:max_len]",
            ),
        ),
    ),
    m(
        "data-empty-needs-both-sides",
        "a pair empty on one side is dropped",
        DA,
        "if drop_empty and (not s_line.strip() or not t_line.strip()):",
        "if drop_empty and (not s_line.strip() and not t_line.strip()):",
        "test_data.py test_reliability.py",
    ),
    m(
        "data-eos-not-counted",
        "target tokens count the EOS",
        DA,
        "n_tokens=sum(len(t) + 1 for t in tgt),",
        "n_tokens=sum(len(t) for t in tgt),",
        "test_tricks.py test_formulas.py",
    ),
    m(
        "data-token-budget-off-by-one",
        "token budget of a batch",
        DA,
        'cost = new_longest * (len(current) + 1) if unit == "tokens" else len(current) + 1',
        'cost = new_longest * len(current) if unit == "tokens" else len(current) + 1',
        f"test_data.py {KEYS}",
    ),
    m(
        "data-epoch-ignores-seed",
        "batches shuffled by seed and epoch",
        DA,
        "rng = random.Random(seed * 1_000_003 + epoch)",
        "rng = random.Random(epoch)",
        f"test_data.py {KEYS}",
    ),
    m(
        "data-train-limit-ignored",
        "data.train_limit",
        FI,
        '    limit = {"train": cfg.train_limit, "valid": cfg.valid_limit}.get(split, 0)',
        '    limit = {"valid": cfg.valid_limit}.get(split, 0)',
        f"test_data.py {KEYS}",
    ),
    m(
        "tokenize-always-joint",
        "data.tokenizer.joint",
        TO,
        "    if cfg.joint:",
        "    if True:",
        f"test_wiring.py {KEYS}",
    ),
    m(
        "tokenize-min-freq-ignored",
        "data.tokenizer.min_freq",
        TO,
        "(s for s, c in counts.items() if c >= cfg.min_freq)",
        "(s for s, c in counts.items())",
        f"test_data.py {KEYS}",
    ),
    # ------------------------------------------------------------------ loss and trainer
    m(
        "trainer-label-smoothing-zero",
        "the trainer passes label smoothing",
        TT,
        "            t.label_smoothing,\n",
        "            0.0,\n",
        "test_wiring.py test_tricks.py",
    ),
    m(
        "trainer-teacher-prob-one",
        "the trainer feeds the scheduled teacher probability",
        TT,
        "teacher_prob=self.teacher_prob(step),",
        "teacher_prob=1.0,",
        "test_wiring.py test_tricks.py",
    ),
    m(
        "trainer-drops-distillation-teacher",
        "the trainer passes the distillation teacher",
        TT,
        "teacher=self.teacher,",
        "teacher=None,",
        "test_wiring.py test_tricks.py",
    ),
    m(
        "loss-distill-no-t-squared",
        "distillation's T^2",
        OB,
        "return (1.0 - distill_weight) * loss + distill_weight * temperature**2 * soft",
        "return (1.0 - distill_weight) * loss + distill_weight * soft",
        "test_tricks.py",
    ),
    m(
        "loss-counts-padding",
        "padding excluded from the loss",
        OB,
        "    mask = batch.tgt_out != PAD\n",
        "    mask = batch.tgt_out >= PAD\n",
        f"{UNIT} test_tricks.py",
    ),
    m(
        "trainer-loss-norm-ignored",
        "train.loss_norm",
        UP,
        'per = "n_tokens" if self.s.loss_norm == "tokens" else "n_sequences"',
        'per = "n_tokens"',
        "test_tricks.py",
    ),
    m(
        "trainer-clip-value-ignored",
        "train.clip_grad_value",
        UP,
        "                torch.nn.utils.clip_grad_value_(params, s.clip_grad_value)",
        "                pass",
        "test_tricks.py test_formulas.py",
    ),
    m(
        "trainer-l1-is-l2",
        "L1 penalty",
        UP,
        "penalty = sum(w.abs().sum() for w in self.model.parameters() if w.dim() >= 2)",
        "penalty = sum(w.pow(2).sum() for w in self.model.parameters() if w.dim() >= 2)",
        "test_tricks.py",
    ),
    m(
        "trainer-max-norm-skips-output",
        "max-norm on the output layer",
        TT,
        "return rows + [self.model.decoder.output.weight]",
        "return rows",
        f"test_tricks.py {KEYS}",
    ),
    m(
        "trainer-ema-no-warmup",
        "EMA decay warm-up",
        UP,
        "decay = min(self.s.ema_decay, (1 + step) / (10 + step))",
        "decay = self.s.ema_decay",
        "test_tricks.py",
    ),
    m(
        "trainer-plateau-never-decays",
        "plateau decay",
        EG,
        "p.plateau_lr = max(s.min_lr, p.plateau_lr * s.lr_decay)",
        "p.plateau_lr = max(s.min_lr, p.plateau_lr)",
        f"test_tricks.py {KEYS}",
    ),
    m(
        "trainer-early-stopping-one-late",
        "early stopping",
        PR,
        "if s.early_stopping and p.stale_validations >= s.early_stopping:",
        "if s.early_stopping and p.stale_validations > s.early_stopping:",
        "test_wiring.py",
    ),
    m(
        "trainer-max-epochs-ignored",
        "train.max_epochs",
        PR,
        "if s.max_epochs and p.epoch >= s.max_epochs:",
        "if False:",
        f"test_wiring.py {KEYS}",
    ),
    m(
        "trainer-accumulate-ignored",
        "train.accumulate",
        EG,
        "p, share = self.progress, self.settings.accumulate * self.dist.world",
        "p, share = self.progress, self.dist.world",
        "test_tricks.py test_distributed.py",
    ),
    m(
        "trainer-validation-not-reversed",
        "validation decodes reversed sources",
        TT,
        "reverse_source=self.cfg.data.reverse_source,",
        "reverse_source=False,",
        "test_wiring.py",
    ),
    m(
        "trainer-resume-rng-lost",
        "resume restores the RNG",
        EG,
        "            checkpoint.restore_rng(saved, self.device)\n            if self.dist.active",
        "            if self.dist.active",
        "test_cli.py test_reliability.py",
    ),
    m(
        "trainer-charlm-encoder-only",
        "char-LM transfer into the decoder",
        TF,
        'into = ("encoder", "decoder") if m.charlm_into == "both" else (m.charlm_into,)',
        'into = ("encoder",)',
        "test_wiring.py test_charlm.py",
    ),
    # ------------------------------------------------------------------ schedules
    m(
        "schedule-warmup-off-by-one",
        "linear warm-up",
        SC,
        "return (step + 1) / warmup_steps",
        "return step / warmup_steps",
        "test_schedules.py test_tricks.py",
    ),
    m(
        "schedule-inverse-sigmoid",
        "inverse-sigmoid decay",
        SC,
        "eps = max(minimum, k / (k + math.exp(min(step / k, 700.0))))",
        "eps = max(minimum, k / (k + math.exp(min(step * k, 700.0))))",
        "test_schedules.py",
    ),
    m(
        "schedule-step-continuous",
        "step decay in whole periods",
        SC,
        "lr = max(min_lr, base * factor ** (since // max(1, step_size)))",
        "lr = max(min_lr, base * factor ** (since / max(1, step_size)))",
        "test_schedules.py",
    ),
    m(
        "schedule-cyclic-phase",
        "triangular cycle",
        SC,
        "distance = abs(position - 2 * cycle + 1)",
        "distance = abs(position - 2 * cycle)",
        "test_schedules.py",
    ),
    m(
        "schedule-linear-sampling-late",
        "linear sampling decay",
        SC,
        "eps = max(minimum, k - c * step)",
        "eps = max(minimum, k - c * (step + 1))",
        "test_schedules.py test_tricks.py",
    ),
    # ------------------------------------------------------------------ compare
    m(
        "compare-pairs-with-first-seed",
        "paired test against the same seed's baseline",
        CO,
        "base = [hyps[(sweep.baseline, s)] for s in sweep.seeds]",
        "base = [hyps[(sweep.baseline, sweep.seeds[0])] for s in sweep.seeds]",
        "test_compare.py",
    ),
    m(
        "compare-population-std",
        "sample standard deviation",
        RE,
        '"bleu_std": statistics.stdev(bleu) if len(bleu) > 1 else None,  # one seed: none',
        '"bleu_std": statistics.pstdev(bleu),',
        "test_compare.py",
    ),
    m(
        "compare-beam-ignored",
        "sweep beam",
        CO,
        "beam=dec.beam if dec.beam > 1 else None,",
        "beam=None,",
        "test_compare.py",
    ),
    m(
        "compare-length-penalty-ignored",
        "a decoding's length penalty",
        CO,
        "alpha=dec.length_penalty,",
        "alpha=0.0,",
        "test_compare.py",
    ),
    m(
        "compare-stale-results-kept",
        "a retrained run's old results are cleared",
        CO,
        "        clear_results(run.folder, run.cfg)\n",
        "",
        "test_compare.py",
    ),
    m(
        "compare-trains-through-a-link",
        "a link to another sweep's run is dropped before training",
        CO,
        "    if run.folder.is_symlink() and not trained(run.folder, run.cfg):",
        "    if False:",
        "test_compare.py",
    ),
    m(
        "compare-bonferroni-ignored",
        "Bonferroni threshold",
        RE,
        'return pooled[report["significance"]] < report["alpha"] / max(1, report["comparisons"])',
        'return pooled[report["significance"]] < report["alpha"]',
        "test_compare.py",
    ),
    # ------------------------------------------------------------------ char LM
    m(
        "lm-state-not-carried",
        "TBPTT carries the state",
        LT,
        "        self.next = detach(state)",
        "        self.next = None",
        "test_charlm.py",
    ),
    m(
        "lm-nats-not-bits",
        "validation in bits",
        LT,
        "        bits = nll / count / math.log(2)",
        "        bits = nll / count",
        "test_charlm.py",
    ),
    m(
        "lm-clip-ignored",
        "char-LM gradient clipping",
        UP,
        "limit = self.s.clip_grad_norm\n",
        "limit = 0.0\n",
        f"test_charlm.py {KEYS}",
    ),
    m(
        "lm-probe-inverted",
        "probe predictions",
        PB,
        "scores.append(float((model.predict(x[test]) == y[test]).mean()))",
        "scores.append(float((model.predict(x[test]) != y[test]).mean()))",
        "test_charlm.py",
    ),
    m(
        "charlm-no-embedding-rows",
        "char-LM embedding rows transferred",
        NC,
        "            embedding.weight[row] = lm.embedding.weight[ids[0]]\n",
        "            pass\n",
        "test_charlm.py test_wiring.py",
    ),
    m(
        "charlm-features-bottom-layer",
        "features from the top layer",
        NC,
        "        top = finals[-1]\n",
        "        top = finals[0]\n",
        "test_charlm.py",
    ),
    # ------------------------------------------------------------------ the rest
    m(
        "checkpoint-average-wrong-count",
        "checkpoint averaging",
        CK,
        "averaged[name] = (total / len(payloads)).to(value.dtype)",
        "averaged[name] = (total / (len(payloads) + 1)).to(value.dtype)",
        "test_decoding.py",
    ),
    m(
        "lr-find-flattest-slope",
        "lr-find's steepest descent",
        DB,
        "suggestion = lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]",
        "suggestion = lrs[1 + max(range(len(slopes)), key=slopes.__getitem__)]",
        "test_debug.py",
    ),
    m(
        "debug-source-not-shuffled",
        "s2s debug source pairs each target with another source",
        DB,
        "    shift = [(i + offset) % n for i in range(n)]",
        "    shift = list(range(n))",
        "test_debug.py",
    ),
    m(
        "distributed-shard-overlap",
        "each rank its share of the batches",
        DI,
        "return chunk[ctx.rank :: ctx.world]",
        "return chunk[ctx.rank :]",
        "test_distributed.py",
    ),
    m(
        "score-published-cased",
        "published scoring lowercases",
        EV,
        'bleu = sacrebleu.BLEU(lowercase=True, tokenize="none", force=True)',
        'bleu = sacrebleu.BLEU(tokenize="none", force=True)',
        "test_cli.py",
    ),
    # ------------------------------------------------------------------ twenty-ninth session
    m(
        "engine-epoch-end-stop-unsaved",
        "a stop signal at an epoch's end saves last.pt",
        EG,
        '                    self.save("last.pt")  # a signal after the epoch\'s last step\n',
        "                    pass\n",
        "test_engine.py",
    ),
    m(
        "runfolder-lowered-limit-accepted",
        "a limit lowered below a trained run is refused",
        "s2s/training/runfolder.py",
        "    past = _past_limit(cfg, out) if differs else None\n",
        "    past = None\n",
        "test_cli.py",
    ),
    m(
        "translate-output-over-input",
        "translate's outputs are checked against its inputs",
        CLI,
        "    _check_outputs(args)\n",
        "",
        "test_bad_options.py",
    ),
    m(
        "compare-failure-stops-sweep",
        "a failed run does not stop the other runs",
        CO,
        '            failed.append(f"{run.variant} seed {run.seed}: {err}")\n'
        "            continue\n",
        "            raise\n",
        "test_compare.py",
    ),
    # ------------------------------------------------------------------ thirtieth session
    m(
        "files-wide-text-read-as-latin1",
        "UTF-16 text read in another encoding is refused",
        FI,
        "    wide = _wide_encoding(raw, encoding)\n",
        "    wide = None\n",
        "test_files.py",
    ),
    m(
        "files-gzip-by-suffix",
        "gzip known by its bytes",
        FI,
        "        if raw.startswith(GZIP_MAGIC):",
        '        if path.suffix == ".gz":',
        "test_files.py",
    ),
    m(
        "tokenize-unk-dropped",
        "char and word outputs keep <unk>",
        TO,
        "if i == UNK or i >= len(SPECIALS)",
        "if i >= len(SPECIALS)",
        "test_data.py",
    ),
    m(
        "runfolder-own-files-unprotected",
        "no command writes over a run's own files",
        IO,
        "    if kind:\n",
        "    if False:\n",
        "test_shortlist.py test_bad_options.py",
    ),
    m(
        "score-first-reference-only",
        "several references",
        EV,
        "    sets = refs if refs and isinstance(refs[0], list) else [refs]",
        "    sets = [refs[-1]] if refs and isinstance(refs[0], list) else [refs]",
        "test_cli.py",
    ),
    m(
        "debug-gradcheck-plain-only",
        "gradcheck through the chunked loss",
        DB,
        "    for way in (contextlib.nullcontext(), chunked_loss()):",
        "    for way in (contextlib.nullcontext(),):",
        "test_debug.py",
    ),
    m(
        "engine-best-every-validation",
        "best.pt only on an improvement",
        EG,
        '        if improved:\n            self.save("best.pt")',
        '        if True:\n            self.save("best.pt")',
        "test_engine.py",
    ),
    m(
        "engine-validates-raw-weights",
        "validation scores the moving average",
        EG,
        "            with self.updater.averaged_weights():\n                score, fields",
        "            with torch.no_grad():\n                score, fields",
        "test_tricks.py",
    ),
    m(
        "engine-plateau-halves",
        "plateau decay by train.lr_decay",
        EG,
        "p.plateau_lr * s.lr_decay)",
        "p.plateau_lr * 0.5)",
        "test_tricks.py",
    ),
    m(
        "encoder-no-embedding-dropout",
        "the encoder's embedding dropout",
        E,
        "        self.embedding_dropout = Dropout(embedding_dropout)",
        "        self.embedding_dropout = Dropout(0.0)",
        "test_tricks.py",
    ),
    m(
        "cells-mask-per-step",
        "one recurrent-dropout mask per sequence in the decoder's loops",
        D,
        "            with one_mask_per_sequence(self.rnn):\n"
        "                for t in range(tgt_in.shape[1]):\n                    inp",
        "            if True:\n                for t in range(tgt_in.shape[1]):\n"
        "                    inp",
        "test_cells.py",
    ),
    m(
        "sampled-no-correction",
        "the sampled softmax's drawn columns stand for the rest",
        SA,
        "    offset[n:] = math.log((vocab_size - n) / (k - n))\n",
        "",
        "test_sampled.py",
    ),
    m(
        "sampled-first-columns",
        "the sampled softmax's columns drawn at random",
        SA,
        "others[torch.randperm(others.numel(), device=device)[: k - n]]",
        "others[: k - n]",
        "test_sampled.py",
    ),
    m(
        "sampled-in-validation",
        "validation over the whole vocabulary",
        OB,
        "        train = sampled and model.training\n",
        "        train = sampled\n",
        "test_sampled.py",
    ),
    m(
        "sampled-until-ignored",
        "the whole output layer from train.sampled_softmax_until on",
        TT,
        "sampled=0 if 0 < t.sampled_softmax_until <= step else t.sampled_softmax,",
        "sampled=t.sampled_softmax,",
        KEYS,
    ),
    m(
        "sampled-not-passed",
        "train.sampled_softmax reaches the loss",
        TT,
        "            sampled=0 if 0 < t.sampled_softmax_until <= step else t.sampled_softmax,\n",
        "",
        KEYS,
    ),
]


# --------------------------------------------------------------------------- running


def scratch_copy(work: Path) -> None:
    """The tracked files of this checkout (with uncommitted edits) in ``work``."""
    if work.exists():
        shutil.rmtree(work)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)


def environment(work: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(work), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    env.setdefault("S2S_DATA", str((ROOT / ".." / "shared" / "data").resolve()))
    return env


def pytest(
    work: Path, tests: list[str], timeout: int, every: bool = False
) -> tuple[int, float, str]:
    """Run ``tests`` in the copy (fail-fast unless ``every``); (exit code, seconds, the
    first failing test, or with ``every`` all of them)."""
    fail_fast = [] if every else ["-x"]
    command = [sys.executable, "-m", "pytest", *fail_fast, "-q", "-p", "no:cacheprovider", *tests]
    start = time.time()
    try:
        done = subprocess.run(
            command,
            cwd=work,
            env=environment(work),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return -1, time.time() - start, "timeout"
    lines = [x for x in done.stdout.splitlines() if x.startswith(("FAILED", "ERROR"))]
    if every:
        return done.returncode, time.time() - start, "\n".join(x.split(" - ")[0] for x in lines)
    return done.returncode, time.time() - start, lines[0] if lines else done.stdout[-200:]


def apply(work: Path, mutant: Mutant) -> dict[Path, str]:
    originals = {}
    for file, old, new in mutant.edits:
        path = work / file
        current = path.read_text(encoding="utf-8")
        originals.setdefault(path, current)  # before this mutant's first edit
        count = current.count(old)
        if count != 1:
            raise SystemExit(f"mutant {mutant.id}: its text occurs {count} times in {file}")
        path.write_text(current.replace(old, new), encoding="utf-8")
    return originals


def check_texts(work: Path) -> None:
    ids = [x.id for x in MUTANTS]
    assert len(ids) == len(set(ids)), "mutant ids repeat"
    for mutant in MUTANTS:
        originals = apply(work, mutant)
        for path, text in originals.items():
            path.write_text(text, encoding="utf-8")


def run_one(work: Path, mutant: Mutant, quick: bool) -> dict:
    originals = apply(work, mutant)
    try:
        code, seconds, why = pytest(work, list(mutant.tests), timeout=1200)
        scope = "named"
        if code == 0 and not quick:
            code, more, why = pytest(work, ["tests"], timeout=1800)
            seconds += more
            scope = "suite"
    finally:
        for path, text in originals.items():
            path.write_text(text, encoding="utf-8")
    if code != 0:
        verdict = "killed"
    else:
        verdict = "equivalent" if mutant.equivalent else "survived"
    return {
        "id": mutant.id,
        "module": mutant.where(),
        "feature": mutant.feature,
        "verdict": verdict,
        "scope": scope,
        "seconds": round(seconds, 1),
        "by": why if code != 0 else "",
        "claimed_equivalent": bool(mutant.equivalent),
    }


def report(results: list[dict]) -> str:
    modules: dict[str, dict[str, int]] = {}
    for r in results:
        row = modules.setdefault(r["module"], {"killed": 0, "survived": 0, "equivalent": 0})
        row[r["verdict"]] += 1
    lines = [f"{'module':24} {'killed':>7} {'survived':>9} {'equivalent':>11}"]
    for module in sorted(modules):
        row = modules[module]
        lines.append(f"{module:24} {row['killed']:7d} {row['survived']:9d} {row['equivalent']:11d}")
    total = {
        k: sum(row[k] for row in modules.values()) for k in ("killed", "survived", "equivalent")
    }
    lines.append(
        f"{'total':24} {total['killed']:7d} {total['survived']:9d} {total['equivalent']:11d}"
    )
    scored = total["killed"] + total["survived"]
    if scored:
        lines.append(
            f"killed {total['killed']} of {scored} non-equivalent mutants "
            f"({100 * total['killed'] / scored:.1f}%); {total['equivalent']} judged equivalent"
        )
    wrong = [r["id"] for r in results if r["claimed_equivalent"] and r["verdict"] == "killed"]
    if wrong:
        lines.append(f"claimed equivalent but killed (fix the claim): {', '.join(wrong)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="mutant ids to run")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--quick", action="store_true", help="no whole-suite rerun of survivors")
    parser.add_argument(
        "--explain", action="store_true", help="list every named test each mutant fails (no record)"
    )
    parser.add_argument("--work", default="/tmp/s2s-mutation", help="scratch copy")
    parser.add_argument("--results", default=str(ROOT / "runs" / "mutation" / "results.jsonl"))
    args = parser.parse_args()
    if args.list:
        for x in MUTANTS:
            print(f"{x.id:42} {x.where():18} {x.feature}")
        print(f"{len(MUTANTS)} mutants")
        return 0
    work, results_path = Path(args.work), Path(args.results)
    scratch_copy(work)
    check_texts(work)
    probe = subprocess.run(
        [sys.executable, "-c", "import s2s; print(s2s.__file__)"],
        cwd=work,
        env=environment(work),
        capture_output=True,
        text=True,
        check=True,
    )
    if not probe.stdout.strip().startswith(str(work)):
        raise SystemExit(f"the scratch copy is not what imports: {probe.stdout}")
    if args.explain:
        for mutant in [x for x in MUTANTS if not args.only or x.id in args.only]:
            originals = apply(work, mutant)
            try:
                _, seconds, failed = pytest(work, list(mutant.tests), 1800, every=True)
            finally:
                for path, text in originals.items():
                    path.write_text(text, encoding="utf-8")
            print(f"{mutant.id} ({seconds:.0f} s): {failed or 'no named test fails'}", flush=True)
        return 0
    results_path.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and results_path.exists():
        results_path.unlink()
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            r = json.loads(line)
            done[r["id"]] = r
    chosen = [x for x in MUTANTS if not args.only or x.id in args.only]
    todo = [x for x in chosen if x.id not in done]
    if todo:
        tests = sorted({t for x in todo for t in x.tests})
        code, seconds, why = pytest(work, tests, timeout=1800)
        if code != 0:
            raise SystemExit(f"the unmutated copy fails its tests ({why}); fix that first")
        print(f"unmutated copy: the named tests pass ({seconds:.0f} s)", flush=True)
    results = []
    for mutant in chosen:
        if mutant.id in done:
            r = done[mutant.id]
        else:
            r = run_one(work, mutant, args.quick)
            with open(results_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(r) + "\n")
        results.append(r)
        print(
            f"{r['verdict'].upper():10} {r['id']:42} {r['module']:18} {r['seconds']:6.1f}s "
            f"{r['by'][:90]}",
            flush=True,
        )
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
