"""A step's work over the vocabulary: each row's best tokens and their log-probabilities.

Over a beam batch the logits are large (1,280 rows x 8,000 tokens), and PyTorch's CPU
top-k selects row by row: both are done here in cache-sized blocks, the top-k by
segments (docs/speed.md, "Decoding ... eleventh session"). In float32 on the CPU the
output layer itself runs HEAD_ROWS rows at a time (``step_top_log_probs``,
``step_argmax``): the (rows, vocabulary) logits never exist whole, each block's are
ranked while they are in cache (docs/speed.md, nineteenth session).

Where a C compiler is found, a kernel built on this machine (``rank.c``, through
``s2s.runtime.native``) does each row's ranking in one pass instead: about 3x faster over
a beam batch (docs/speed.md, thirty-sixth session). It is checked against the PyTorch
path once per process, and that path stays for every other case.

A bf16 output layer gives bf16 logits, rounded to 8 bits: near-ties between the best
tokens are decided by the rounding, and greedy search chose another token than float32
decoding in 7% of the test sentences (docs/speed.md, thirty-ninth session). Where the
layer's weight is at hand (``refinable``), each row's best REFINE + k candidates by the
bf16 logits are rescored from the same bf16 weight and features with float32 sums and a
float32 result, as a float32-output product would give them, and ranked again by those.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from s2s.runtime import native

ROW_BLOCK = 128  # rows of logits at a time in a step's work over the vocabulary
HEAD_ROWS = 256  # rows of float32 CPU features through the output layer at a time
SEGMENT = 64  # a row's top-k first picks its best segments of this many columns
REFINE = 2  # candidates beyond the k wanted, rescored in float32 from bf16 logits


def fast_topk(x: torch.Tensor, k: int):
    """``x.topk(k, dim=-1)`` of a (rows, columns) tensor, values equal (ids may differ
    among tied values), faster over long rows: the k best values lie in the k segments
    of SEGMENT columns with the largest maxima, so a vectorised max per segment and a
    top-k over those k segments replace PyTorch's top-k over the whole row, which on the
    CPU costs 2-3x more (docs/speed.md). bf16 or fp16 input is ranked ROW_BLOCK rows at
    a time in a float32 copy (PyTorch's reductions over bf16 convert element by element,
    twice as slow as the copy); the values come back in the input's dtype, exactly."""
    rows, columns = x.shape
    segments = columns // SEGMENT
    if segments <= k:
        return x.topk(min(k, columns), dim=-1)
    if x.dtype in (torch.bfloat16, torch.float16):
        found = [_segment_topk(block.float(), k, segments) for block in x.split(ROW_BLOCK)]
        return torch.cat([v for v, _ in found]).to(x.dtype), torch.cat([i for _, i in found])
    return _segment_topk(x, k, segments)


def _segment_topk(x: torch.Tensor, k: int, segments: int):
    rows, columns = x.shape
    main = segments * SEGMENT
    parts = x[:, :main].reshape(rows * segments, SEGMENT)  # a view when main == columns
    best = parts.view(rows, segments, SEGMENT).amax(dim=-1).topk(k, dim=-1).indices
    # the k best segments of each row, copied whole (rows x k x SEGMENT candidates)
    first = torch.arange(0, rows * segments, segments, device=x.device).unsqueeze(1)
    cand = parts.index_select(0, (best + first).view(-1)).view(rows, k * SEGMENT)
    if main < columns:  # the last, shorter segment: every column a candidate
        cand = torch.cat([cand, x[:, main:]], dim=1)
    values, index = cand.topk(k, dim=-1)
    # candidate -> column: in a chosen segment, or among the last columns
    seg = torch.div(index, SEGMENT, rounding_mode="floor")
    chosen = best.gather(1, seg.clamp(max=k - 1)) * SEGMENT + index % SEGMENT
    return values, torch.where(seg < k, chosen, index - k * SEGMENT + main)


def top_log_probs(logits: torch.Tensor, k: int, blocked: int | None = None):
    """Each row's ``k`` most probable tokens: log-probabilities (float32, best first)
    and token ids, both (rows, min(k, vocabulary)). The log-softmax runs ROW_BLOCK rows
    at a time, so that its float32 copy stays in cache: over a whole beam batch (1,280
    rows x 8,000) each step's fresh 40 MB temporaries cost more in page faults than in
    arithmetic (docs/speed.md). ``blocked``: a token given log-probability -inf (no EOS
    before the minimum length), after the normalisation, which counts it."""
    found = _native_top(logits, k, blocked, normalise=True)
    if found is not None:
        return found
    values, ids = [], []
    for block in logits.split(ROW_BLOCK):
        logp = torch.log_softmax(block.float(), dim=-1)
        if blocked is not None:
            logp[:, blocked] = float("-inf")
        top, index = fast_topk(logp, k)
        values.append(top)
        ids.append(index)
    return torch.cat(values), torch.cat(ids)


