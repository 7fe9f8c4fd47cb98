// Integer runtime of a spikequant program (see spikequant/runtime/reference.py for the semantics;
// this file must produce the same spikes, membranes and logits bit for bit).
//
// Plain C++17 with a C API (no PyTorch, no Python): loaded through ctypes so that a deployed
// process needs neither. Per sample and time step, layer by layer:
//   * spiking input: every set bit of the previous layer's spike bitmap (one event) adds one
//     weight row (all output channels of one input channel and kernel tap) to the int32
//     accumulators of the outputs it reaches -- additions only; ternary weights stay packed
//     2 bits per weight and are expanded 4 at a time through a 256-entry table;
//   * analog input (first layer, 8-bit codes): every non-zero code adds code * row;
//   * integer membrane update with int64 fixed point, stored membranes packed 2 bits per neuron
//     (levels lo..hi, at most 4 levels) or one int8 each.
// Batched mode runs samples in parallel with OpenMP; streaming mode is one call per time step.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include <omp.h>

namespace {

struct Layer {
  // configuration (see CFG_* order in native.py)
  int64_t conv, cin, hin, win, pool, hp, wp, cout, hout, wout, k, stride, pad;
  int64_t spiking, frac, shift, leak_shift, lo, hi, binary, drop, ternary, analog;
  int64_t row_len;  // cout rounded up to 4 for packed rows
  std::vector<uint8_t> packed;  // ternary: [rows][row_len / 4]
  std::vector<int8_t> dense;    // int8:    [rows][cout]
  std::vector<int64_t> mult, offset, threshold;
  std::vector<int32_t> pooled_of;  // input position y * win + x -> pooled py * wp + px, or -1
  uint32_t unpack[256];            // packed membrane byte -> four int8 levels
  int64_t neurons() const { return cout * hout * wout; }
  int64_t inputs() const { return cin * hin * win; }
  bool packed_state() const { return hi - lo + 1 <= 4; }
};

struct Scratch {  // one per thread: stays hot in cache across the samples a thread runs
  std::vector<int32_t> acc;    // accumulator, CHW order (what the neuron update reads)
  std::vector<int32_t> hwc;    // accumulator of a scattered conv layer, HWC order
  std::vector<int32_t> block;  // the Cout accumulators of one output position (gather_conv)
  std::vector<int64_t> pre;    // pre-fire membrane (CHW)
  std::vector<int8_t> level;   // membrane levels of one layer, unpacked (CHW)
  std::vector<uint8_t> fired;  // spikes of one layer, one byte each (CHW, padded to 64)
  std::vector<int64_t> channel_sum;
  std::vector<uint8_t> dropped;  // spatial pruning: 1 = the position's current is zeroed
  std::vector<std::pair<int64_t, int64_t>> score;
  std::vector<int32_t> head, fill, list;  // input events bucketed by pooled position
};

struct Sample {
  std::vector<std::vector<uint8_t>> state;   // per spiking layer: membranes (packed or int8)
  std::vector<std::vector<uint64_t>> spikes;  // per spiking layer: output bitmap (CHW order)
  std::vector<int64_t> first_current;         // cached 2 I of the analog first layer (CHW)
  bool first_cached = false;
};

int8_t LUT[256][4];
alignas(16) int32_t LUT32[256][4];

// four int32 lanes (GCC/Clang vector extension: SSE2 / NEON / plain code elsewhere)
typedef int32_t quad_t __attribute__((vector_size(16)));

inline quad_t lut_quad(uint8_t byte) {
  quad_t v;
  std::memcpy(&v, LUT32[byte], sizeof v);
  return v;
}

struct Engine {
  std::vector<Layer> layers;
  int64_t batch = 0, classes = 0;
  std::vector<Sample> samples;
  std::vector<Scratch> scratch;
};

inline int get_level(const Layer& L, const std::vector<uint8_t>& st, int64_t i) {
  if (L.packed_state()) return int((st[i >> 2] >> ((i & 3) * 2)) & 3) + int(L.lo);
  return int(int8_t(st[i]));
}

inline void set_level(const Layer& L, std::vector<uint8_t>& st, int64_t i, int v) {
  if (L.packed_state()) {
    int sh = int((i & 3) * 2);
    st[i >> 2] = uint8_t((st[i >> 2] & ~(3 << sh)) | ((v - int(L.lo)) << sh));
  } else {
    st[i] = uint8_t(int8_t(v));
  }
}

// the byte that stores four membranes at level 0
inline uint8_t zero_byte(const Layer& L) {
  const uint8_t code = uint8_t(-L.lo) & 3;
  return uint8_t(code | code << 2 | code << 4 | code << 6);
}

// acc[out_pos * cout + o] += scale * W[row][o]
inline void add_row(const Layer& L, int64_t row, int32_t* acc, int32_t scale) {
  const int64_t co = L.cout;
  if (L.ternary) {
    const uint8_t* r = L.packed.data() + row * (L.row_len / 4);
    if (scale == 1) {
      // one byte = four weights = one 4 x int32 vector add (row_len padding is zero; acc has
      // row_len slack)
      const int64_t quads = L.row_len / 4;
      for (int64_t q = 0; q < quads; ++q) {
        quad_t a;
        std::memcpy(&a, acc + q * 4, sizeof a);
        a += lut_quad(r[q]);
        std::memcpy(acc + q * 4, &a, sizeof a);
      }
    } else {
      for (int64_t q = 0; q < L.row_len / 4; ++q) {
        quad_t a;
        std::memcpy(&a, acc + q * 4, sizeof a);
        a += lut_quad(r[q]) * scale;
        std::memcpy(acc + q * 4, &a, sizeof a);
      }
    }
  } else {
    const int8_t* r = L.dense.data() + row * co;
    if (scale == 1) {
      for (int64_t o = 0; o < co; ++o) acc[o] += r[o];
    } else {
      for (int64_t o = 0; o < co; ++o) acc[o] += scale * int32_t(r[o]);
    }
  }
}

// one input event (channel c at pooled position py, px, weight `value`) into the accumulators
inline void scatter(const Layer& L, int64_t c, int64_t py, int64_t px, int32_t value,
                    int32_t* acc) {
  if (!L.conv) {
    int64_t row = (c * L.hp + py) * L.wp + px;
    add_row(L, row, acc, value);
    return;
  }
  for (int64_t ky = 0; ky < L.k; ++ky) {
    int64_t ny = py + L.pad - ky;
    if (ny < 0 || ny % L.stride) continue;
    int64_t oy = ny / L.stride;
    if (oy >= L.hout) continue;
    for (int64_t kx = 0; kx < L.k; ++kx) {
      int64_t nx = px + L.pad - kx;
      if (nx < 0 || nx % L.stride) continue;
      int64_t ox = nx / L.stride;
      if (ox >= L.wout) continue;
      int64_t row = (c * L.k + ky) * L.k + kx;
      add_row(L, row, acc + (oy * L.wout + ox) * L.cout, value);
    }
  }
}

// every set bit of a CHW spike bitmap as (channel, pooled position); channel by channel, so
// that no bit index needs a division (floor-mode pooling drops the last row/col: position -1)
template <class Fn>
inline void for_each_event(const Layer& L, const std::vector<uint64_t>& bits, Fn&& fn) {
  const int64_t hw = L.hin * L.win;
  const int32_t* pooled_of = L.pooled_of.data();
  for (int64_t c = 0; c < L.cin; ++c) {
    const int64_t begin = c * hw, end = begin + hw;
    for (int64_t wi = begin >> 6; wi <= (end - 1) >> 6; ++wi) {
      uint64_t word = bits[size_t(wi)];
      const int64_t base = wi * 64;
      if (base < begin) word &= ~uint64_t(0) << (begin - base);
      if (base + 64 > end) word &= ~uint64_t(0) >> (base + 64 - end);
      while (word) {
        const int32_t pos = pooled_of[base + __builtin_ctzll(word) - begin];
        word &= word - 1;
        if (pos >= 0) fn(c, pos);
      }
    }
  }
}

// gather_conv's output loop for ternary rows of Q bytes (4 Q output channels)
template <int Q>
void gather_ternary(const Layer& L, const int32_t* head, const int32_t* list, int32_t* acc) {
  const int64_t hw = L.hout * L.wout, k = L.k;
  const uint8_t* rows = L.packed.data();
  for (int64_t oy = 0; oy < L.hout; ++oy) {
    for (int64_t ox = 0; ox < L.wout; ++ox) {
      quad_t block[Q] = {};
      for (int64_t ky = 0; ky < k; ++ky) {
        const int64_t iy = oy * L.stride - L.pad + ky;
        if (iy < 0 || iy >= L.hp) continue;
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t ix = ox * L.stride - L.pad + kx;
          if (ix < 0 || ix >= L.wp) continue;
          const int64_t pos = iy * L.wp + ix, tap = ky * k + kx;
          for (int32_t e = head[pos]; e < head[pos + 1]; ++e) {
            const uint8_t* r = rows + (int64_t(list[e]) * k * k + tap) * Q;
            for (int q = 0; q < Q; ++q) block[q] += lut_quad(r[q]);
          }
        }
      }
      int32_t out[4 * Q];
      std::memcpy(out, block, sizeof out);
      const int64_t p = oy * L.wout + ox;
      for (int64_t o = 0; o < L.cout; ++o) acc[o * hw + p] = out[o];
    }
  }
}

