"""Teacher-forced input feeding with additive attention as one autograd Function: the
loop over target positions runs forward and backward by hand, its element-wise work in a
C kernel built on this machine (``feedloop.c``, through ``s2s.runtime.native``), its
matrix products PyTorch's.

Against the per-position step function of ``s2s.nn.feeding`` (autograd over a compiled
graph per position), this removes per-position autograd and dispatch, keeps the
attention's key gradients in one float32 buffer instead of adding a new one at every
position, and computes each weight's gradient by one product over all positions after
the loop. OpenNMT-py's default RNN shape runs this loop at every update.

``run`` returns None wherever the kernel does not apply (not built, not on the CPU, a
dtype other than bf16 or float32) or disagreed with the PyTorch loop on the check made
once per process: the caller keeps its own loop.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from s2s.runtime import native

_SOURCE = Path(__file__).with_name("feedloop.c")
_I, _P = ctypes.c_int64, ctypes.c_void_p
_N = ctypes.c_int  # also the flags
_SIGNATURES = {
    "s2s_feed_lstm_fwd": [_I, _I, _N, _P, _I, _P, _P, _P, _P, _I, _P, _I, _N],
    "s2s_feed_lstm_bwd": [_I, _I, _N, _P, _I, _P, _I, _P, _P, _P, _P, _P, _I, _N],
    "s2s_feed_attn_fwd": [_I] * 4 + [_N, _P, _I] + [_P] * 5 + [_P, _I, _N],
    "s2s_feed_attn_bwd": [_I] * 4 + [_N, _P, _I, _P, _P, _I] + [_P] * 6 + [_P, _I, _N],
    "s2s_feed_out_fwd": [_I, _I, _N, _P, _P, _I, _N, _N],
    "s2s_feed_out_bwd": [_I, _I, _N, _P, _I, _P, _I, _P, _P, _N, _N],
}
DTYPES = (torch.bfloat16, torch.float32)


class _Kernels:
    """The six C functions; each call raises RuntimeError where one returns nonzero."""

    def __init__(self, functions: dict):
        self._fns = functions
        for name, fn in functions.items():
            setattr(self, name, self._checked(name, fn))

    @staticmethod
    def _checked(name: str, fn):
        def call(*args):
            if fn(*args, torch.get_num_threads()):
                raise RuntimeError(f"{name} refused its arguments {args}")

        return call


def _built():
    fns = {}
    for name, argtypes in _SIGNATURES.items():
        fn = native.function(_SOURCE, name, argtypes)
        if fn is None:
            return None
        fns[name.removeprefix("s2s_feed_")] = fn
    return _Kernels(fns)


@functools.cache
def kernels():
    """The kernels, or None where they are not built or disagree with the PyTorch loop
    on a probe (checked once per process)."""
    return native.checked(_built(), _agrees, "input-feeding")


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _ptrs(t: torch.Tensor) -> list[int]:
    """The address of each t[i] (t contiguous)."""
    base, step = t.data_ptr(), t.stride(0) * t.element_size()
    return [base + i * step for i in range(t.shape[0])]


class _Loop(torch.autograd.Function):
    """h~ of every position (T, B, N) from the gates' input part ``pre`` (T, B, 4H; the
    embeddings' product and both biases), the start state, and the attention's inputs."""

    @staticmethod
    def forward(ctx, k, pre, h0, c0, feed0, w_rec, prepared, keys, neg, w_c, b_c, w_q, v, tanh):
        T, B, G = pre.shape
        H, N, D = G // 4, w_c.shape[0], keys.shape[-1]
        S, A = prepared.shape[1:]
        bf, dt = pre.dtype == torch.bfloat16, pre.dtype
        P, K = prepared.float().contiguous(), keys.float().contiguous()
        v32 = v.float().reshape(-1).contiguous()
        X = pre.new_empty(T + 1, B, N + H)  # the recurrent product's inputs: [feed, h]
        Y = pre.new_empty(T, B, H + D)  # the combination's: [h, context]
        Q = pre.new_empty(T, B, A)
        out = pre.new_empty(T, B, N)
        act = torch.empty(T, B, G)
        C = torch.empty(T + 1, B, H)
        W = torch.empty(T, B, S)
        gates = pre.new_empty(B, G)
        ctx.k = k
        X[0, :, :N] = feed0
        X[0, :, N:] = h0
        C[0] = c0
        # each position's views and addresses taken once, outside the loop
        gates_in, xs, outs = pre.unbind(0), X.unbind(0), out.unbind(0)
        h_of, q_of = Y[:, :, :H].unbind(0), Q.unbind(0)
        w_rec_t, w_q_t, w_c_t, ys = w_rec.t(), w_q.t(), w_c.t(), Y.unbind(0)
        p_c, p_act, p_w = _ptrs(C), _ptrs(act), _ptrs(W)
        p_x, p_y, p_q, p_out = _ptrs(X), _ptrs(Y), _ptrs(Q), _ptrs(out)
        x_size, y_size, el = N + H, H + D, X.element_size()
        p_g, fixed = _ptr(gates), (_ptr(P), _ptr(v32), _ptr(neg), _ptr(K))
        for t in range(T):
            torch.addmm(gates_in[t], xs[t], w_rec_t, out=gates)
            k.lstm_fwd(B, H, bf, p_g, G, p_c[t], p_c[t + 1], p_act[t], p_y[t], y_size,
                       p_x[t + 1] + N * el, x_size)  # fmt: skip
            torch.mm(h_of[t], w_q_t, out=q_of[t])
            k.attn_fwd(B, S, A, D, bf, p_q[t], A, *fixed, p_w[t], p_y[t] + H * el, y_size)
            torch.addmm(b_c, ys[t], w_c_t, out=outs[t])
            k.out_fwd(B, N, bf, p_out[t], p_x[t + 1], x_size, tanh)
        ctx.save_for_backward(X, Y, Q, out, act, C, W, P, K, v32, w_rec, w_c, w_q)
        ctx.tanh, ctx.dtypes = tanh, (dt, prepared.dtype, keys.dtype, v.dtype, v.shape)
        return out

    @staticmethod
    def backward(ctx, grad):
        X, Y, Q, out, act, C, W, P, K, v32, w_rec, w_c, w_q = ctx.saved_tensors
        k = ctx.k
        T, B, N = out.shape
        H, D, (S, A) = C.shape[-1], K.shape[-1], P.shape[1:]
        dt, p_dtype, k_dtype, v_dtype, v_shape = ctx.dtypes
        bf = dt == torch.bfloat16
        grad = grad.to(dt).contiguous()
        DG, DA, DQ = X.new_empty(T, B, 4 * H), X.new_empty(T, B, N), X.new_empty(T, B, A)
        dY, dX, dh = X.new_empty(B, H + D), X.new_empty(B, N + H), X.new_empty(B, H)
        dP, dK, dv, dc = torch.zeros_like(P), torch.zeros_like(K), torch.zeros(A), torch.zeros(B, H)
        p_grad, p_da, p_dq, p_dg = _ptrs(grad), _ptrs(DA), _ptrs(DQ), _ptrs(DG)
        p_out, p_w, p_q, p_act, p_c = _ptrs(out), _ptrs(W), _ptrs(Q), _ptrs(act), _ptrs(C)
        das, dqs, dgs, el = DA.unbind(0), DQ.unbind(0), DG.unbind(0), X.element_size()
        fixed = (_ptr(P), _ptr(v32), _ptr(K), _ptr(dP), _ptr(dK), _ptr(dv))
        p_dx, p_dy, p_dh, p_dc, dh_of = _ptr(dX), _ptr(dY), _ptr(dh), _ptr(dc), dY[:, :H]
        for t in reversed(range(T)):
            last = t == T - 1
            k.out_bwd(B, N, bf, p_grad[t], N, None if last else p_dx, N + H, p_out[t], p_da[t],
                      ctx.tanh)  # fmt: skip
            torch.mm(das[t], w_c, out=dY)
            k.attn_bwd(B, S, A, D, bf, p_dy + H * el, H + D, p_w[t], p_q[t], A, *fixed,
                       p_dq[t], A)  # fmt: skip
            torch.addmm(dh_of, dqs[t], w_q, out=dh)
            k.lstm_bwd(B, H, bf, p_dh, H, None if last else p_dx + N * el, N + H, p_act[t],
                       p_c[t + 1], p_c[t], p_dc, p_dg[t], 4 * H)  # fmt: skip
            torch.mm(dgs[t], w_rec, out=dX)
        rows = T * B
        d_w_rec = DG.view(rows, -1).t() @ X[:T].view(rows, -1)
        d_w_c = DA.view(rows, -1).t() @ Y.view(rows, -1)
        d_w_q = DQ.view(rows, -1).t() @ Y.view(rows, -1)[:, :H]
        d_b_c = DA.view(rows, -1).float().sum(0).to(dt)
        return (None, DG, dX[:, N:].clone(), dc, dX[:, :N].clone(), d_w_rec, dP.to(p_dtype),
                dK.to(k_dtype), None, d_w_c, d_b_c, d_w_q, dv.to(v_dtype).view(v_shape),
                None)  # fmt: skip


def applies(pre: torch.Tensor) -> bool:
    """Whether ``run`` would take inputs like ``pre`` (the gates' input part)."""
    return pre.device.type == "cpu" and pre.dtype in DTYPES and kernels() is not None


def run(pre, h0, c0, feed0, w_rec, prepared, keys, neg, w_c, b_c, tanh: bool, w_q, v):
    """h~ (T, B, N) of every position, by the kernel; None where it does not apply.
    pre: (T, B, 4H), every matrix-product operand in ``pre``'s dtype (the arguments in
    the order of ``s2s.nn.feeding.additive_step``'s)."""
    if not applies(pre):
        return None
    return _Loop.apply(kernels(), pre.contiguous(), h0, c0.float(), feed0, w_rec, prepared, keys,
                       neg.float().contiguous(), w_c, b_c, w_q, v, bool(tanh))  # fmt: skip


def _reference(pre, h, c, feed, w_rec, prepared, keys, neg, w_c, b_c, w_q, v, tanh):
    """The same loop by PyTorch's operators (the kernels' check)."""
    outs = []
    for pre_t in pre.unbind(0):
        gates = torch.addmm(pre_t, torch.cat([feed, h], -1), w_rec.t())
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        scores = (torch.tanh((h @ w_q.t()).unsqueeze(1) + prepared) @ v.t()).squeeze(-1)
        weights = torch.softmax(scores + neg, -1)
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)
        feed = torch.addmm(b_c, torch.cat([h, context], -1), w_c.t())
        feed = torch.tanh(feed) if tanh else feed
        outs.append(feed)
    return torch.stack(outs)


def _agrees(k) -> bool:
    """The Function's values and gradients equal ``_reference``'s (float64 autograd) on a
    random float32 problem with padding, within float32 rounding."""
    gen = torch.Generator().manual_seed(0)
    T, B, S, H, N, D, A = 4, 3, 5, 6, 7, 4, 5

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    args = [r(T, B, 4 * H), r(B, H), r(B, H), r(B, N), r(4 * H, N + H), r(B, S, A)]
    args += [r(B, S, D), torch.zeros(B, S), r(N, H + D), r(N), r(A, H), r(1, A)]
    args[7][1, 3:] = float("-inf")
    probe = r(T, B, N)
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
        for tanh in (True, False):
            ins = [a.clone().requires_grad_(i != 7) for i, a in enumerate(args)]
            wide = [a.detach().double().requires_grad_(i != 7) for i, a in enumerate(args)]
            got = _Loop.apply(k, *ins, tanh)
            want = _reference(*wide, tanh)
            (got * probe).sum().backward()
            (want * probe.double()).sum().backward()
            if not _close(got, want):
                return False
            for a, b in zip(ins, wide):
                if a.requires_grad and not _close(a.grad, b.grad):
                    return False
    return True


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5)
