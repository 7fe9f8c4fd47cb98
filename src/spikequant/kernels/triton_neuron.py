r"""Triton kernels of the integrate-and-fire recurrence (IF, LIF, ATIF-u, ATIF-nu) for GPUs.

Same design and equations as the C++ kernels (see :mod:`spikequant.kernels`): one program owns
``BLOCK`` neurons and walks all T steps,

    h_t = a v_{t-1} + b x_t,   z_t = 1[h_t - th_t >= 0],
    v_t = h_t - th_t z_t (soft)  or  h_t (1 - z_t) + v_reset z_t (hard),   out_t = s z_t.

Backward keeps no ``[T, ...]`` copy of ``h``: it re-runs the recurrence from ``x`` and ``v_0`` for
a segment of up to ``SEG`` (<= 32) steps into a ``[SEG, BLOCK]`` register tile and walks that
segment backwards; with more than 32 steps the earlier segments are recomputed from ``v_0``
again (``T^2 / 64`` extra step evaluations, no extra memory). The step is one shared
``@triton.jit`` function and is compiled without FMA contraction (``enable_fp_fusion=False``), so
``a v + b x`` rounds like PyTorch's separate multiply and add and the spikes equal the reference
bit for bit.

float32, bfloat16 and float16 inputs are computed in float32; outputs have the input's dtype, the
final membrane the initial membrane's dtype. Threshold and spike-value gradients are summed per
element over time in float32 and then per channel in float64 (per-step thresholds, ATIF-nu, are
accumulated with float32 atomics instead).

``TRITON_INTERPRET=1`` (set before triton is imported) runs the same kernels on CPU tensors with
Triton's interpreter: that is how the tests check them without a GPU.
"""

from __future__ import annotations

import os

import torch

from ._common import KernelSpec, in_layout

try:
    import triton
    import triton.language as tl

    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # triton is optional (GPU installs have it with torch)
    triton = tl = None
    _IMPORT_ERROR = f"triton is not installed ({exc}); pip install triton"


# The kernels below are defined as interpreted functions when this flag is set at import time.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def interpreted() -> bool:
    """True when these kernels run in Triton's interpreter (they then accept CPU tensors)."""
    return _INTERPRETED


