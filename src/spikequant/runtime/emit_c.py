r"""Emit a QLIF program as one dependency-free C99 source file (``spikequant deploy --emit-c``).

The file holds the program's integer tensors as ``static const`` arrays and computes exactly what
:mod:`spikequant.runtime.reference` computes (dense loops, int64 arithmetic, no floating point,
only ``<stdio.h>``, ``<stdint.h>`` and ``<stdlib.h>``)::

    int sq_run(const int32_t *codes, int frames, int64_t *logits, uint8_t **spikes)

runs one window (``codes``: one static input ``[C, H, W]`` repeated over T steps, or ``frames`` =
T frames one after another) and returns the prediction; ``spikes[l]`` (if not NULL) receives
layer ``l``'s spikes of every step, ``[T][C][H][W]``. Its ``main`` reads the input codes as
whitespace-separated integers from standard input (``C H W`` values, or ``T C H W`` for a frame
program with ``--frames``) and prints ``prediction P``, ``logits ...`` and, with ``--spikes``, one
line of 0/1 characters per spiking layer and step. Build: ``cc -O2 -std=c99 model.c -o model``.
:func:`emit_c` hands a Ca-LIF program to :mod:`spikequant.runtime.emit_c_calif`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ProgramError
from .format import Program


def int_array(name: str, values: np.ndarray, ctype: str) -> str:
    """``static const ctype name[n] = {...};`` holding ``values`` flattened (C order)."""
    flat = np.asarray(values).reshape(-1).tolist()
    if ctype == "int64_t":
        body = ", ".join(f"{int(v)}LL" for v in flat)
    else:
        body = ", ".join(str(int(v)) for v in flat)
    return f"static const {ctype} {name}[{max(len(flat), 1)}] = {{{body or '0'}}};\n"


def chw(shape) -> tuple[int, int, int]:
    """``[C, H, W]`` or ``[F]`` as ``(C, H, W)`` (``(F, 1, 1)``)."""
    return (shape[0], shape[1], shape[2]) if len(shape) == 3 else (shape[0], 1, 1)


ACCUMULATE = r"""
/* one layer: x (int64, in_shape) -> acc (int64, out_shape before the neuron) */
static void accumulate(const LayerSpec *L, const int64_t *x, int64_t *pooled, int64_t *acc) {
    int64_t c, y, xx, o, hp = L->hin / L->pool, wp = L->win / L->pool;
    for (c = 0; c < L->cin; ++c)
        for (y = 0; y < hp; ++y)
            for (xx = 0; xx < wp; ++xx) {
                int64_t s = 0, dy, dx;
                for (dy = 0; dy < L->pool; ++dy)
                    for (dx = 0; dx < L->pool; ++dx)
                        s += x[(c * L->hin + y * L->pool + dy) * L->win + xx * L->pool + dx];
                pooled[(c * hp + y) * wp + xx] = s;
            }
    if (!L->conv) {
        int64_t fan_in = L->cin * hp * wp, i;
        for (o = 0; o < L->cout; ++o) {
            int64_t s = 0;
            for (i = 0; i < fan_in; ++i) s += (int64_t)L->weight[o * fan_in + i] * pooled[i];
            acc[o] = s;
        }
        return;
    }
    for (o = 0; o < L->cout; ++o)
        for (y = 0; y < L->hout; ++y)
            for (xx = 0; xx < L->wout; ++xx) {
                int64_t s = 0, ky, kx;
                for (c = 0; c < L->cin; ++c)
                    for (ky = 0; ky < L->k; ++ky) {
                        int64_t iy = y * L->stride - L->pad + ky;
                        if (iy < 0 || iy >= hp) continue;
                        for (kx = 0; kx < L->k; ++kx) {
                            int64_t ix = xx * L->stride - L->pad + kx;
                            if (ix < 0 || ix >= wp) continue;
                            s += (int64_t)L->weight[((o * L->cin + c) * L->k + ky) * L->k + kx]
                                 * pooled[(c * hp + iy) * wp + ix];
                        }
                    }
                acc[(o * L->hout + y) * L->wout + xx] = s;
            }
}
"""
"""The dense conv/linear loops both emitters share: ``LayerSpec`` starts with ``conv, cin, hin,
win, pool, cout, hout, wout, k, stride, pad`` and has a ``weight`` array."""

_RUNTIME = r"""
static int64_t floor_shift(int64_t v, int s) {  /* floor(v / 2^s) without relying on >> of < 0 */
    int64_t d = (int64_t)1 << s;
    int64_t q = v / d;
    return (v % d != 0 && v < 0) ? q - 1 : q;
}

