"""What must hold on a GPU (read from PyTorch's source, checked where CUDA exists): these
tests run only on a machine with CUDA; the choices they rest on are plain functions
tested on the CPU too (tests/test_precision.py)."""

import pytest
import torch
from test_tricks import make_trainer

from s2s.data.corpus import collate
from s2s.nn.cells import run_layer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_under_bf16_autocast_the_cudnn_lstm_runs_float32_not_unscaled_fp16():
    """cuDNN's autocast wrapper casts an LSTM's inputs to fp16 whatever the autocast
    dtype; s2s runs the layer outside autocast in float32 instead."""
    rnn = torch.nn.LSTM(8, 8, batch_first=True).cuda()
    x = torch.randn(2, 5, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = run_layer(rnn, x, None)
    assert out.dtype == torch.float32


def test_bf16_training_on_cuda_keeps_float32_weights_and_a_finite_loss(tmp_path, tiny_corpus):
    trainer = make_trainer(tmp_path, tiny_corpus, "cuda", precision="bf16", device="cuda")
    outcome = trainer._update([trainer.task.batch([0, 1, 2, 3])])
    assert outcome.nonfinite is None and outcome.applied
    assert all(p.dtype == torch.float32 and p.is_cuda for p in trainer.model.parameters())
    assert torch.backends.cuda.matmul.allow_tf32  # set by the engine on CUDA


def test_a_batch_moves_to_the_gpu_from_pinned_memory(tiny_corpus, tmp_path):
    trainer = make_trainer(tmp_path, tiny_corpus, "pin", device="cuda")
    batch = collate(trainer.task.train_corpus, [0, 1]).to(torch.device("cuda"))
    assert batch.src.is_cuda and batch.tgt_out.is_cuda and not batch.src_lengths.is_cuda
