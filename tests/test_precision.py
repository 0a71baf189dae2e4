"""Mixed precision (train.precision): autocast in training, float32 weights and checkpoints,
dynamic loss scaling for fp16."""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config_dict
from test_tricks import make_trainer, sgd, updated

from s2s import config
from s2s.errors import ConfigError
from s2s.translation import Trainer, checkpoint


def one_update(tmp_path, corpus, name, **options):
    trainer = make_trainer(tmp_path, corpus, name, **options)
    dtypes = []
    hook = trainer.model.decoder.output.register_forward_hook(
        lambda module, inputs, output: dtypes.append(output.dtype)
    )
    delta, _ = updated(trainer)
    hook.remove()
    return trainer, delta, dtypes


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_computes_in_half_and_keeps_float32_weights(
    tmp_path, tiny_corpus, precision, dtype
):
    _, reference, ref_dtypes = one_update(tmp_path, tiny_corpus, "fp32", **sgd(lr=0.1))
    trainer, delta, dtypes = one_update(
        tmp_path, tiny_corpus, precision, precision=precision, **sgd(lr=0.1)
    )
    assert ref_dtypes == [torch.float32] and dtypes == [dtype]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    # the same update up to half-precision rounding, but not bitwise the fp32 one
    ours = torch.cat([d.flatten() for d in delta.values()])
    fp32 = torch.cat([d.flatten() for d in reference.values()])
    assert not torch.equal(ours, fp32)
    assert (ours - fp32).norm() / fp32.norm() < 0.05
    trainer.save("last.pt")
    payload = checkpoint.load(tmp_path / precision / "last.pt")
    assert all(v.dtype == torch.float32 for v in payload["model"].values() if v.is_floating_point())


def test_fp16_overflow_skips_the_update_and_halves_the_loss_scale(tmp_path, tiny_corpus, caplog):
    with caplog.at_level("WARNING"):
        trainer = make_trainer(tmp_path, tiny_corpus, precision="fp16", max_steps=2, log_every=1)
    assert "train.precision=fp16 on the CPU: it runs, but is meant for GPUs" in caplog.text
    # a scale so large that the scaled loss overflows float32: gradients are inf
    trainer.updater.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    start = trainer.model.decoder.output.bias.detach().clone()
    biases = []
    trainer.on_step = lambda record: biases.append(trainer.model.decoder.output.bias.clone())
    result = trainer.run()
    assert result["step"] == 2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    overflows = [r for r in records if r["kind"] == "overflow"]
    assert [r["scale"] for r in overflows[:2]] == [2.0**126, 2.0**125]
    assert not [r for r in records if r["kind"] == "bad_step"]  # not counted as a broken step
    assert torch.equal(biases[0], start) and trainer.progress.bad_steps == 0
    assert trainer.progress.lr == pytest.approx(1e-3)  # the learning rate is not cut


def test_fp16_loss_scale_is_saved_and_resumed(tmp_path, tiny_corpus):
    cfg = config.from_dict(tiny_config_dict(tiny_corpus, precision="fp16", max_steps=2))
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()
    path = tmp_path / "run" / "last.pt"
    payload = checkpoint.load(path)
    assert payload["scaler"]["scale"] == trainer.scaler.get_scale()
    payload["scaler"]["scale"] = 1024.0
    checkpoint.save(path, {k: v for k, v in payload.items() if k not in ("format", "version")})
    cfg4 = config.from_dict(tiny_config_dict(tiny_corpus, precision="fp16", max_steps=4))
    resumed = Trainer(cfg4, tmp_path / "run")
    assert resumed.progress.step == 2 and resumed.scaler.get_scale() == 1024.0


def test_precision_and_device_may_change_when_resuming(tmp_path, tiny_corpus):
    Trainer(config.from_dict(tiny_config_dict(tiny_corpus, max_steps=2)), tmp_path / "run").run()
    options = dict(precision="bf16", device="cpu", threads=1, max_steps=4)
    resumed = Trainer(config.from_dict(tiny_config_dict(tiny_corpus, **options)), tmp_path / "run")
    assert resumed.progress.step == 2
    assert resumed.run()["step"] == 4


def test_unknown_precision_names_the_choices(tiny_corpus):
    with pytest.raises(ConfigError, match=r"train\.precision.*fp32.*bf16.*fp16"):
        config.from_dict(tiny_config_dict(tiny_corpus, precision="fp8"))


