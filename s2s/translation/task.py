"""Translation as a task of the training engine (``s2s.training.task``).

It reads the parallel corpus, trains the tokenizers (or takes them from the run's
checkpoint or the distillation teacher), builds the ``Seq2Seq`` model (optionally
from a char LM, ``model.charlm``), and hands the engine length-bucketed batches, their
loss (``s2s.translation.objective``) and a validation score: corpus BLEU of the
validation set decoded greedily or by beam search, with the per-token loss and chrF.
"""

from __future__ import annotations

import logging
import math

import torch

from s2s import config as config_mod
from s2s.config import Config
from s2s.data.corpus import collate, encode_corpus, epoch_batches, fit_tokenizers, round_up
from s2s.data.files import lines_sha1, load_split
from s2s.data.tokenize import SPECIALS, save_tokenizers
from s2s.decoding.translate import translate_lines
from s2s.errors import ConfigError, DataError
from s2s.nn.fused import TokenLoss
from s2s.nn.seq2seq import Seq2Seq, build_model
from s2s.training import distributed
from s2s.training.runfolder import check_same_data
from s2s.training.schedules import teacher_forcing
from s2s.training.task import Run
from s2s.translation import checkpoint
from s2s.translation.objective import batch_loss, validation_loss
from s2s.translation.scores import score
from s2s.translation.transfer import from_charlm

log = logging.getLogger(__name__)