typedef struct { int64_t score; int64_t index; } Rank;

static int rank_cmp(const void *a, const void *b) {
    const Rank *x = (const Rank *)a, *y = (const Rank *)b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

int sq_run(const int32_t *codes, int frames, int64_t *logits, uint8_t **spikes) {
    static int64_t state[N_LAYERS][MAX_NEURONS];
    static int64_t x[MAX_VALUES], next[MAX_VALUES], pooled[MAX_VALUES], acc[MAX_VALUES];
    static int64_t current[MAX_VALUES], pre[MAX_VALUES];
    static Rank rank[MAX_VALUES];
    int t, l, best = 0;
    int64_t i, o;
    for (l = 0; l < N_LAYERS; ++l)
        for (i = 0; i < MAX_NEURONS; ++i) state[l][i] = 0;
    for (o = 0; o < N_CLASSES; ++o) logits[o] = 0;
    for (t = 0; t < TIMESTEPS; ++t) {
        const int32_t *frame = codes + (frames ? (int64_t)t * INPUT_SIZE : 0);
        for (i = 0; i < INPUT_SIZE; ++i) x[i] = frame[i];
        for (l = 0; l < N_LAYERS; ++l) {
            const LayerSpec *L = &LAYERS[l];
            int64_t hw = L->hout * L->wout, n = L->cout * hw, p;
            accumulate(L, x, pooled, acc);
            if (!L->spiking) {
                for (o = 0; o < L->cout; ++o) logits[o] += L->mult[o] * acc[o] + L->offset[o];
                break;
            }
            for (o = 0; o < L->cout; ++o)
                for (p = 0; p < hw; ++p) {
                    int64_t j = o * hw + p;
                    current[j] = floor_shift(L->mult[o] * acc[j] + L->offset[o], L->shift);
                    pre[j] = state[l][j] * ((int64_t)1 << (L->frac + 1 - L->leak_shift))
                             + 2 * current[j];
                }
            if (L->drop > 0) {
                for (p = 0; p < hw; ++p) {
                    int64_t s = 0;
                    for (o = 0; o < L->cout; ++o) s += pre[o * hw + p];
                    rank[p].score = s;
                    rank[p].index = p;
                }
                qsort(rank, (size_t)hw, sizeof(Rank), rank_cmp);
                for (i = 0; i < L->drop; ++i)
                    for (o = 0; o < L->cout; ++o) {
                        int64_t j = o * hw + rank[i].index;
                        pre[j] -= 2 * current[j];
                    }
            }
            for (i = 0; i < n; ++i) {
                int64_t v = pre[i], half = (int64_t)1 << L->frac;
                int64_t mag = ((v < 0 ? -v : v) + half - 1) / (half * 2);
                int64_t level = v < 0 ? -mag : mag;
                int fired = v >= L->threshold[i / hw];
                if (level < L->lo) level = L->lo;
                if (level > L->hi) level = L->hi;
                if (fired) level = 0;
                if (L->binary && level < 0) level = 0;
                state[l][i] = level;
                next[i] = fired;
                if (spikes && spikes[l]) spikes[l][(int64_t)t * n + i] = (uint8_t)fired;
            }
            for (i = 0; i < n; ++i) x[i] = next[i];
        }
    }
    for (o = 1; o < N_CLASSES; ++o)
        if (logits[o] > logits[best]) best = (int)o;
    return best;
}

int main(int argc, char **argv) {
    static int32_t codes[TIMESTEPS * INPUT_SIZE];
    static int64_t logits[N_CLASSES];
    static uint8_t buffers[N_LAYERS][TIMESTEPS * MAX_NEURONS];
    uint8_t *spikes[N_LAYERS];
    int frames = 0, dump = 0, a, l, t, prediction;
    int64_t i, count;
    for (a = 1; a < argc; ++a) {
        if (argv[a][0] == '-' && argv[a][1] == '-' && argv[a][2] == 'f') frames = 1;
        if (argv[a][0] == '-' && argv[a][1] == '-' && argv[a][2] == 's') dump = 1;
    }
    count = (int64_t)(frames ? TIMESTEPS : 1) * INPUT_SIZE;
    for (i = 0; i < count; ++i) {
        long value;
        if (scanf("%ld", &value) != 1) {
            fprintf(stderr, "expected %lld input codes\n", (long long)count);
            return 2;
        }
        codes[i] = (int32_t)value;
    }
    for (l = 0; l < N_LAYERS; ++l) spikes[l] = buffers[l];
    prediction = sq_run(codes, frames, logits, spikes);
    printf("prediction %d\nlogits", prediction);
    for (i = 0; i < N_CLASSES; ++i) printf(" %lld", (long long)logits[i]);
    printf("\n");
    if (dump)
        for (l = 0; l < N_LAYERS; ++l) {
            int64_t n = LAYERS[l].cout * LAYERS[l].hout * LAYERS[l].wout;
            if (!LAYERS[l].spiking) continue;
            for (t = 0; t < TIMESTEPS; ++t) {
                printf("spikes %d %d ", l, t);
                for (i = 0; i < n; ++i) putchar('0' + spikes[l][(int64_t)t * n + i]);
                putchar('\n');
            }
        }
    return 0;
}
"""


def emit_c(program: Program, digest: str | None = None) -> str:
    """The C source of ``program`` (a QLIF program: module docstring; a Ca-LIF program:
    :mod:`spikequant.runtime.emit_c_calif`), headed by the program file's SHA-256 ``digest``
    (default: the program's content hash)."""
    if program.kind == "calif":
        from .emit_c_calif import emit_c_calif

        return emit_c_calif(program, digest)
    if program.kind != "qlif":
        raise ProgramError(f"--emit-c cannot write a program of kind {program.kind!r}")
    layers = program.layers
    header = program.header
    parts = [
        f"/* spikequant integer program (QLIF), sha256 {digest or program.content_hash()}.\n"
        "   Generated by spikequant deploy --emit-c; semantics: spikequant.runtime.reference.\n"
        "   Build: cc -O2 -std=c99 this.c -o model; run: ./model [--frames] [--spikes] "
        "< codes.txt */\n",
        "#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n\n",
        "typedef struct {\n  int64_t conv, cin, hin, win, pool, cout, hout, wout, k, stride, pad;\n"
        "  int64_t spiking, frac, shift, leak_shift, lo, hi, binary, drop;\n"
        "  const int8_t *weight; const int64_t *mult, *offset, *threshold;\n} LayerSpec;\n\n",
    ]
    specs = []
    max_neurons, max_values = 1, int(np.prod(header["input"]["shape"]))
    for i, layer in enumerate(layers):
        parts.append(int_array(f"W{i}", program.weight(i), "int8_t"))
        parts.append(int_array(f"M{i}", program.tensors[f"layers.{i}.multiplier"], "int64_t"))
        parts.append(int_array(f"B{i}", program.tensors[f"layers.{i}.offset"], "int64_t"))
        neuron = layer["neuron"] or {}
        threshold = program.tensors.get(f"layers.{i}.threshold", np.zeros(1, np.int64))
        parts.append(int_array(f"TH{i}", threshold, "int64_t"))
        cin, hin, win = chw(layer["in_shape"])
        cout, hout, wout = chw(layer["out_shape"])
        levels = neuron.get("levels", [0, 0])
        values = [
            int(layer["op"] == "conv"), cin, hin, win, layer["pool"], cout, hout, wout,
            layer["kernel"], layer["stride"], layer["padding"], int(bool(neuron)),
            layer["frac_bits"], layer["shift"], neuron.get("leak_shift", 0), levels[0], levels[1],
            int(neuron.get("binary_membrane", False)), neuron.get("spatial_drop", 0),
        ]  # fmt: skip
        specs.append(
            "{" + ", ".join(str(int(v)) for v in values) + f", W{i}, M{i}, B{i}, TH{i}" + "}"
        )
        max_neurons = max(max_neurons, cout * hout * wout)
        max_values = max(max_values, cin * hin * win, cout * hout * wout)
    parts.append(
        f"#define N_LAYERS {len(layers)}\n#define N_CLASSES {header['num_classes']}\n"
        f"#define TIMESTEPS {header['timesteps']}\n"
        f"#define INPUT_SIZE {int(np.prod(header['input']['shape']))}\n"
        f"#define MAX_NEURONS {max_neurons}\n#define MAX_VALUES {max_values}\n\n"
    )
    parts.append("static const LayerSpec LAYERS[N_LAYERS] = {\n  " + ",\n  ".join(specs) + "\n};\n")
    parts.append(ACCUMULATE)
    parts.append(_RUNTIME)
    return "".join(parts)


__all__ = ["ACCUMULATE", "chw", "emit_c", "int_array"]