// conv layers, output-stationary: bucket the input events by pooled position, then every
// output sums the rows of the events in its receptive field into its own Cout accumulators
// (a contiguous block that stays in L1), instead of scattering each event over 9 outputs;
// the block then goes to the CHW accumulator
void gather_conv(const Layer& L, const std::vector<uint64_t>& bits, Scratch& W, int32_t* acc) {
  const int64_t pooled = L.hp * L.wp, hw = L.hout * L.wout;
  int32_t* head = W.head.data();
  int32_t* list = W.list.data();
  int32_t* fill = W.fill.data();
  std::fill(head, head + pooled + 1, 0);
  for_each_event(L, bits, [&](int64_t, int32_t pos) { ++head[pos + 1]; });
  for (int64_t p = 0; p < pooled; ++p) head[p + 1] += head[p];
  std::copy(head, head + pooled, fill);
  for_each_event(L, bits, [&](int64_t c, int32_t pos) { list[fill[pos]++] = int32_t(c); });
  if (L.ternary) {
    switch (L.row_len / 4) {  // the common widths: the block stays in vector registers
      case 1: return gather_ternary<1>(L, head, list, acc);
      case 2: return gather_ternary<2>(L, head, list, acc);
      case 4: return gather_ternary<4>(L, head, list, acc);
      case 8: return gather_ternary<8>(L, head, list, acc);
      case 16: return gather_ternary<16>(L, head, list, acc);
      default: break;
    }
  }
  int32_t* a = W.block.data();
  const size_t block_len = size_t(L.row_len + 4);
  for (int64_t oy = 0; oy < L.hout; ++oy) {
    for (int64_t ox = 0; ox < L.wout; ++ox) {
      std::fill(a, a + block_len, 0);
      for (int64_t ky = 0; ky < L.k; ++ky) {
        int64_t iy = oy * L.stride - L.pad + ky;
        if (iy < 0 || iy >= L.hp) continue;
        for (int64_t kx = 0; kx < L.k; ++kx) {
          int64_t ix = ox * L.stride - L.pad + kx;
          if (ix < 0 || ix >= L.wp) continue;
          int64_t pos = iy * L.wp + ix;
          for (int32_t e = head[pos]; e < head[pos + 1]; ++e)
            add_row(L, (int64_t(list[e]) * L.k + ky) * L.k + kx, a, 1);
        }
      }
      const int64_t p = oy * L.wout + ox;
      for (int64_t o = 0; o < L.cout; ++o) acc[o * hw + p] = a[o];
    }
  }
}