def problem(x: torch.Tensor, dtypes) -> str | None:
    """Why these kernels cannot run on ``x``, or None."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if x.device.type == "cpu" and not _INTERPRETED:
        return "a CPU tensor (Triton kernels need CUDA, or TRITON_INTERPRET=1 to test them on CPU)"
    if x.device.type not in ("cuda", "cpu"):
        return f"device {x.device.type} (Triton kernels run on CUDA tensors)"
    if x.dtype not in dtypes:
        names = "/".join(str(d).removeprefix("torch.") for d in dtypes)
        return f"dtype {x.dtype} (the Triton kernels take {names})"
    return None


_SEG_MAX = 32

if triton is not None:
    # Helpers called from the kernels. Under the interpreter every call of a nested jit function
    # re-patches triton.language (~7 ms); there, plain functions run the same code while the
    # kernel that calls them has the language patched, which halves the tests' time.
    _inline = (lambda fn: fn) if _INTERPRETED else triton.jit

    @_inline
    def _step(v, x, thr, a, b, v_reset, HARD: tl.constexpr):
        # forward and backward recomputation share this, so both round identically
        h = a * v + b * x
        z = (h - thr >= 0.0).to(tl.float32)
        if HARD:
            v_new = h * (1.0 - z) + v_reset * z
        else:
            v_new = h - thr * z
        return h, z, v_new

    @_inline
    def _param(ptr, row, offs, mask, P, S, C, PER_CHANNEL: tl.constexpr):
        # value of a per-layer (one per row) or per-channel ([rows, C]) parameter per element;
        # the channel of memory element n is ((n % P) // S) % C
        if PER_CHANNEL:
            ch = ((offs % P) // S) % C
            return tl.load(ptr + row * C + ch, mask=mask, other=1.0)
        else:
            return tl.load(ptr + row)

    @_inline
    def _as_element_of(value, ptr):
        # float32 -> the tensor's dtype, rounding to nearest even like PyTorch. bfloat16 is rounded
        # on the bits: Triton's interpreter truncates a plain .to(tl.bfloat16), the GPU would not.
        if ptr.dtype.element_ty == tl.float32:
            return value
        elif ptr.dtype.element_ty == tl.bfloat16:
            bits = value.to(tl.uint32, bitcast=True)
            bits = bits + 0x7FFF + ((bits >> 16) & 1)
            return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            return value.to(ptr.dtype.element_ty)

    @_inline
    def _surrogate_grad(q, alpha, c1, c2, KIND: tl.constexpr):
        if KIND == 0:  # sigmoid: alpha e / (1 + e)^2, e = exp(-alpha |q|)
            e = tl.exp(-alpha * tl.abs(q))
            d = 1.0 + e
            return alpha * e / (d * d)
        elif KIND == 1:  # triangle: max(0, g - |q|) / g^2
            return tl.maximum(c1 - tl.abs(q), 0.0) / c2
        elif KIND == 2:  # atan: (alpha / 2) / (1 + (pi/2 alpha q)^2)
            u = c1 * q
            return c2 / (1.0 + u * u)
        else:  # rectangle: alpha 1[|q| < 1 / (2 alpha)]
            return tl.where(tl.abs(q) < c1, alpha, 0.0)

    # sizes equal to 1 must not become compile-time constants (N.to() below, fewer recompiles)
    @triton.jit(do_not_specialize=["N", "T", "P", "S", "C"])
    def _forward_kernel(
        x_ptr,
        v0_ptr,
        th_ptr,
        sv_ptr,
        out_ptr,
        vt_ptr,
        N,
        T,
        P,
        S,
        C,
        a,
        b,
        v_reset,
        HARD: tl.constexpr,
        SCALED: tl.constexpr,
        PER_CHANNEL: tl.constexpr,
        PER_STEP: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        v = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        thr = _param(th_ptr, 0, offs, mask, P, S, C, PER_CHANNEL)
        if SCALED:
            sv = _param(sv_ptr, 0, offs, mask, P, S, C, PER_CHANNEL)
        x_ptrs = x_ptr + offs
        out_ptrs = out_ptr + offs
        for t in range(T):
            if PER_STEP:
                thr = _param(th_ptr, t, offs, mask, P, S, C, PER_CHANNEL)
            x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
            h, z, v = _step(v, x, thr, a, b, v_reset, HARD)
            if SCALED:
                z = z * sv
            tl.store(out_ptrs, _as_element_of(z, out_ptr), mask=mask)
            x_ptrs += N
            out_ptrs += N
        tl.store(vt_ptr + offs, _as_element_of(v, vt_ptr), mask=mask)

    @triton.jit(do_not_specialize=["N", "T", "P", "S", "C"])
    def _backward_kernel(
        go_ptr,
        gvt_ptr,
        x_ptr,
        v0_ptr,
        th_ptr,
        sv_ptr,
        gx_ptr,
        gv0_ptr,
        dth_ptr,
        dsv_ptr,
        N,
        T,
        P,
        S,
        C,
        a,
        b,
        v_reset,
        alpha,
        c1,
        c2,
        KIND: tl.constexpr,
        HARD: tl.constexpr,
        SCALED: tl.constexpr,
        DETACH: tl.constexpr,
        PER_CHANNEL: tl.constexpr,
        PER_STEP: tl.constexpr,
        HAS_GO: tl.constexpr,
        HAS_GVT: tl.constexpr,
        NEED_V0: tl.constexpr,
        NEED_TH: tl.constexpr,
        NEED_SV: tl.constexpr,
        SEG: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        stride = N.to(tl.int64)  # t * N overflows int32 for tensors over 2^31 elements
        rows = tl.arange(0, SEG)[:, None]
        v_start = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        thr = _param(th_ptr, 0, offs, mask, P, S, C, PER_CHANNEL)
        if SCALED:
            sv = _param(sv_ptr, 0, offs, mask, P, S, C, PER_CHANNEL)
        if HAS_GVT:
            gv = tl.load(gvt_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            gv = tl.zeros([BLOCK], dtype=tl.float32)
        dth_sum = tl.zeros([BLOCK], dtype=tl.float32)
        dsv_sum = tl.zeros([BLOCK], dtype=tl.float32)
        segments = (T + SEG - 1) // SEG
        for k in range(segments):
            t0 = (segments - 1 - k) * SEG
            t1 = tl.minimum(t0 + SEG, T)
            # the membrane at the segment start, recomputed from v0
            v = v_start
            for t in range(t0):
                if PER_STEP:
                    thr = _param(th_ptr, t, offs, mask, P, S, C, PER_CHANNEL)
                x = tl.load(x_ptr + t * stride + offs, mask=mask, other=0.0).to(tl.float32)
                h, z, v = _step(v, x, thr, a, b, v_reset, HARD)
            # h of the segment's steps, kept in registers
            h_tile = tl.zeros([SEG, BLOCK], dtype=tl.float32)
            for t in range(t0, t1):
                if PER_STEP:
                    thr = _param(th_ptr, t, offs, mask, P, S, C, PER_CHANNEL)
                x = tl.load(x_ptr + t * stride + offs, mask=mask, other=0.0).to(tl.float32)
                h, z, v = _step(v, x, thr, a, b, v_reset, HARD)
                h_tile = tl.where(rows == t - t0, h[None, :], h_tile)
            for j in range(t1 - t0):
                t = t1 - 1 - j
                h = tl.sum(tl.where(rows == t - t0, h_tile, 0.0), axis=0)
                if PER_STEP:
                    thr = _param(th_ptr, t, offs, mask, P, S, C, PER_CHANNEL)
                q = h - thr
                z = (q >= 0.0).to(tl.float32)
                sg = _surrogate_grad(q, alpha, c1, c2, KIND)
                if HAS_GO:
                    go = tl.load(go_ptr + t * stride + offs, mask=mask, other=0.0).to(tl.float32)
                else:
                    go = tl.zeros([BLOCK], dtype=tl.float32)
                if SCALED:
                    gz = go * sv
                else:
                    gz = go
                if HARD:
                    if not DETACH:
                        gz = gz + gv * (v_reset - h)
                    gh = gz * sg + gv * (1.0 - z)
                    dth = -gz * sg
                else:
                    if not DETACH:
                        gz = gz - gv * thr
                    gh = gz * sg + gv
                    dth = -gz * sg - gv * z
                tl.store(gx_ptr + t * stride + offs, _as_element_of(b * gh, gx_ptr), mask=mask)
                gv = a * gh
                if NEED_TH:
                    if PER_STEP:
                        dth = tl.where(mask, dth, 0.0)
                        if PER_CHANNEL:
                            ch = ((offs % P) // S) % C
                            tl.atomic_add(dth_ptr + t * C + ch, dth, mask=mask)
                        else:
                            tl.atomic_add(dth_ptr + t, tl.sum(dth, axis=0))
                    else:
                        dth_sum += dth
                if NEED_SV:
                    dsv_sum += go * z
        if NEED_V0:
            tl.store(gv0_ptr + offs, _as_element_of(gv, gv0_ptr), mask=mask)
        if NEED_TH:
            if not PER_STEP:
                tl.store(dth_ptr + offs, dth_sum, mask=mask)
        if NEED_SV:
            tl.store(dsv_ptr + offs, dsv_sum, mask=mask)


def _block(steps: int) -> tuple[int, int]:
    seg = max(2, min(_SEG_MAX, triton.next_power_of_2(steps)))
    return seg, (128 if seg >= 16 else 256)


def _channel_sums(per_element: torch.Tensor, spec: KernelSpec, channels: int) -> torch.Tensor:
    """Sum a per-element ``[N]`` buffer (memory order) per channel, in float64."""
    return per_element.double().view(-1, channels, spec.inner).sum((0, 2))


def _device_guard(x: torch.Tensor):
    import contextlib

    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


class _TritonIntegrateFire(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v0, threshold, spike_value, spec: KernelSpec):
        th2d = threshold.reshape(spec.th_rows, -1).contiguous()
        sv = None if spike_value is None else spike_value.reshape(-1).contiguous()
        channels = th2d.shape[1]
        steps, n = x.shape[0], x[0].numel()
        out = torch.empty_like(x)
        v_final = torch.empty_like(v0)
        seg, block = _block(steps)
        with _device_guard(x):
            _forward_kernel[(triton.cdiv(n, block),)](
                x,
                v0,
                th2d,
                th2d if sv is None else sv,
                out,
                v_final,
                n,
                steps,
                spec.per_sample,
                spec.inner,
                channels,
                spec.a,
                spec.b,
                spec.v_reset,
                HARD=spec.hard,
                SCALED=sv is not None,
                PER_CHANNEL=channels > 1,
                PER_STEP=spec.th_rows > 1,
                BLOCK=block,
                enable_fp_fusion=False,
            )
        ctx.set_materialize_grads(False)
        if any(ctx.needs_input_grad[:4]):
            ctx.save_for_backward(x, v0, th2d, sv)
            ctx.spec = spec
            ctx.th_shape = threshold.shape
            ctx.sv_shape = None if spike_value is None else spike_value.shape
        return out, v_final

    @staticmethod
    def backward(ctx, grad_out, grad_v_final):
        x, v0, th2d, sv = ctx.saved_tensors
        spec: KernelSpec = ctx.spec
        need_x, need_v0, need_th, need_sv = ctx.needs_input_grad[:4]
        need_sv = bool(need_sv and sv is not None)
        channels = th2d.shape[1]
        steps, n = x.shape[0], x[0].numel()
        per_step = spec.th_rows > 1
        grad_x = torch.empty_like(x)
        grad_v0 = torch.empty_like(v0) if need_v0 else None
        f32 = dict(dtype=torch.float32, device=x.device)
        if need_th:
            dth = torch.zeros(steps * channels, **f32) if per_step else torch.empty(n, **f32)
        else:
            dth = None
        dsv = torch.empty(n, **f32) if need_sv else None
        go = None if grad_out is None else in_layout(grad_out, x)
        gvt = None if grad_v_final is None else in_layout(grad_v_final, v0)
        seg, block = _block(steps)
        dummy = th2d
        with _device_guard(x):
            _backward_kernel[(triton.cdiv(n, block),)](
                dummy if go is None else go,
                dummy if gvt is None else gvt,
                x,
                v0,
                th2d,
                dummy if sv is None else sv,
                grad_x,
                dummy if grad_v0 is None else grad_v0,
                dummy if dth is None else dth,
                dummy if dsv is None else dsv,
                n,
                steps,
                spec.per_sample,
                spec.inner,
                channels,
                spec.a,
                spec.b,
                spec.v_reset,
                spec.alpha,
                spec.c1,
                spec.c2,
                KIND=spec.kind,
                HARD=spec.hard,
                SCALED=sv is not None,
                DETACH=spec.detach,
                PER_CHANNEL=channels > 1,
                PER_STEP=per_step,
                HAS_GO=go is not None,
                HAS_GVT=gvt is not None,
                NEED_V0=bool(need_v0),
                NEED_TH=bool(need_th),
                NEED_SV=need_sv,
                SEG=seg,
                BLOCK=block,
                enable_fp_fusion=False,
            )
        grad_th = grad_sv = None
        if need_th:
            grad_th = dth.view(steps, channels) if per_step else _channel_sums(dth, spec, channels)
            grad_th = grad_th.to(th2d.dtype).reshape(ctx.th_shape)
        if need_sv:
            grad_sv = _channel_sums(dsv, spec, channels).to(sv.dtype).reshape(ctx.sv_shape)
        return grad_x if need_x else None, grad_v0, grad_th, grad_sv, None


def integrate_fire(x, v0, threshold, spike_value, spec: KernelSpec):
    """Run the Triton kernels on prepared inputs (``x`` in kernel layout, see ``kernel_layout``).

    ``threshold`` has ``spec.th_rows`` rows of 1 or C values; it and ``spike_value`` are computed
    in float32 (their gradients come back in their own dtype through autograd).
    """
    if problem(x, (torch.float32, torch.bfloat16, torch.float16)) is not None:
        raise RuntimeError(problem(x, (torch.float32, torch.bfloat16, torch.float16)))
    if v0.stride() != x[0].stride() or not v0.dtype.is_floating_point:
        v0 = torch.empty_like(x[0], dtype=v0.dtype).copy_(v0)
    threshold = threshold.to(torch.float32)
    spike_value = None if spike_value is None else spike_value.to(torch.float32)
    return _TritonIntegrateFire.apply(x, v0, threshold, spike_value, spec)
