r"""Emit a Ca-LIF program as one dependency-free C source file (``spikequant deploy --emit-c``).

The file holds the program's integer tensors as ``static const`` arrays and computes exactly what
:mod:`spikequant.runtime.calif` computes (ISI coding of 8-bit pixels, bipolar spikes, gate and
saturation, sum-pool + pool neuron, the rounding phase in closed form; dense loops, no floating
point, only ``<stdio.h>``, ``<stdint.h>`` and ``<stdlib.h>``)::

    int sq_run(const int32_t *pixels, int64_t *logits, SqTrace *trace)

runs one window on ``pixels`` (``[C, H, W]``, 0..255) and returns the prediction (-1 for a pixel
outside 0..255); ``logits`` receives ``floor(z / 2^logit_shift)`` of the exact integer logits
``z``; ``trace`` (if not NULL) receives, for every spiking layer ``l`` whose pointer is set, the
spikes of every step (``spikes[l]``: ``[T][C][H][W]`` before pooling, ``pool_spikes[l]``: the
pool neuron's, ``[T][C][H/p][W/p]``), the counts after the rounding phase (``counts[l]``,
``pool_counts[l]``) and the total number of spikes (``total_spikes``).

Membranes, currents and logits are ``int64_t`` where :func:`membrane_bits` proves that every one
of them fits (the file then builds with ``cc -O2 -std=c99``); otherwise they are ``__int128``,
which needs GCC or Clang (``cc -O2 -std=gnu99``). Accumulators, spikes and counts are int64, as in
the C++ engine. Its ``main`` reads the ``C H W`` pixels as whitespace-separated integers from
standard input and prints ``prediction P``, ``logits ...`` and, with ``--spikes``, per spiking
layer and step a line ``spikes l t`` (and ``pool l t``) of ``-``/``0``/``+`` characters, then per
layer ``counts l ...`` (and ``pool_counts l ...``) and ``total_spikes N``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ProgramError
from .emit_c import ACCUMULATE, chw, int_array
from .format import Program

_INT64_SAFE = 2**62


def _pre_pool(layer: dict) -> list[int]:
    """A layer's output shape before the neuron's sum-pool (the conv output)."""
    neuron = layer["neuron"]
    if neuron is None or neuron["pool"] == 1:
        return list(layer["out_shape"])
    k, pad, stride = layer["kernel"], layer["padding"], layer["stride"]
    _, h, w = layer["in_shape"]
    return [layer["out_shape"][0], (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1]


def membrane_bits(program: Program) -> int:
    """64 if every membrane ``V''``, current ``A acc + B``, ``2 V'' +- TH``, ``k TH`` and logit
    sum of ``program`` provably stays below ``2^62`` in magnitude, else 128.

    The bound: an input pixel sends at most ``ceil(K / T)`` spikes per step, a layer's spikes are
    +-1; firing never grows ``|V''|``, so after ``t`` steps ``|V''| <= t (|A| a + |B|)`` with ``a``
    the channel's ``sum |L|`` times the input bound; the rounding phase adds ``|A| sum |L| r`` for
    the incoming rounding counts ``|r| <= R`` and nets ``|k| <= (2 |V''| + TH) / (2 TH) + 1``
    (``<= qmax`` with gate and saturation); a pool membrane stays below ``p^2`` over the steps."""
    layers = program.layers
    timesteps = program.timesteps
    budget = int(program.header["input"]["budget"])
    step_in, round_in = -(-budget // timesteps), 0
    largest = 0
    for i, layer in enumerate(layers):
        rows = np.abs(program.weight(i).astype(np.int64)).reshape(layer["out_shape"][0], -1)
        row_sums = [int(v) for v in rows.sum(1)]
        mults = [abs(int(v)) for v in program.tensors[f"layers.{i}.multiplier"]]
        offsets = [abs(int(v)) for v in program.tensors[f"layers.{i}.offset"]]
        neuron = layer["neuron"]
        if neuron is None:
            largest = max(
                [largest]
                + [
                    m * s * (timesteps * step_in + round_in) + b
                    for m, s, b in zip(mults, row_sums, offsets, strict=True)
                ]
            )
            break
        thresholds = [int(v) for v in program.tensors[f"layers.{i}.threshold"]]
        if min(thresholds) < 1:
            raise ProgramError(f"layer {i}: Ca-LIF thresholds must be positive")
        counts = 0
        for m, s, b, th in zip(mults, row_sums, offsets, thresholds, strict=True):
            membrane = timesteps * (m * s * step_in + b) + m * s * round_in
            largest = max(largest, 2 * membrane + 2 * th)
            k = (2 * membrane + th) // (2 * th) + 1
            if neuron["qmax"] is not None and neuron["gate"]:
                k = min(k, int(neuron["qmax"]))
            counts = max(counts, k)
        step_in, round_in = 1, counts
        if neuron["pool"] > 1:  # |P| < p^2 after every step: |k'| <= (2 (1 + R) + 1) / 2 + 1
            round_in = counts + 2
    if int(layers[-1].get("logit_shift", 0)) > 61:
        return 128
    return 64 if largest < _INT64_SAFE else 128


_RUNTIME = r"""
typedef struct {
    int8_t *spikes[N_LAYERS];       /* [T][C][H][W]: Ca-LIF spikes of every step (before pooling) */
    int8_t *pool_spikes[N_LAYERS];  /* [T][C][H/p][W/p]: the pool neuron's spikes */
    int64_t *counts[N_LAYERS];      /* [C][H][W]: counts after the rounding phase */
    int64_t *pool_counts[N_LAYERS]; /* [C][H/p][W/p] */
    int64_t total_spikes;           /* steps: every nonzero spike; rounding phase: |k| */
} SqTrace;