// linear layer on spikes (one output position: CHW = HWC). Ternary rows: the events' rows are
// listed first, then summed eight quads (32 outputs) at a time in vector registers, so the
// accumulators are loaded and stored once per layer instead of once per event
void accumulate_spikes(const Layer& L, const std::vector<uint64_t>& bits, Scratch& W,
                       int32_t* acc) {
  const int64_t pooled = L.hp * L.wp;
  if (!L.ternary) {
    for_each_event(L, bits, [&](int64_t c, int32_t pos) { add_row(L, c * pooled + pos, acc, 1); });
    return;
  }
  int32_t* rows = W.list.data();
  int64_t count = 0;
  for_each_event(L, bits, [&](int64_t c, int32_t pos) { rows[count++] = int32_t(c * pooled + pos); });
  const int64_t quads = L.row_len / 4;
  const uint8_t* packed = L.packed.data();
  int64_t q0 = 0;
  for (; q0 + 8 <= quads; q0 += 8) {
    quad_t block[8] = {};
    for (int64_t e = 0; e < count; ++e) {
      const uint8_t* r = packed + int64_t(rows[e]) * quads + q0;
      for (int q = 0; q < 8; ++q) block[q] += lut_quad(r[q]);
    }
    std::memcpy(acc + 4 * q0, block, sizeof block);
  }
  for (; q0 < quads; ++q0) {
    quad_t block = {};
    for (int64_t e = 0; e < count; ++e) block += lut_quad(packed[int64_t(rows[e]) * quads + q0]);
    std::memcpy(acc + 4 * q0, &block, sizeof block);
  }
}

// acc in HWC order (conv) or per output (linear)
void accumulate_codes(const Layer& L, const int32_t* codes, int32_t* acc) {
  const int64_t hw = L.hin * L.win;
  for (int64_t i = 0; i < L.inputs(); ++i) {
    int32_t v = codes[i];
    if (!v) continue;
    int64_t c = i / hw, rem = i % hw, y = rem / L.win, x = rem % L.win;
    int64_t py = y / L.pool, px = x / L.pool;
    if (py >= L.hp || px >= L.wp) continue;
    scatter(L, c, py, px, v, acc);
  }
}

// the first layer's accumulator from the input codes, CHW order
void accumulate_input(const Layer& L, const int32_t* codes, Scratch& W, int32_t* acc) {
  const int64_t hw = L.hout * L.wout, co = L.cout;
  if (!L.conv || hw == 1) {
    std::fill(acc, acc + L.row_len + 4, 0);
    accumulate_codes(L, codes, acc);
    return;
  }
  int32_t* hwc = W.hwc.data();
  std::fill(hwc, hwc + hw * co + 4, 0);
  accumulate_codes(L, codes, hwc);
  for (int64_t p = 0; p < hw; ++p)
    for (int64_t o = 0; o < co; ++o) acc[o * hw + p] = hwc[p * co + o];
}

inline int thread_index(const Engine* E) {
  int t = omp_get_thread_num();
  return t < int(E->scratch.size()) ? t : 0;
}

inline int64_t floor_shift(int64_t v, int64_t s) { return v >> s; }  // arithmetic shift (floor)

// 2 I = 2 floor((M acc + B) / 2^S) of every neuron of a spiking layer (CHW)
void input_current(const Layer& L, const int32_t* acc, int64_t* current2) {
  const int64_t hw = L.hout * L.wout;
  for (int64_t o = 0; o < L.cout; ++o) {
    const int64_t m = L.mult[size_t(o)], b = L.offset[size_t(o)], s = L.shift;
    const int32_t* a = acc + o * hw;
    int64_t* out = current2 + o * hw;
    for (int64_t p = 0; p < hw; ++p) out[p] = 2 * floor_shift(m * int64_t(a[p]) + b, s);
  }
}

// threshold and stored level of every neuron: pre = leak + 2 I (0 for a dropped position),
// s = pre >= TH, n' = 0 if s else clamp(sign(pre) ((|pre| + 2^F - 1) >> (F+1)), lo, hi).
// LO = -1 or 0 (with hi = 1: ternary / binary membranes): the rounded magnitude reaches 1 exactly
// when |pre| >= 2^F + 1, so n' is two comparisons; LO = -128: any levels.
template <int LO, class Leak>
void fire(const Layer& L, int64_t hw, const int64_t* current2, const uint8_t* dropped, Leak leak,
          int8_t* level, uint8_t* fired) {
  const int64_t half = int64_t(1) << L.frac, round_up = half - 1, out_shift = L.frac + 1;
  const int64_t lo = L.binary ? std::max<int64_t>(L.lo, 0) : L.lo, hi = L.hi;
  const int64_t one = half + 1;
  for (int64_t o = 0; o < L.cout; ++o) {
    const int64_t th = L.threshold[size_t(o)];
    const int64_t* current = current2 + o * hw;
    int8_t* lv = level + o * hw;
    uint8_t* f = fired + o * hw;
    for (int64_t p = 0; p < hw; ++p) {
      const int64_t x = leak(lv[p]) + (dropped[p] ? 0 : current[p]);
      int64_t l;
      if (LO == -1) {
        l = int64_t(x >= one) - int64_t(x <= -one);
      } else if (LO == 0) {
        l = int64_t(x >= one);
      } else {
        const int64_t mag = ((x < 0 ? -x : x) + round_up) >> out_shift;
        l = std::min(std::max(x < 0 ? -mag : mag, lo), hi);
      }
      const bool spike = x >= th;
      f[p] = uint8_t(spike);
      lv[p] = int8_t(spike ? 0 : l);
    }
  }
}