class TranslationTask:
    """Sentence pairs in, a ``Seq2Seq`` model out; scored by validation BLEU."""

    kind = "seq2seq"
    metric, metric_key, higher_is_better = "BLEU", "bleu", True
    unit = "tokens"
    parse = staticmethod(config_mod.from_dict)

    def __init__(self, cfg: Config):
        self.cfg = cfg

    # ------------------------------------------------------------------ set-up
    def prepare(self, run: Run, payload: dict | None) -> Seq2Seq:
        cfg, d = self.cfg, self.cfg.data
        self.run = run
        train_ds = load_split(d, "train")
        if len(train_ds) == 0:
            raise DataError(f"training set is empty: {d.train}")
        self.data_sha1 = lines_sha1(train_ds["src"], train_ds["tgt"])
        valid_ds = load_split(d, "valid")
        self.src_tok, self.tgt_tok = self._tokenizers(run, payload, train_ds)
        self.train_corpus = encode_corpus(
            train_ds,
            self.src_tok,
            self.tgt_tok,
            reverse_source=d.reverse_source,
            max_len=d.max_len,
            drop_empty=True,
            long_pairs=d.long_pairs,
            name="train",
        )
        if len(self.train_corpus) == 0:
            raise DataError(
                f"training set is empty after dropping empty and over-long pairs: {d.train}"
            )
        self.valid_corpus = encode_corpus(
            valid_ds, self.src_tok, self.tgt_tok, reverse_source=d.reverse_source, name="valid"
        )
        self.valid_src = list(valid_ds["src"])
        self.valid_ref = list(valid_ds["tgt"])
        self._check_data()
        self.model = build_model(
            cfg.model, src_vocab=self.src_tok.vocab_size, tgt_vocab=self.tgt_tok.vocab_size
        ).to(run.device)
        if (
            cfg.model.charlm or cfg.model.charlm_decoder or cfg.model.charlm_backward
        ) and payload is None:
            from_charlm(self.model, cfg.model, self.src_tok, self.tgt_tok)
        self.teacher = self._load_teacher() if cfg.train.distill.teacher else None
        self.token_loss = TokenLoss(cfg.train.compile, run.device)
        self.model.decoder.compile_steps = self.token_loss.compiled
        return self.model

    def _tokenizers(self, run: Run, payload: dict | None, train_ds):
        """From the checkpoint when resuming, from the teacher when distilling, else
        trained on the training set (by rank 0, which sends them to the others)."""
        cfg, dist = self.cfg, run.dist
        if payload is not None:
            return checkpoint.tokenizers_of(payload)
        if cfg.train.distill.teacher:  # a student reads and writes its teacher's tokens
            toks = checkpoint.tokenizers_of(checkpoint.load(cfg.train.distill.teacher))
            if dist.main:
                save_tokenizers(*toks, run.out)
            return toks
        if not dist.main:  # rank 0 trains them
            states = distributed.broadcast(dist, None)
            return checkpoint.tokenizers_of({"tokenizers": states})
        src_tok, tgt_tok = fit_tokenizers(cfg.data, train_ds)
        save_tokenizers(src_tok, tgt_tok, run.out)
        distributed.broadcast(dist, checkpoint.tokenizer_states(src_tok, tgt_tok))
        return src_tok, tgt_tok

    def _check_data(self) -> None:
        """Refuse what would train without a signal: a validation set of blank lines, a
        vocabulary of only the special symbols (every token <unk>); log the sizes."""
        d = self.cfg.data
        if not any(s.strip() and t.strip() for s, t in zip(self.valid_src, self.valid_ref)):
            raise DataError(f"validation set has only empty or blank lines: {d.valid}")
        for side, tok in (("source", self.src_tok), ("target", self.tgt_tok)):
            if tok.vocab_size <= len(SPECIALS):
                raise DataError(
                    f"the {side} vocabulary holds only the {tok.vocab_size} special symbols, "
                    "so every token would be <unk>: raise data.tokenizer.vocab_size or lower "
                    "data.tokenizer.min_freq"
                )
        if d.batch_unit == "tokens":
            costs = self.train_corpus.costs()  # as batches count them
            over = sum(round_up(c, d.shape_multiple) > d.batch_size for c in costs)
            if over:
                log.warning(
                    "%d training pair(s) longer than data.batch_size (%d tokens): each is a "
                    "batch of its own, over that size",
                    over,
                    d.batch_size,
                )
        log.info(
            "train %d pairs, valid %d pairs, vocab src %d tgt %d",
            len(self.train_corpus),
            len(self.valid_corpus),
            self.src_tok.vocab_size,
            self.tgt_tok.vocab_size,
        )

    def _load_teacher(self) -> Seq2Seq:
        path = self.cfg.train.distill.teacher
        teacher = checkpoint.load_for_translation(path)
        if teacher.tgt_tok.vocabulary() != self.tgt_tok.vocabulary():
            raise ConfigError(
                f"train.distill.teacher {path}: its target vocabulary differs from this run's"
            )
        if teacher.src_tok.vocabulary() != self.src_tok.vocabulary():
            raise ConfigError(
                f"train.distill.teacher {path}: its source tokenizer differs from this run's"
            )
        if teacher.config.data.reverse_source != self.cfg.data.reverse_source:
            raise ConfigError(
                f"train.distill.teacher {path} has data.reverse_source "
                f"{teacher.config.data.reverse_source}, this run "
                f"{self.cfg.data.reverse_source}: it would read the sources backwards"
            )
        model = teacher.model.to(self.run.device).eval()
        for param in model.parameters():
            param.requires_grad_(False)
        return model

    # ------------------------------------------------------------------ training
    def epoch(self, epoch: int) -> list[list[int]]:
        return epoch_batches(self.train_corpus, self.cfg.data, self.cfg.train.seed, epoch)

    def batch(self, indices: list[int]):
        return collate(self.train_corpus, indices, self.cfg.data.shape_multiple).to(self.run.device)

    def teacher_prob(self, step: int) -> float:
        ss = self.cfg.train.scheduled_sampling
        return teacher_forcing(step, decay=ss.decay, k=ss.k, c=ss.c, minimum=ss.minimum)

    def loss(self, batch, step: int) -> torch.Tensor:
        t = self.cfg.train
        return batch_loss(
            self.model,
            batch,
            t.label_smoothing,
            teacher_prob=self.teacher_prob(step),
            sample=t.scheduled_sampling.sample,
            parallel=t.scheduled_sampling.mode == "parallel",
            teacher=self.teacher,
            temperature=t.distill.temperature,
            distill_weight=t.distill.weight,
            token_loss=self.token_loss,
            sampled=0 if 0 < t.sampled_softmax_until <= step else t.sampled_softmax,
        )

    def train_fields(self, step: int, loss: float) -> dict:
        return {"loss": loss, "teacher_prob": self.teacher_prob(step)}

    def row_normed(self) -> list[torch.Tensor]:
        """Max-norm rows: every embedding and the output layer."""
        rows = [m.weight for m in self.model.modules() if isinstance(m, torch.nn.Embedding)]
        return rows + [self.model.decoder.output.weight]

    def after_update(self, applied: bool) -> None:
        pass  # nothing is carried from one update to the next

    def end_epoch(self) -> None:
        pass  # nor from one epoch to the next

    # ------------------------------------------------------------------ validation
    def evaluate(self) -> tuple[float, dict]:
        t = self.cfg.train
        loss = validation_loss(self.model, self.valid_corpus, self.run.device)
        hyps = translate_lines(
            self.model,
            self.src_tok,
            self.tgt_tok,
            self.valid_src,
            reverse_source=self.cfg.data.reverse_source,
            batch_size=t.valid_batch_size,
            max_output_ratio=t.max_output_ratio,
            beam=t.valid_beam if t.valid_beam > 1 else None,
            device=self.run.device,
            packed=False,  # packing raised the run's peak memory (docs/speed.md)
        )
        scores = score(hyps, self.valid_ref)
        fields = {"loss": loss, "ppl": math.exp(min(loss, 50.0))}
        return scores.bleu, fields | {"bleu": scores.bleu, "chrf": scores.chrf}

    def describe(self, f: dict) -> str:
        return f"loss {f['loss']:.3f} ppl {f['ppl']:.2f} BLEU {f['bleu']:.2f} chrF {f['chrf']:.2f}"

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        tokenizers = checkpoint.tokenizer_states(self.src_tok, self.tgt_tok)
        return {"tokenizers": tokenizers, "data_sha1": self.data_sha1}

    def restore(self, payload: dict) -> None:  # the tokenizers came in prepare()
        check_same_data(payload, self.data_sha1, self.run.out)