class InfGradient(torch.autograd.Function):
    """Identity forward; an infinite gradient backward (the loss itself stays finite)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


def inf_gradients(monkeypatch):
    import s2s.translation.task as train_mod

    real = train_mod.batch_loss

    def broken(model, batch, *args, **kw):
        loss = real(model, batch, *args, **kw)
        return loss + 0.0 * InfGradient.apply(model.decoder.output.bias).sum()

    monkeypatch.setattr(train_mod, "batch_loss", broken)


def test_fp16_gradients_that_never_recover_reach_the_nan_guard(tmp_path, tiny_corpus, monkeypatch):
    from s2s.errors import S2SError

    inf_gradients(monkeypatch)
    trainer = make_trainer(tmp_path, tiny_corpus, precision="fp16", max_steps=10, max_bad_steps=2)
    trainer.updater.scaler = torch.amp.GradScaler("cpu", init_scale=2.0)  # collapses below 1 soon
    with pytest.raises(S2SError, match="2 steps in a row with NaN/Inf"):
        trainer.run()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    kinds = [json.loads(x)["kind"] for x in lines]
    assert kinds.count("overflow") == 1 and kinds.count("bad_step") == 2


def test_clipping_by_value_does_not_hide_infinite_gradients(tmp_path, tiny_corpus, monkeypatch):
    inf_gradients(monkeypatch)
    trainer = make_trainer(tmp_path, tiny_corpus, clip_grad_value=1.0)
    from s2s.data.corpus import collate

    before = trainer.model.decoder.output.bias.detach().clone()
    where = trainer._update([collate(trainer.task.train_corpus, [0, 1])]).nonfinite
    assert where is not None and "decoder.output.bias" in where
    assert torch.equal(trainer.model.decoder.output.bias, before)  # not applied


BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


@pytest.mark.parametrize(
    "device, autocast, fused, packed, cpu_bf16, expected",
    [
        ("cpu", None, True, False, True, None),  # no autocast: nothing to decide
        ("cpu", BF16, True, False, True, None),  # padded, fused, bf16 CPU: the bf16 kernel
        ("cpu", BF16, True, True, True, FP32),  # packed: oneDNN runs float32 anyway
        ("cpu", BF16, True, False, False, FP32),  # no bf16 instructions: the kernel fails
        ("cpu", BF16, False, False, True, None),  # step loops (peephole, ...): bf16 products
        ("cpu", BF16, False, True, True, None),  # a step loop pads packed input itself
        ("cpu", BF16, False, False, False, FP32),  # no bf16 instructions: float32
        ("cpu", FP16, True, False, True, FP32),
        ("cuda", BF16, True, False, False, FP32),  # cuDNN's wrapper would run fp16, unscaled
        ("cuda", FP16, True, True, False, None),  # fp16 with the loss scaler
    ],
)
def test_the_recurrent_dtype_is_a_plain_choice(device, autocast, fused, packed, cpu_bf16, expected):
    from s2s.nn.precision import recurrent_dtype

    got = recurrent_dtype(device, autocast, fused=fused, packed=packed, cpu_bf16=cpu_bf16)
    assert got == expected


def test_bf16_runs_the_recurrent_kernels_in_bf16_where_the_cpu_has_it(tmp_path, tiny_corpus):
    """Encoder (sources run padded by length) and decoder: the fused kernels run in
    bfloat16 exactly when this CPU lists bf16 instructions."""
    from s2s.nn.precision import cpu_has_bf16

    trainer = make_trainer(tmp_path, tiny_corpus, "bf16", precision="bf16")
    seen = {}
    trainer.model.encoder.register_forward_hook(
        lambda module, inputs, output: seen.update(encoder=output.states) or None
    )
    trainer.model.decoder.rnn.layers[0].register_forward_hook(
        lambda module, inputs, output: seen.update(decoder=output[0]) or None
    )
    from s2s.data.corpus import collate

    trainer._update([collate(trainer.task.train_corpus, [0, 1, 2, 3])])
    for name in ("encoder", "decoder"):
        assert seen[name].dtype == (BF16 if cpu_has_bf16() else FP32), name


@pytest.mark.parametrize(
    "device, cuda_bf16, cpu_bf16, expected",
    [
        ("cpu", False, True, "bf16"),
        ("cpu", False, False, "fp32"),
        ("cuda", True, False, "bf16"),
        ("cuda", False, True, "fp32"),
    ],
)
def test_auto_precision_is_bf16_where_the_hardware_has_it(
    monkeypatch, device, cuda_bf16, cpu_bf16, expected
):
    import s2s.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: cpu_bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    assert runtime.resolve_precision("auto", torch.device(device)) == expected
    assert runtime.resolve_precision("fp16", torch.device(device)) == "fp16"


def test_auto_precision_trains_as_the_precision_it_resolves_to(tmp_path, tiny_corpus):
    from s2s.runtime import bf16_available

    trainer = make_trainer(tmp_path, tiny_corpus, "auto", precision="auto")
    want = torch.bfloat16 if bf16_available(torch.device("cpu")) else None
    assert trainer.updater.amp_dtype == want


FREED_BLOCK = """
import sys
import torch
from s2s.runtime import LARGE_BLOCK, return_large_blocks