// neuron update of one spiking layer: 2 I (CHW, from input_current) -> state, spike bitmap
// (CHW). Per channel, the positions are contiguous: the loops vectorise.
void neuron_update(const Layer& L, Sample& S, Scratch& W, size_t li, const int64_t* current2) {
  const int64_t co = L.cout, hw = L.hout * L.wout, n = co * hw;
  auto& st = S.state[li];
  int8_t* level = W.level.data();
  if (L.packed_state()) {
    // one stored byte -> four int8 levels through a 256-entry table
    for (int64_t j = 0; j < n / 4; ++j) std::memcpy(level + 4 * j, &L.unpack[st[size_t(j)]], 4);
    for (int64_t i = n / 4 * 4; i < n; ++i) level[i] = int8_t(get_level(L, st, i));
  } else {
    std::memcpy(level, st.data(), size_t(n));
  }
  // pre-fire membrane: pre = n 2^(F+1-j) + 2 I, formed where it is read
  // n 2^(F+1-j) as a shift of the unsigned bits (a vector shift, not an emulated 64-bit multiply)
  const int leak_bits = int(L.frac + 1 - L.leak_shift);
  auto leak = [leak_bits](int8_t level) { return int64_t(uint64_t(int64_t(level)) << leak_bits); };
  // a dropped position keeps only the leak (its current is zeroed): applied in the fire loop
  uint8_t* dropped = W.dropped.data();
  std::fill(dropped, dropped + hw, 0);
  if (L.drop > 0) {
    int64_t* sum = W.channel_sum.data();
    std::fill(sum, sum + hw, 0);
    for (int64_t o = 0; o < co; ++o)
      for (int64_t p = 0; p < hw; ++p)
        sum[p] += leak(level[o * hw + p]) + current2[o * hw + p];
    auto& score = W.score;
    for (int64_t p = 0; p < hw; ++p) score[size_t(p)] = {sum[p], p};
    std::nth_element(score.begin(), score.begin() + (L.drop - 1), score.begin() + hw);
    for (int64_t d = 0; d < L.drop; ++d) dropped[score[size_t(d)].second] = 1;
  }
  const int64_t lo = L.binary ? std::max<int64_t>(L.lo, 0) : L.lo;
  uint8_t* fired = W.fired.data();
  if (L.hi == 1 && lo == -1)
    fire<-1>(L, hw, current2, dropped, leak, level, fired);
  else if (L.hi == 1 && lo == 0)
    fire<0>(L, hw, current2, dropped, leak, level, fired);
  else
    fire<-128>(L, hw, current2, dropped, leak, level, fired);
  const int64_t words = (n + 63) / 64;
  std::fill(fired + n, fired + words * 64, 0);
  uint64_t* bits = S.spikes[li].data();
  for (int64_t w = 0; w < words; ++w) {
    // eight 0/1 bytes -> eight bits: the multiplier moves byte j's bit to bit 56 + j, and no two
    // partial products overlap (so no carries)
    uint64_t word = 0;
    for (int j = 0; j < 8; ++j) {
      uint64_t eight;
      std::memcpy(&eight, fired + w * 64 + j * 8, 8);
      word |= ((eight * 0x0102040810204080ULL) >> 56) << (8 * j);
    }
    bits[w] = word;
  }
  if (L.packed_state()) {
    // four levels -> codes level - lo (0..3) in four bytes -> one byte: the multiplier moves
    // code j (bits 8j) to bits 24 + 2j; the other partial products fall in disjoint 2-bit
    // fields below bit 24 or above bit 31 (no carries into the top byte)
    const uint32_t minus_lo = uint32_t(-L.lo & 3) * 0x01010101u;
    for (int64_t j = 0; j < n / 4; ++j) {
      uint32_t four;
      std::memcpy(&four, level + 4 * j, 4);
      // (level - lo) mod 4 per byte from the low two bits (sums <= 6: no carry between bytes)
      const uint32_t codes = ((four & 0x03030303u) + minus_lo) & 0x03030303u;
      st[size_t(j)] = uint8_t((codes * 0x01041040u) >> 24);
    }
    for (int64_t i = n / 4 * 4; i < n; ++i) set_level(L, st, i, level[i]);
  } else {
    std::memcpy(st.data(), level, size_t(n));
  }
}

void step_sample(Engine& E, Sample& S, Scratch& W, const int32_t* input, int64_t* logits,
                 bool reuse_first) {
  size_t prev_index = 0;
  int32_t* acc = W.acc.data();
  for (size_t li = 0; li < E.layers.size(); ++li) {
    const Layer& L = E.layers[li];
    const int64_t* current2 = W.pre.data();  // overwritten in place by neuron_update
    if (li == 0 && L.analog && L.spiking) {
      // a static analog input gives the same current every step: computed once per window
      if (!(reuse_first && S.first_cached)) {
        accumulate_input(L, input, W, acc);
        input_current(L, acc, S.first_current.data());
        S.first_cached = true;
      }
      current2 = S.first_current.data();
    } else {
      if (li == 0) {
        accumulate_input(L, input, W, acc);
      } else if (L.conv) {
        gather_conv(L, S.spikes[prev_index], W, acc);
      } else {
        std::fill(acc, acc + L.row_len + 4, 0);
        accumulate_spikes(L, S.spikes[prev_index], W, acc);
      }
      if (!L.spiking) {
        for (int64_t o = 0; o < L.cout; ++o) logits[o] = L.mult[o] * int64_t(acc[o]) + L.offset[o];
        return;
      }
      input_current(L, acc, W.pre.data());
    }
    neuron_update(L, S, W, li, current2);
    prev_index = li;
  }
}

}  // namespace

