"""Word dropout on the decoder's inputs (``model.word_dropout``, Bowman et al. 2016)."""

import torch
from test_model import model_cfg, toy_batch

from s2s.data.tokenize import BOS, PAD, UNK
from s2s.nn.dropout import drop_words
from s2s.nn.seq2seq import build_model


def test_drop_words_keeps_bos_and_padding_and_drops_about_p():
    ids = torch.randint(4, 50, (400, 30))
    ids[:, 0] = BOS
    ids[::3, 20:] = PAD
    before = ids.clone()
    torch.manual_seed(1)
    out = drop_words(ids, 0.25, unk=UNK, pad=PAD)
    assert torch.equal(ids, before)  # the batch's own tensor is left as it is
    assert torch.equal(out[:, 0], ids[:, 0])
    assert torch.equal(out[ids == PAD], ids[ids == PAD])
    words = (ids != PAD) & (torch.arange(30) > 0)
    dropped = (out != ids) & words
    assert torch.equal(out[dropped], torch.full_like(out[dropped], UNK))
    rate = dropped.sum().item() / words.sum().item()
    assert abs(rate - 0.25) < 0.02
    torch.manual_seed(1)
    assert torch.equal(drop_words(ids, 0.25, unk=UNK, pad=PAD), out)  # seeded


def test_word_dropout_acts_in_training_only_and_feeds_unk():
    torch.manual_seed(0)
    plain = build_model(model_cfg(), src_vocab=20, tgt_vocab=20)
    dropping = build_model(model_cfg(word_dropout=0.5), src_vocab=20, tgt_vocab=20)
    dropping.load_state_dict(plain.state_dict())
    assert dropping.word_dropout == 0.5  # the config key reaches the model
    dropping.word_dropout = 1.0  # (the config allows below 1): every input after BOS drops
    batch = toy_batch()
    unk_in = batch.tgt_in.clone()
    unk_in[:, 1:] = torch.where(unk_in[:, 1:] == PAD, PAD, UNK)
    with torch.no_grad():
        # evaluation: the decoder reads the target prefix as it is
        same = (m.eval()(batch.src, batch.src_lengths, batch.tgt_in) for m in (plain, dropping))
        assert torch.equal(*same)
        # training (no other dropout in this config): every input after BOS is UNK
        got = dropping.train()(batch.src, batch.src_lengths, batch.tgt_in)
        want = plain.train()(batch.src, batch.src_lengths, unk_in)
        fed = plain(batch.src, batch.src_lengths, batch.tgt_in)
    assert torch.equal(got, want)
    assert not torch.equal(got, fed)