def rss_mb():
    with open("/proc/self/status") as handle:
        return next(int(x.split()[1]) // 1024 for x in handle if x.startswith("VmRSS"))


if sys.argv[1] == "on":
    assert return_large_blocks()
big = torch.ones(6 << 20)  # 24 MB: glibc's own threshold rises to this when it is freed
del big
base = rss_mb()
block = torch.ones(LARGE_BLOCK // 4)  # LARGE_BLOCK bytes (16 MB), then freed
del block
print(rss_mb() - base)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc allocator setting")
def test_large_freed_blocks_go_back_to_the_system():
    """With return_large_blocks, a freed tensor of LARGE_BLOCK bytes leaves the process
    (RSS back); with glibc's default rising threshold it stays in the heap."""

    def kept(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", FREED_BLOCK, mode], capture_output=True, text=True, check=True
        )
        return int(run.stdout.split()[-1])

    assert kept("on") < 3
    assert kept("off") > 12  # the default keeps it: what the setting is for


def test_the_kernel_caches_caps_are_set_before_training_and_a_users_value_is_kept(monkeypatch):
    from s2s.runtime import KERNEL_CACHE, MATMUL_CACHE, cap_kernel_cache

    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        monkeypatch.delenv(name, raising=False)
    cap_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(KERNEL_CACHE)
    assert os.environ["LRU_CACHE_CAPACITY"] == str(MATMUL_CACHE)
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "7")
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "9")
    cap_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "7"
    assert os.environ["LRU_CACHE_CAPACITY"] == "9"


@pytest.mark.parametrize("value", ["0", "-3", "lots", ""])
def test_a_matmul_cache_size_that_would_crash_pytorch_is_refused_by_name(monkeypatch, value):
    from s2s.errors import ConfigError
    from s2s.runtime import cap_kernel_cache

    monkeypatch.setenv("LRU_CACHE_CAPACITY", value)
    with pytest.raises(ConfigError, match="LRU_CACHE_CAPACITY"):
        cap_kernel_cache()


MATMUL_SHAPES = """
import ctypes, sys
import torch
from s2s.runtime import cap_kernel_cache

if sys.argv[1] == "capped":
    cap_kernel_cache()
libc = ctypes.CDLL("libc.so.6")


def rss_mb():
    libc.malloc_trim(0)
    with open("/proc/self/status") as handle:
        return next(int(x.split()[1]) / 1024 for x in handle if x.startswith("VmRSS"))


weight = torch.randn(256, 512, dtype=torch.bfloat16)
torch.nn.functional.linear(torch.randn(7, 512, dtype=torch.bfloat16), weight)
base = rss_mb()
for rows in range(100, 100 + 3 * 160, 3):  # 160 row counts, as a run's batches vary
    torch.nn.functional.linear(torch.randn(rows, 512, dtype=torch.bfloat16), weight)
print(rss_mb() - base)
"""


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc"
    or not getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)(),
    reason="PyTorch runs bf16 products through oneDNN only where the CPU supports it",
)
def test_capped_kernel_caches_bound_the_memory_of_many_product_shapes():
    """160 shapes of a bf16 product: with the caps, the memory the kept kernels hold is
    bounded (87 MB against 46 MB with the caps, on the sixteenth session's VM)."""

    def grown(mode: str) -> float:
        env = {k: v for k, v in os.environ.items() if "CACHE_CAPACITY" not in k}
        run = subprocess.run(
            [sys.executable, "-c", MATMUL_SHAPES, mode],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return float(run.stdout.split()[-1])

    assert grown("default") - grown("capped") > 20


def test_the_heap_is_trimmed_once_memory_grows_past_the_slack(monkeypatch):
    """HeapTrimmer: the first reading after a trim sets the level; a trim only when
    resident memory is more than the slack above it."""
    import s2s.runtime as runtime

    readings, trims = iter([500, 520, 531, 533, 700, 710, 712]), []
    monkeypatch.setattr(runtime, "resident_mb", lambda: next(readings))
    monkeypatch.setattr(runtime, "trim_heap", lambda: trims.append(1) or True)
    trimmer = runtime.HeapTrimmer(slack_mb=32)
    done = [trimmer() for _ in range(7)]
    # 500 sets the level; 520, 531 within 32 of it; 533 above: trim; 700 sets the new
    # level (the update after a trim); 710 and 712 within the slack
    assert done == [False, False, False, True, False, False, False]
    assert len(trims) == 1 and trimmer.trims == 1 and trimmer.level == 700


def test_the_training_loop_trims_the_heap_after_updates(tmp_path, tiny_corpus, monkeypatch):
    import s2s.runtime as runtime

    calls = []
    monkeypatch.setattr(runtime.HeapTrimmer, "__call__", lambda self: calls.append(1) or False)
    trainer = make_trainer(tmp_path, tiny_corpus, precision="fp32", max_steps=3)
    trainer.run()
    assert len(calls) == trainer.progress.step == 3