extern "C" {

int sq_abi_version() { return 1; }

// cfg: n_layers * 22 int64 (conv, cin, hin, win, pool, cout, hout, wout, k, stride, pad,
// spiking, frac, shift, leak_shift, lo, hi, binary, drop, ternary, analog, unused);
// weights[i]: int8 levels [cout][cin][k][k] or [cout][in]; mult/offset/threshold int64 [cout].
void* sq_create(int64_t n_layers, const int64_t* cfg, const int8_t* const* weights,
                const int64_t* const* mult, const int64_t* const* offset,
                const int64_t* const* threshold, int64_t batch) {
  for (int b = 0; b < 256; ++b)
    for (int j = 0; j < 4; ++j) {
      int code = (b >> (2 * j)) & 3;
      LUT[b][j] = int8_t(code == 1 ? 1 : (code == 3 ? -1 : 0));
      LUT32[b][j] = LUT[b][j];
    }
  Engine* E = new Engine();
  E->batch = batch;
  size_t max_acc = 0, max_hw = 0, max_pooled = 0, max_events = 0, max_row = 0, max_neurons = 0;
  for (int64_t i = 0; i < n_layers; ++i) {
    const int64_t* c = cfg + i * 22;
    Layer L{};
    L.conv = c[0]; L.cin = c[1]; L.hin = c[2]; L.win = c[3]; L.pool = c[4];
    L.cout = c[5]; L.hout = c[6]; L.wout = c[7]; L.k = c[8]; L.stride = c[9]; L.pad = c[10];
    L.spiking = c[11]; L.frac = c[12]; L.shift = c[13]; L.leak_shift = c[14];
    L.lo = c[15]; L.hi = c[16]; L.binary = c[17]; L.drop = c[18]; L.ternary = c[19];
    L.analog = c[20];
    L.hp = L.hin / L.pool; L.wp = L.win / L.pool;
    L.row_len = (L.cout + 3) / 4 * 4;
    const int64_t taps = L.conv ? L.k * L.k : 1;
    const int64_t in_rows = L.conv ? L.cin * taps : L.cin * L.hp * L.wp;
    const int64_t fan_in = L.conv ? L.cin * taps : in_rows;
    // re-layout [cout][fan_in] -> rows [fan_in][cout] so one event reads one contiguous row
    if (L.ternary) {
      L.packed.assign(size_t(in_rows * L.row_len / 4), 0);
      for (int64_t o = 0; o < L.cout; ++o)
        for (int64_t r = 0; r < in_rows; ++r) {
          int8_t w = weights[i][o * fan_in + r];
          uint8_t code = w == 1 ? 1 : (w == -1 ? 3 : 0);
          L.packed[size_t(r * (L.row_len / 4) + o / 4)] |= uint8_t(code << ((o % 4) * 2));
        }
    } else {
      L.dense.assign(size_t(in_rows * L.cout), 0);
      for (int64_t o = 0; o < L.cout; ++o)
        for (int64_t r = 0; r < in_rows; ++r) L.dense[size_t(r * L.cout + o)] = weights[i][o * fan_in + r];
    }
    L.mult.assign(mult[i], mult[i] + L.cout);
    L.offset.assign(offset[i], offset[i] + L.cout);
    if (L.spiking) L.threshold.assign(threshold[i], threshold[i] + L.cout);
    for (int b = 0; b < 256; ++b) {
      int8_t four[4];
      for (int q = 0; q < 4; ++q) four[q] = int8_t(((b >> (2 * q)) & 3) + L.lo);
      std::memcpy(&L.unpack[b], four, 4);
    }
    L.pooled_of.assign(size_t(L.hin * L.win), -1);
    for (int64_t y = 0; y < L.hp * L.pool; ++y)
      for (int64_t x = 0; x < L.wp * L.pool; ++x)
        L.pooled_of[size_t(y * L.win + x)] = int32_t(y / L.pool * L.wp + x / L.pool);
    max_row = std::max(max_row, size_t(L.row_len + 4));
    max_neurons = std::max(max_neurons, size_t(L.neurons()));
    max_acc = std::max(max_acc, size_t(L.hout * L.wout * L.row_len + 4));
    max_hw = std::max(max_hw, size_t(L.hout * L.wout));
    max_pooled = std::max(max_pooled, size_t(L.hp * L.wp + 1));
    max_events = std::max(max_events, size_t(L.inputs()));
    E->layers.push_back(std::move(L));
  }
  E->classes = E->layers.back().cout;
  E->samples.resize(size_t(batch));
  for (auto& S : E->samples) {
    for (auto& L : E->layers) {
      size_t n = size_t(L.neurons());
      S.state.emplace_back(L.spiking ? (L.packed_state() ? (n + 3) / 4 : n) : 0, 0);
      S.spikes.emplace_back(L.spiking ? (n + 63) / 64 : 0, 0);
      if (L.spiking && L.packed_state() && L.lo != 0) {
        // level 0 is stored as the code -lo
        for (size_t j = 0; j < n; ++j) set_level(L, S.state.back(), int64_t(j), 0);
      }
    }
    const Layer& first = E->layers[0];
    S.first_current.assign(first.analog && first.spiking ? size_t(first.neurons()) : 0, 0);
  }
  const Layer& first = E->layers[0];
  const size_t hwc_len = first.conv ? size_t(first.hout * first.wout * first.cout + 4) : 0;
  E->scratch.resize(size_t(std::max(1, omp_get_max_threads())));
  for (auto& W : E->scratch) {
    W.acc.assign(max_acc, 0);
    W.hwc.assign(hwc_len, 0);
    W.block.assign(max_row, 0);
    W.pre.assign(max_neurons, 0);
    W.level.assign(max_neurons, 0);
    W.fired.assign((max_neurons + 63) / 64 * 64, 0);
    W.channel_sum.assign(max_hw, 0);
    W.dropped.assign(max_hw, 0);
    W.score.assign(max_hw, {0, 0});
    W.head.assign(max_pooled, 0);
    W.fill.assign(max_pooled, 0);
    W.list.assign(max_events, 0);
  }
  return E;
}

void sq_free(void* engine) { delete static_cast<Engine*>(engine); }

void sq_reset(void* engine) {
  Engine* E = static_cast<Engine*>(engine);
  for (auto& S : E->samples) {
    for (size_t li = 0; li < E->layers.size(); ++li) {
      const Layer& L = E->layers[li];
      std::fill(S.spikes[li].begin(), S.spikes[li].end(), 0);
      if (!L.spiking) continue;
      if (L.packed_state()) {
        const int64_t n = L.neurons();
        std::fill(S.state[li].begin(), S.state[li].begin() + n / 4, zero_byte(L));
        for (int64_t j = n / 4 * 4; j < n; ++j) set_level(L, S.state[li], j, 0);
      } else {
        std::fill(S.state[li].begin(), S.state[li].end(), 0);
      }
    }
    S.first_cached = false;
  }
}

// one time step for every sample: input int32 [batch][inputs], logits int64 [batch][classes]
void sq_step(void* engine, const int32_t* input, int64_t* logits, int64_t threads) {
  Engine* E = static_cast<Engine*>(engine);
  const int64_t in_size = E->layers[0].inputs();
  threads = std::min<int64_t>(threads, int64_t(E->scratch.size()));
#pragma omp parallel for num_threads(int(threads)) schedule(dynamic, 1) if (threads > 1)
  for (int64_t b = 0; b < E->batch; ++b)
    step_sample(*E, E->samples[size_t(b)], E->scratch[size_t(thread_index(E))],
                input + b * in_size, logits + b * E->classes, false);
}

// whole window: input [T][batch][inputs] (frames) or [batch][inputs] repeated T times (static);
// logits_sum int64 [batch][classes]. The state is reset before and left after.
void sq_run(void* engine, const int32_t* input, int64_t timesteps, int64_t is_static,
            int64_t* logits_sum, int64_t threads) {
  Engine* E = static_cast<Engine*>(engine);
  sq_reset(engine);
  const int64_t in_size = E->layers[0].inputs();
  std::memset(logits_sum, 0, sizeof(int64_t) * size_t(E->batch * E->classes));
  threads = std::min<int64_t>(threads, int64_t(E->scratch.size()));
#pragma omp parallel for num_threads(int(threads)) schedule(dynamic, 1) if (threads > 1)
  for (int64_t b = 0; b < E->batch; ++b) {
    std::vector<int64_t> step(size_t(E->classes));
    for (int64_t t = 0; t < timesteps; ++t) {
      const int32_t* x = is_static ? input + b * in_size : input + (t * E->batch + b) * in_size;
      step_sample(*E, E->samples[size_t(b)], E->scratch[size_t(thread_index(E))], x,
                  step.data(), is_static != 0);
      for (int64_t o = 0; o < E->classes; ++o) logits_sum[b * E->classes + o] += step[size_t(o)];
    }
  }
}

// last step of spiking layer `li` for every sample: spikes int8 / membrane level int8 in CHW
void sq_trace(void* engine, int64_t li, int8_t* spikes, int8_t* membranes) {
  Engine* E = static_cast<Engine*>(engine);
  const Layer& L = E->layers[size_t(li)];
  const int64_t n = L.neurons();
  for (int64_t b = 0; b < E->batch; ++b) {
    const Sample& S = E->samples[size_t(b)];
    for (int64_t j = 0; j < n; ++j) {
      spikes[b * n + j] = int8_t((S.spikes[size_t(li)][size_t(j >> 6)] >> (j & 63)) & 1);
      membranes[b * n + j] = int8_t(get_level(L, S.state[size_t(li)], j));
    }
  }
}

// bytes: [0] weights as held, [1] membrane state, [2] spike bitmaps, [3] scratch (all samples)
void sq_bytes(void* engine, int64_t* out) {
  Engine* E = static_cast<Engine*>(engine);
  int64_t w = 0, st = 0, sp = 0, scratch = 0;
  for (auto& L : E->layers) {
    w += int64_t(L.packed.size() + L.dense.size());
    w += int64_t(sizeof(int64_t) * (L.mult.size() + L.offset.size() + L.threshold.size()));
  }
  for (auto& S : E->samples) {
    for (auto& v : S.state) st += int64_t(v.size());
    for (auto& v : S.spikes) sp += int64_t(v.size() * sizeof(uint64_t));
    scratch += int64_t(S.first_current.size() * 8);
  }
  for (auto& L : E->layers) scratch += int64_t(L.pooled_of.size() * 4);
  for (auto& W : E->scratch)
    scratch += int64_t((W.acc.size() + W.hwc.size() + W.block.size()) * 4 +
                       (W.pre.size() + W.channel_sum.size()) * 8 + W.level.size() + W.dropped.size() +
                       W.fired.size() + W.score.size() * 16 +
                       (W.head.size() + W.fill.size() + W.list.size()) * 4);
  out[0] = w; out[1] = st; out[2] = sp; out[3] = scratch;
}

}  // extern "C"