static wide_t V[N_LAYERS][MAX_NEURONS];  /* membranes V'' */
static int64_t C[N_LAYERS][MAX_NEURONS], PV[N_LAYERS][MAX_NEURONS], PC[N_LAYERS][MAX_NEURONS];

static wide_t floor_div(wide_t a, wide_t b) {  /* floor(a / b), b > 0 */
    wide_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static wide_t round_count(wide_t v, wide_t th, int64_t tie_up) {
    return tie_up ? floor_div(2 * v + th, 2 * th) : -floor_div(th - 2 * v, 2 * th);
}

static int64_t isi_sent(int64_t pix, int64_t t) {  /* spikes a pixel has sent up to step t */
    int64_t sent, total;
    if (pix <= 0) return 0;
    sent = ((t + 1) * BUDGET * pix - 1) / (255 * TIMESTEPS);
    total = BUDGET * pix / 255;
    return sent < total ? sent : total;
}

static int64_t magnitude(int64_t v) { return v < 0 ? -v : v; }

/* one step (rounding = 0) or the rounding phase (rounding = 1) of spiking layer l:
   acc -> membranes, spikes (or net rounding counts) before pooling in pre, after it in out */
static int64_t fire(const LayerSpec *L, int l, const int64_t *acc, int rounding, int64_t *pre,
                    int64_t *out) {
    int64_t hw = L->hout * L->wout, area = L->npool * L->npool, fired = 0, o, p, y, x, dy, dx;
    for (o = 0; o < L->cout; ++o) {
        wide_t th = L->threshold[o], m = L->mult[o], b = rounding ? 0 : L->offset[o];
        for (p = 0; p < hw; ++p) {
            int64_t j = o * hw + p, c = C[l][j], s;
            wide_t v = V[l][j] + m * acc[j] + b;
            if (!rounding) {
                int pos = v >= th && (L->qmax < 0 || c < L->qmax);
                int neg = v <= -th && (!L->gate || c > 0);
                s = pos - neg;
            } else {
                wide_t k = round_count(v, th, L->tie_up);
                if (L->qmax >= 0 && k > L->qmax - c) k = L->qmax - c;
                if (L->gate && k < -c) k = -c;
                s = (int64_t)k;
            }
            V[l][j] = v - s * th;
            C[l][j] = c + s;
            pre[j] = s;
            fired += rounding ? magnitude(s) : s != 0;
        }
    }
    if (L->npool == 1) {
        for (p = 0; p < L->cout * hw; ++p) out[p] = pre[p];
        return fired;
    }
    for (o = 0; o < L->cout; ++o)
        for (y = 0; y < L->hp; ++y)
            for (x = 0; x < L->wp; ++x) {
                int64_t j = (o * L->hp + y) * L->wp + x, v = PV[l][j], s;
                for (dy = 0; dy < L->npool; ++dy)
                    for (dx = 0; dx < L->npool; ++dx)
                        v += pre[(o * L->hout + y * L->npool + dy) * L->wout + x * L->npool + dx];
                if (!rounding)
                    s = (v >= area) - (v <= -area);
                else
                    s = (int64_t)round_count(v, area, L->tie_up);
                PV[l][j] = v - s * area;
                PC[l][j] += s;
                out[j] = s;
                fired += rounding ? magnitude(s) : s != 0;
            }
    return fired;
}

int sq_run(const int32_t *pixels, int64_t *logits, SqTrace *trace) {
    static int64_t x[MAX_VALUES], pooled[MAX_VALUES], acc[MAX_VALUES], pre[MAX_VALUES];
    static wide_t sum[N_CLASSES];
    int64_t total = 0, i, o;
    int t, l, best = 0;
    for (i = 0; i < INPUT_SIZE; ++i)
        if (pixels[i] < 0 || pixels[i] > 255) return -1;
    for (l = 0; l < N_LAYERS; ++l)
        for (i = 0; i < MAX_NEURONS; ++i) V[l][i] = C[l][i] = PV[l][i] = PC[l][i] = 0;
    for (o = 0; o < N_CLASSES; ++o) sum[o] = 0;
    for (t = 0; t <= TIMESTEPS; ++t) {  /* steps 1..T, then (t = T) the rounding phase */
        int rounding = t == TIMESTEPS, step = t + 1;
        for (i = 0; i < INPUT_SIZE; ++i)  /* the input sends no rounding spikes */
            x[i] = rounding ? 0 : isi_sent(pixels[i], step) - isi_sent(pixels[i], step - 1);
        for (l = 0; l < N_LAYERS; ++l) {
            const LayerSpec *L = &LAYERS[l];
            int64_t n = L->cout * L->hout * L->wout, m = L->cout * L->hp * L->wp;
            accumulate(L, x, pooled, acc);
            if (!L->spiking) {
                for (o = 0; o < N_CLASSES; ++o)
                    sum[o] += (wide_t)L->mult[o] * acc[o] + (rounding ? L->offset[o] : 0);
                break;
            }
            total += fire(L, l, acc, rounding, pre, x);
            if (rounding || !trace) continue;
            if (trace->spikes[l])
                for (i = 0; i < n; ++i) trace->spikes[l][(int64_t)t * n + i] = (int8_t)pre[i];
            if (trace->pool_spikes[l] && L->npool > 1)
                for (i = 0; i < m; ++i) trace->pool_spikes[l][(int64_t)t * m + i] = (int8_t)x[i];
        }
    }
    for (o = 0; o < N_CLASSES; ++o) {
        logits[o] = (int64_t)floor_div(sum[o], (wide_t)1 << LOGIT_SHIFT);
        if (logits[o] > logits[best]) best = (int)o;
    }
    if (trace) {
        trace->total_spikes = total;
        for (l = 0; l < N_LAYERS; ++l) {
            const LayerSpec *L = &LAYERS[l];
            int64_t n = L->cout * L->hout * L->wout, m = L->cout * L->hp * L->wp;
            if (!L->spiking) continue;
            if (trace->counts[l])
                for (i = 0; i < n; ++i) trace->counts[l][i] = C[l][i];
            if (trace->pool_counts[l] && L->npool > 1)
                for (i = 0; i < m; ++i) trace->pool_counts[l][i] = PC[l][i];
        }
    }
    return best;
}

static void print_spikes(const char *what, int l, const int8_t *s, int64_t n) {
    int t;
    int64_t i;
    for (t = 0; t < TIMESTEPS; ++t) {
        printf("%s %d %d ", what, l, t);
        for (i = 0; i < n; ++i) putchar("-0+"[s[(int64_t)t * n + i] + 1]);
        putchar('\n');
    }
}

static void print_counts(const char *what, int l, const int64_t *c, int64_t n) {
    int64_t i;
    printf("%s %d", what, l);
    for (i = 0; i < n; ++i) printf(" %lld", (long long)c[i]);
    putchar('\n');
}

int main(int argc, char **argv) {
    static int32_t pixels[INPUT_SIZE];
    static int64_t logits[N_CLASSES];
    static int8_t spikes[N_LAYERS][TIMESTEPS * MAX_NEURONS];
    static int8_t pool_spikes[N_LAYERS][TIMESTEPS * MAX_NEURONS];
    static int64_t counts[N_LAYERS][MAX_NEURONS], pool_counts[N_LAYERS][MAX_NEURONS];
    SqTrace trace;
    int dump = 0, a, l, prediction;
    int64_t i;
    for (a = 1; a < argc; ++a) {
        if (argv[a][0] == '-' && argv[a][1] == '-' && argv[a][2] == 's') dump = 1;
        if (argv[a][0] == '-' && argv[a][1] == '-' && argv[a][2] == 'f') {
            fprintf(stderr, "a Ca-LIF program takes one static image (no --frames)\n");
            return 2;
        }
    }
    for (i = 0; i < INPUT_SIZE; ++i) {
        long value;
        if (scanf("%ld", &value) != 1 || value < 0 || value > 255) {
            fprintf(stderr, "expected %lld pixels 0..255\n", (long long)INPUT_SIZE);
            return 2;
        }
        pixels[i] = (int32_t)value;
    }
    for (l = 0; l < N_LAYERS; ++l) {
        trace.spikes[l] = spikes[l];
        trace.pool_spikes[l] = pool_spikes[l];
        trace.counts[l] = counts[l];
        trace.pool_counts[l] = pool_counts[l];
    }
    prediction = sq_run(pixels, logits, &trace);
    printf("prediction %d\nlogits", prediction);
    for (i = 0; i < N_CLASSES; ++i) printf(" %lld", (long long)logits[i]);
    printf("\n");
    if (!dump) return 0;
    for (l = 0; l < N_LAYERS; ++l) {
        const LayerSpec *L = &LAYERS[l];
        int64_t n = L->cout * L->hout * L->wout, m = L->cout * L->hp * L->wp;
        if (!L->spiking) continue;
        print_spikes("spikes", l, spikes[l], n);
        if (L->npool > 1) print_spikes("pool", l, pool_spikes[l], m);
        print_counts("counts", l, counts[l], n);
        if (L->npool > 1) print_counts("pool_counts", l, pool_counts[l], m);
    }
    printf("total_spikes %lld\n", (long long)trace.total_spikes);
    return 0;
}
"""


def emit_c_calif(program: Program, digest: str | None = None) -> str:
    """The C source of the Ca-LIF ``program`` (module docstring), headed by the program file's
    SHA-256 ``digest`` (default: the program's content hash)."""
    if program.kind != "calif":
        raise ProgramError("emit_c_calif writes Ca-LIF programs")
    header, layers = program.header, program.layers
    bits = membrane_bits(program)
    wide = bits == 128
    int8 = all(program.weight(i).dtype == np.int8 for i in range(len(layers)))
    weight_type = "int8_t" if int8 else "int32_t"
    std = "gnu99" if wide else "c99"
    note = (
        "   Membranes and logits in __int128: needs a compiler with __int128 (GCC, Clang).\n"
        if wide
        else "   Membranes and logits in int64 (a bound proves they fit).\n"
    )
    parts = [
        f"/* spikequant integer program (Ca-LIF), sha256 {digest or program.content_hash()}.\n"
        "   Generated by spikequant deploy --emit-c; semantics: spikequant.runtime.calif.\n"
        + note
        + f"   Build: cc -O2 -std={std} this.c -o model; run: ./model [--spikes] < pixels.txt */\n",
        "#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n\n",
        "__extension__ typedef __int128 wide_t;\n\n" if wide else "typedef int64_t wide_t;\n\n",
        "typedef struct {\n  int64_t conv, cin, hin, win, pool, cout, hout, wout, k, stride, pad;\n"
        "  int64_t spiking, qmax, gate, tie_up, npool, hp, wp;  /* qmax < 0: none */\n"
        f"  const {weight_type} *weight;\n  const int64_t *mult, *offset, *threshold;\n"
        "} LayerSpec;\n\n",
    ]
    specs = []
    input_size = int(np.prod(header["input"]["shape"]))
    max_neurons, max_values = 1, input_size
    for i, layer in enumerate(layers):
        parts.append(int_array(f"W{i}", program.weight(i), weight_type))
        parts.append(int_array(f"M{i}", program.tensors[f"layers.{i}.multiplier"], "int64_t"))
        parts.append(int_array(f"B{i}", program.tensors[f"layers.{i}.offset"], "int64_t"))
        threshold = program.tensors.get(f"layers.{i}.threshold", np.zeros(1, np.int64))
        parts.append(int_array(f"TH{i}", threshold, "int64_t"))
        if layer["pool"] != 1:
            raise ProgramError(f"layer {i}: a Ca-LIF layer pools in its neuron, not its input")
        cin, hin, win = chw(layer["in_shape"])
        cout, hout, wout = chw(_pre_pool(layer))
        neuron = layer["neuron"] or {}
        pool = int(neuron.get("pool", 1))
        qmax = neuron.get("qmax")
        values = [
            int(layer["op"] == "conv"), cin, hin, win, 1, cout, hout, wout, layer["kernel"],
            layer["stride"], layer["padding"], int(bool(neuron)), -1 if qmax is None else qmax,
            int(neuron.get("gate", False)), int(neuron.get("tie", "up") == "up"), pool,
            hout // pool, wout // pool,
        ]  # fmt: skip
        specs.append(
            "{" + ", ".join(str(int(v)) for v in values) + f", W{i}, M{i}, B{i}, TH{i}" + "}"
        )
        max_neurons = max(max_neurons, cout * hout * wout)
        max_values = max(max_values, cin * hin * win, cout * hout * wout)
    defines = {
        "N_LAYERS": len(layers),
        "N_CLASSES": header["num_classes"],
        "TIMESTEPS": program.timesteps,
        "BUDGET": header["input"]["budget"],
        "INPUT_SIZE": input_size,
        "LOGIT_SHIFT": layers[-1].get("logit_shift", 0),
        "MAX_NEURONS": max_neurons,
        "MAX_VALUES": max_values,
    }
    parts.append("".join(f"#define {k} {int(v)}\n" for k, v in defines.items()) + "\n")
    parts.append("static const LayerSpec LAYERS[N_LAYERS] = {\n  " + ",\n  ".join(specs) + "\n};\n")
    parts.append(ACCUMULATE)
    parts.append(_RUNTIME)
    return "".join(parts)


__all__ = ["emit_c_calif", "membrane_bits"]