def _head_blocks(out):
    """A step's logits HEAD_ROWS rows at a time, where it hands its output layer's input
    in float32 on the CPU (``StepOutput.features`` and ``head``); else None."""
    features = getattr(out, "features", None)
    if features is None or features.dtype != torch.float32 or features.device.type != "cpu":
        return None
    return (out.head(block) for block in features.split(HEAD_ROWS))


def refinable(out) -> bool:
    """Whether a step's logits come from a bf16 or fp16 layer whose ``weight`` (and
    ``bias``) search can read: a layer of the model, or a shortlist's rows of one."""
    features = getattr(out, "features", None)
    weight = getattr(getattr(out, "head", None), "weight", None)
    return (
        features is not None
        and isinstance(weight, torch.Tensor)
        and weight.dtype in (torch.bfloat16, torch.float16)
        and features.dtype == weight.dtype
    )


def exact_logits(out, ids: torch.Tensor) -> torch.Tensor:
    """float32 logits of the columns ``ids`` (rows, n) of a refinable step: the layer's
    weight rows and the features as they are, multiplied and summed in float32 (by
    rank.c's ``s2s_rescore`` where it is built and checked)."""
    head, features = out.head, out.features
    exact = _native_rescore(head.weight, features, ids)
    if exact is None:
        rows = head.weight.index_select(0, ids.reshape(-1)).view(*ids.shape, -1).float()
        exact = (rows * features.float().unsqueeze(1)).sum(-1)
    if head.bias is not None:
        exact += head.bias[ids].float()
    return exact


def refined(out, logits, values, ids, k: int, *, normalised: bool = True):
    """The ``k`` best of candidates ``ids`` with their ``values`` (log-probabilities, or
    with ``normalised`` False the logits, from the rounded ``logits``), each value moved
    by its float32 logit's difference from its rounded one, then ranked again (best
    first). Log-probabilities also move by the normaliser's change to first order: the
    candidates' probabilities times their differences (they hold nearly all the mass)."""
    delta = exact_logits(out, ids) - logits.gather(1, ids).float()
    if normalised:
        delta -= (values.exp() * delta).sum(dim=1, keepdim=True)
    values, order = (values + delta).sort(dim=1, descending=True, stable=True)
    return values[:, :k].contiguous(), ids.gather(1, order[:, :k])


def step_top_log_probs(out, k: int, blocked: int | None = None):
    """``top_log_probs`` of a search step's logits (``out``: a ``StepOutput``, or any
    object with ``logits``), the output layer run a block of rows at a time where it can,
    and a bf16 layer's best candidates rescored in float32 (``refined``). Ids are the
    vocabulary's, also where the step scores a shortlist (``out.vocab``)."""
    vocab = getattr(out, "vocab", None)
    if vocab is not None and blocked is not None:
        blocked = _column(vocab, blocked)
    if refinable(out):
        logits = out.logits
        values, ids = refined(out, logits, *top_log_probs(logits, k + REFINE, blocked), k)
    elif (blocks := _head_blocks(out)) is None:
        values, ids = top_log_probs(out.logits, k, blocked)
    else:
        found = [top_log_probs(logits, k, blocked) for logits in blocks]
        values, ids = torch.cat([v for v, _ in found]), torch.cat([i for _, i in found])
    return values, ids if vocab is None else vocab[ids]


def step_argmax(out) -> torch.Tensor:
    """Each row's most probable token (rows,): the argmax of the log-softmax, never
    written out; the output layer a block of rows at a time where it can, a bf16 layer's
    best candidates rescored in float32 (the token ``step_top_log_probs(out, 1)`` picks)."""
    if refinable(out):
        logits = out.logits
        found = _native_top(logits, 1 + REFINE, None, normalise=False)
        values, ids = found if found is not None else fast_topk(logits, 1 + REFINE)
        best = refined(out, logits, values.float(), ids, 1, normalised=False)[1].squeeze(1)
    elif (blocks := _head_blocks(out)) is None:
        best = _argmax(out.logits)
    else:
        best = torch.cat([_argmax(logits) for logits in blocks])
    vocab = getattr(out, "vocab", None)
    return best if vocab is None else vocab[best]


def _column(vocab: torch.Tensor, token: int) -> int | None:
    """The column of ``token`` in a step's sorted ``vocab``; None where it is not there."""
    at = int(torch.searchsorted(vocab, token))
    return at if at < len(vocab) and int(vocab[at]) == token else None


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    found = _native_top(logits, 1, None, normalise=False)
    return (found if found is not None else fast_topk(logits, 1))[1].squeeze(1)


_ARGS = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int] + [ctypes.c_int64] * 5
_ARGS += [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]


# rank.c's ``s2s_top_columns`` as built, and where it agrees with the PyTorch path on a
# probe (``_agrees``, checked once per process)
_built_kernel, _kernel = native.kernel(
    Path(__file__).with_name("rank.c"), "s2s_top_columns", _ARGS, lambda k: _agrees(k), "ranking"
)