// ---------------------------------------------------------------------------------------------
// Ca-LIF programs (see spikequant/runtime/calif.py for the semantics, bit for bit): ISI-coded
// 8-bit input, bipolar spikes, int64 membranes V'' and signed counts c per neuron, an optional
// sum-pool + pool neuron per layer, then one rounding phase after step T. Event-driven: every
// nonzero input (a spike +-1, or a net rounding count) adds value * weight row to the int64
// accumulators of the outputs it reaches.
namespace {

struct CaLayer {
  int64_t conv, cin, hin, win, cout, hout, wout, k, stride, pad, spiking, qmax, gate, tie_up,
      pool;
  int64_t hp, wp;             // pooled output
  std::vector<int64_t> rows;  // [fan_in rows][cout]
  std::vector<int64_t> mult, offset, threshold;
  int64_t inputs() const { return cin * hin * win; }
  int64_t neurons() const { return cout * hout * wout; }
  int64_t outputs() const { return pool > 1 ? cout * hp * wp : neurons(); }
};

// membranes and logits in 128 bits: exact for every program (a program with power-of-two steps
// would fit 64 bits; learned float32 steps need up to ~80)
typedef __int128 wide_t;

struct CaEngine {
  std::vector<CaLayer> layers;
  int64_t batch = 0, classes = 0, timesteps = 0, budget = 0, in_size = 0, logit_shift = 0;
  // per sample and spiking layer: final counts (before / after pooling), total spikes
  std::vector<std::vector<std::vector<int64_t>>> counts, pool_counts;
  std::vector<int64_t> spikes;
};

inline wide_t floor_div(wide_t a, wide_t b) {  // b > 0
  wide_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

inline wide_t round_count(wide_t v, wide_t th, bool tie_up) {
  return tie_up ? floor_div(2 * v + th, 2 * th) : -floor_div(th - 2 * v, 2 * th);
}

void ca_accumulate(const CaLayer& L, const std::vector<int64_t>& x, std::vector<int64_t>& acc) {
  std::fill(acc.begin(), acc.begin() + L.hout * L.wout * L.cout, 0);
  const int64_t hw = L.hin * L.win, co = L.cout;
  for (int64_t i = 0; i < L.inputs(); ++i) {
    const int64_t v = x[size_t(i)];
    if (!v) continue;
    if (!L.conv) {
      const int64_t* r = L.rows.data() + i * co;
      for (int64_t o = 0; o < co; ++o) acc[size_t(o)] += v * r[o];
      continue;
    }
    const int64_t c = i / hw, y = (i % hw) / L.win, xx = i % L.win;
    for (int64_t ky = 0; ky < L.k; ++ky) {
      int64_t ny = y + L.pad - ky;
      if (ny < 0 || ny % L.stride) continue;
      int64_t oy = ny / L.stride;
      if (oy >= L.hout) continue;
      for (int64_t kx = 0; kx < L.k; ++kx) {
        int64_t nx = xx + L.pad - kx;
        if (nx < 0 || nx % L.stride) continue;
        int64_t ox = nx / L.stride;
        if (ox >= L.wout) continue;
        const int64_t* r = L.rows.data() + ((c * L.k + ky) * L.k + kx) * co;
        int64_t* a = acc.data() + (oy * L.wout + ox) * co;
        for (int64_t o = 0; o < co; ++o) a[o] += v * r[o];
      }
    }
  }
}

struct CaState {
  std::vector<wide_t> v;
  std::vector<int64_t> c, pv, pc;
};

// one step (round = false) or the rounding phase (round = true) of spiking layer L:
// acc (HWC) -> state, output spikes / net rounding counts `out` (CHW, after pooling)
int64_t ca_neurons(const CaLayer& L, CaState& S, const std::vector<int64_t>& acc, bool round,
                   std::vector<int64_t>& pre, std::vector<int64_t>& out) {
  const int64_t co = L.cout, hw = L.hout * L.wout;
  int64_t fired = 0;
  for (int64_t o = 0; o < co; ++o) {
    const int64_t th = L.threshold[size_t(o)], m = L.mult[size_t(o)];
    const int64_t b = round ? 0 : L.offset[size_t(o)];
    for (int64_t p = 0; p < hw; ++p) {
      const size_t idx = size_t(o * hw + p);
      wide_t v = S.v[idx] + wide_t(m) * acc[size_t(p * co + o)] + b;
      int64_t c = S.c[idx], s;
      if (!round) {
        bool pos = v >= th && (L.qmax < 0 || c < L.qmax);
        bool neg = v <= -th && (!L.gate || c > 0);
        s = int64_t(pos) - int64_t(neg);
      } else {
        wide_t k = round_count(v, th, L.tie_up != 0);  // |k| <= qmax + 1 after the clamps
        if (L.qmax >= 0 && k > L.qmax - c) k = L.qmax - c;
        if (L.gate && k < -c) k = -c;
        s = int64_t(k);
      }
      S.v[idx] = v - wide_t(s) * th;
      S.c[idx] = c + s;
      pre[idx] = s;
      fired += round ? std::llabs(s) : int64_t(s != 0);
    }
  }
  if (L.pool == 1) {
    std::copy(pre.begin(), pre.begin() + L.neurons(), out.begin());
    return fired;
  }
  const int64_t p = L.pool, area = p * p;
  for (int64_t o = 0; o < co; ++o)
    for (int64_t y = 0; y < L.hp; ++y)
      for (int64_t x = 0; x < L.wp; ++x) {
        int64_t sum = 0;
        for (int64_t dy = 0; dy < p; ++dy)
          for (int64_t dx = 0; dx < p; ++dx)
            sum += pre[size_t((o * L.hout + y * p + dy) * L.wout + x * p + dx)];
        const size_t idx = size_t((o * L.hp + y) * L.wp + x);
        int64_t v = S.pv[idx] + sum, s;
        if (!round)
          s = int64_t(v >= area) - int64_t(v <= -area);
        else
          s = int64_t(round_count(v, area, L.tie_up != 0));
        S.pv[idx] = v - s * area;
        S.pc[idx] += s;
        out[idx] = s;
        fired += round ? std::llabs(s) : int64_t(s != 0);
      }
  return fired;
}

void ca_sample(CaEngine& E, int64_t b, const int32_t* pix, int64_t* out_logits) {
  const size_t n = E.layers.size();
  std::vector<CaState> state(n);
  size_t widest = size_t(E.in_size), acc_len = 1, pre_len = 1;
  for (size_t li = 0; li < n; ++li) {
    const CaLayer& L = E.layers[li];
    widest = std::max(widest, size_t(L.outputs()));
    acc_len = std::max(acc_len, size_t(L.hout * L.wout * L.cout));
    pre_len = std::max(pre_len, size_t(L.neurons()));
    if (!L.spiking) continue;
    state[li].v.assign(size_t(L.neurons()), 0);
    state[li].c.assign(size_t(L.neurons()), 0);
    state[li].pv.assign(size_t(L.pool > 1 ? L.outputs() : 0), 0);
    state[li].pc.assign(size_t(L.pool > 1 ? L.outputs() : 0), 0);
  }
  std::vector<int64_t> x(widest), y(widest), acc(acc_len), pre(pre_len);
  std::vector<wide_t> logits(size_t(E.classes), 0);
  int64_t fired = 0;
  const int64_t T = E.timesteps, K = E.budget;
  auto upto = [&](int64_t p, int64_t t) -> int64_t {
    if (p <= 0) return 0;
    return std::min(((t + 1) * K * p - 1) / (255 * T), (K * p) / 255);
  };
  for (int64_t t = 1; t <= T; ++t) {
    for (int64_t i = 0; i < E.in_size; ++i) x[size_t(i)] = upto(pix[i], t) - upto(pix[i], t - 1);
    for (size_t li = 0; li < n; ++li) {
      const CaLayer& L = E.layers[li];
      ca_accumulate(L, x, acc);
      if (!L.spiking) {
        for (int64_t o = 0; o < L.cout; ++o)
          logits[size_t(o)] += wide_t(L.mult[size_t(o)]) * acc[size_t(o)];
        break;
      }
      fired += ca_neurons(L, state[li], acc, false, pre, y);
      std::swap(x, y);
    }
  }
  std::fill(x.begin(), x.end(), 0);  // the input sends no rounding spikes
  for (size_t li = 0; li < n; ++li) {
    const CaLayer& L = E.layers[li];
    ca_accumulate(L, x, acc);
    if (!L.spiking) {
      for (int64_t o = 0; o < L.cout; ++o)
        logits[size_t(o)] += wide_t(L.mult[size_t(o)]) * acc[size_t(o)] + L.offset[size_t(o)];
      break;
    }
    fired += ca_neurons(L, state[li], acc, true, pre, y);
    std::swap(x, y);
  }
  const wide_t unit = wide_t(1) << E.logit_shift;
  for (int64_t o = 0; o < E.classes; ++o)
    out_logits[o] = int64_t(floor_div(logits[size_t(o)], unit));
  E.spikes[size_t(b)] = fired;
  for (size_t li = 0; li < n; ++li) {
    E.counts[size_t(b)][li] = state[li].c;
    E.pool_counts[size_t(b)][li] = state[li].pc;
  }
}

}  // namespace

extern "C" {

// cfg: n_layers * 16 int64 (conv, cin, hin, win, cout, hout, wout [before pooling], k, stride,
// pad, spiking, qmax [-1: none], gate, tie_up, pool, unused); weights[i]: int64 [cout][fan_in];
// mult/offset/threshold int64 [cout]; the input is in_size 8-bit pixels per sample; the logits
// leave as floor(z / 2^logit_shift).
void* sqc_create(int64_t n_layers, const int64_t* cfg, const int64_t* const* weights,
                 const int64_t* const* mult, const int64_t* const* offset,
                 const int64_t* const* threshold, int64_t batch, int64_t timesteps,
                 int64_t budget, int64_t in_size, int64_t logit_shift) {
  CaEngine* E = new CaEngine();
  E->logit_shift = logit_shift;
  E->batch = batch;
  E->timesteps = timesteps;
  E->budget = budget;
  E->in_size = in_size;
  for (int64_t i = 0; i < n_layers; ++i) {
    const int64_t* c = cfg + i * 16;
    CaLayer L{};
    L.conv = c[0]; L.cin = c[1]; L.hin = c[2]; L.win = c[3]; L.cout = c[4]; L.hout = c[5];
    L.wout = c[6]; L.k = c[7]; L.stride = c[8]; L.pad = c[9]; L.spiking = c[10];
    L.qmax = c[11]; L.gate = c[12]; L.tie_up = c[13]; L.pool = c[14];
    L.hp = L.hout / L.pool; L.wp = L.wout / L.pool;
    const int64_t fan_in = L.conv ? L.cin * L.k * L.k : L.inputs();
    L.rows.assign(size_t(fan_in * L.cout), 0);
    for (int64_t o = 0; o < L.cout; ++o)
      for (int64_t r = 0; r < fan_in; ++r) L.rows[size_t(r * L.cout + o)] = weights[i][o * fan_in + r];
    L.mult.assign(mult[i], mult[i] + L.cout);
    L.offset.assign(offset[i], offset[i] + L.cout);
    if (L.spiking) L.threshold.assign(threshold[i], threshold[i] + L.cout);
    E->layers.push_back(std::move(L));
  }
  E->classes = E->layers.back().cout;
  E->counts.assign(size_t(batch), std::vector<std::vector<int64_t>>(size_t(n_layers)));
  E->pool_counts.assign(size_t(batch), std::vector<std::vector<int64_t>>(size_t(n_layers)));
  E->spikes.assign(size_t(batch), 0);
  return E;
}

void sqc_free(void* engine) { delete static_cast<CaEngine*>(engine); }

// pixels int32 [batch][in_size] (0..255) -> logits int64 [batch][classes] (whole window)
void sqc_run(void* engine, const int32_t* pixels, int64_t* logits, int64_t threads) {
  CaEngine* E = static_cast<CaEngine*>(engine);
  threads = std::max<int64_t>(1, threads);
#pragma omp parallel for num_threads(int(threads)) schedule(dynamic, 1) if (threads > 1)
  for (int64_t b = 0; b < E->batch; ++b)
    ca_sample(*E, b, pixels + b * E->in_size, logits + b * E->classes);
}

// final counts of spiking layer li (before pooling, and after it when pooled) and total spikes
void sqc_counts(void* engine, int64_t li, int64_t* counts, int64_t* pool_counts,
                int64_t* spikes) {
  CaEngine* E = static_cast<CaEngine*>(engine);
  const CaLayer& L = E->layers[size_t(li)];
  for (int64_t b = 0; b < E->batch; ++b) {
    const auto& c = E->counts[size_t(b)][size_t(li)];
    std::copy(c.begin(), c.end(), counts + b * L.neurons());
    if (L.pool > 1) {
      const auto& pc = E->pool_counts[size_t(b)][size_t(li)];
      std::copy(pc.begin(), pc.end(), pool_counts + b * L.outputs());
    }
    spikes[b] = E->spikes[size_t(b)];
  }
}

}  // extern "C"