def _call(kernel, logits: torch.Tensor, k: int, blocked: int | None, normalise: bool):
    rows, columns = logits.shape
    k = min(k, columns)
    values = torch.empty(rows, k)
    ids = torch.empty(rows, k, dtype=torch.long)
    blocked = blocked if blocked is not None and 0 <= blocked < columns else -1
    bf16 = logits.dtype == torch.bfloat16
    threads = torch.get_num_threads()
    args = (rows, columns, logits.stride(0), k, blocked, values.data_ptr(), ids.data_ptr())
    status = kernel(logits.data_ptr(), bf16, normalise, *args, threads)
    return None if status else (values, ids)


def _native_top(logits: torch.Tensor, k: int, blocked: int | None, *, normalise: bool):
    """rank.c's result for ``logits`` ((rows, columns) on the CPU, bf16 or float32,
    rows contiguous), or None where it does not apply (the caller's PyTorch path then)."""
    usable = (
        logits.device.type == "cpu"
        and logits.dtype in (torch.bfloat16, torch.float32)
        and logits.dim() == 2
        and logits.stride(1) == 1
        and logits.shape[0] > 0
    )
    kernel = _kernel() if usable else None
    return None if kernel is None else _call(kernel, logits, k, blocked, normalise)


def _agrees(kernel) -> bool:
    """The kernel's k best log-probabilities (ids up to ties, values within rounding) and
    argmax equal the PyTorch path's on random bf16 and float32 logits."""
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(9, 300, generator=gen) * 3).to(dtype)
        logits[0, :100] = float("-inf")
        want = torch.log_softmax(logits.float(), -1)
        want[:, 7] = float("-inf")
        found = _call(kernel, logits, 5, 7, True)
        best = _call(kernel, logits, 1, None, False)
        if found is None or best is None:
            return False
        values, ids = found
        same = torch.equal(want.gather(1, ids), want.topk(5, -1).values)
        close = torch.allclose(values, want.gather(1, ids), rtol=0, atol=1e-5)
        same_best = torch.equal(logits.gather(1, best[1]), logits.amax(-1, keepdim=True))
        if not (same and close and same_best and 7 not in ids.flatten().tolist()):
            return False
    return True


_RESCORE_ARGS = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
_RESCORE_ARGS += [ctypes.c_int64, ctypes.c_void_p] + [ctypes.c_int64] * 3
_RESCORE_ARGS += [ctypes.c_void_p, ctypes.c_int]


# rank.c's ``s2s_rescore`` as built, and where it agrees with float64 sums (``_rescores``)
_built_rescore, _rescore_kernel = native.kernel(
    Path(__file__).with_name("rank.c"),
    "s2s_rescore",
    _RESCORE_ARGS,
    lambda k: _rescores(k),
    "rescoring",
)


def _rescore_call(kernel, weight: torch.Tensor, features: torch.Tensor, ids: torch.Tensor):
    ids = ids.contiguous()
    out = torch.empty(ids.shape)
    rows, h = features.shape[0], weight.shape[1]
    args = (weight.data_ptr(), weight.shape[0], weight.stride(0), features.data_ptr())
    args += (features.stride(0), ids.data_ptr(), rows, ids.shape[1], h, out.data_ptr())
    return None if kernel(*args, torch.get_num_threads()) else out


def _native_rescore(weight: torch.Tensor, features: torch.Tensor, ids: torch.Tensor):
    """``s2s_rescore``'s float32 logits, or None where it does not apply: bf16 CPU
    operands with rows of contiguous elements, features (rows, h) as ids (rows, n)."""
    usable = (
        weight.dtype == features.dtype == torch.bfloat16
        and weight.device.type == features.device.type == ids.device.type == "cpu"
        and weight.dim() == features.dim() == ids.dim() == 2
        and weight.stride(1) == features.stride(1) == 1
        and weight.shape[1] == features.shape[1]
        and ids.shape[0] == features.shape[0]
        and ids.dtype == torch.long
    )
    kernel = _rescore_kernel() if usable else None
    return None if kernel is None else _rescore_call(kernel, weight, features, ids)


def _rescores(kernel) -> bool:
    """The kernel's values equal float64 sums of the same bf16 products (to float32
    rounding), and an id outside the weight is refused."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 37, generator=gen).to(torch.bfloat16)
    features = torch.randn(6, 37, generator=gen).to(torch.bfloat16)
    ids = torch.randint(0, 50, (6, 4), generator=gen)
    got = _rescore_call(kernel, weight, features, ids)
    want = (weight.double()[ids] * features.double().unsqueeze(1)).sum(-1)
    ids[2, 1] = 50
    refused = _rescore_call(kernel, weight, features, ids) is None
    return got is not None and torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5) and refused
