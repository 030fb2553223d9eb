#pragma once
/// \file fused_preprocess.hpp
/// Preprocessing in one pass over the output (resize + normalise + channel order + layout +
/// padding), bit-identical to the reference policies of preprocess.hpp, which they are
/// tested against (tests/unit/test_fused_preprocess.cpp):
///
/// * `FusedTorchvisionPreprocess` (= `TorchvisionPreprocess`): per output row of a plane, the
///   two input rows it reads are normalised (the 256-entry table of the reference) into a
///   row slot, interpolated horizontally once per slot and blended vertically straight into
///   the padded CHW plane; the row's right padding is zeroed in the same pass. No normalised
///   copy of the image is written. The reference's operations on the same float values, so
///   the same roundings: `torch_vrow_fma`, and for the horizontal pass `torch_hrow` (per
///   lane `torch_hrow_fma`'s fma, its taps gathered by AVX-512 / AVX2 lane permutes where
///   the CPU has them).
/// * `FusedDetectron2Preprocess` (= `Detectron2Preprocess`): Pillow's two passes, the
///   horizontal one with every output's taps widened to the axis' fixed kernel size (a tap
///   outside a sample's window has weight 0, which adds exactly 0 in Pillow's int32
///   arithmetic) so its loop has a compile-time trip count, the vertical one accumulated a
///   row at a time (vectorised, AVX2 chosen at run time), then `clip8`, the normalisation
///   table and the planar write in the same loop: no resized 8-bit image is stored.
///
/// Work is split in blocks of output rows (`run(..., for_blocks)`); the policies here run
/// the blocks in order on the calling thread, the OpenMP ones (omp_preprocess.hpp,
/// rcnn::omp) on `num_threads` threads. Each block has its own scratch, so blocks are
/// independent and the result does not depend on the split.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "rcnn/config.hpp"
#include "rcnn/preprocess/pil_resize.hpp"
#include "rcnn/preprocess/preprocess.hpp"
#include "rcnn/preprocess/torch_resize.hpp"
#include "rcnn/stage_io.hpp"
#include "rcnn/types.hpp"

namespace rcnn {

namespace detail {

/// Runs `body(b)` for every block `b` in [0, blocks), in order, on the calling thread.
struct SerialBlocks {
  template <class Body>
  void operator()(int blocks, Body&& body) const {
    for (int b = 0; b < blocks; ++b) body(b);
  }
};

/// Rows [begin, end) of block `b` of `blocks` over `rows` rows (contiguous, balanced).
inline std::array<int, 2> block_rows(int rows, int blocks, int b) {
  const long long r = rows;
  return {int(r * b / blocks), int(r * (b + 1) / blocks)};
}

/// Per-block scratch, grown only.
template <class T>
T* block_scratch(std::vector<std::vector<T>>& pool, int b, std::size_t n) {
  if (pool.size() <= std::size_t(b)) pool.resize(std::size_t(b) + 1);
  std::vector<T>& v = pool[std::size_t(b)];
  if (v.size() < n) v.resize(n);
  return v.data();
}

/// What every preprocessing pass starts from: the checked sizes, the normalisation table
/// and the channel map (the reference policies' own first lines, in the same order, so the
/// same errors).
struct PreprocessSetup {
  Size in, out, padded;
  std::array<std::array<float, 256>, 3> lut;
  std::array<int, 3> map;
};
inline PreprocessSetup preprocess_setup(const ImageView& img, const InputConfig& cfg,
                                        Conventions conv, const std::optional<Size>& pad_to) {
  PreprocessSetup s;
  s.in = check_image(img);
  s.out = checked_resized_shape(s.in, cfg, conv);
  s.padded = padded_shape(s.out, cfg.size_divisibility, pad_to);
  normalization_table(cfg, s.lut);
  s.map = channel_map(img, cfg);
  return s;
}

/// The policy call of a one-pass policy `P`: its `run` in one block on the calling thread.
template <class P>
struct SerialPreprocess {
  PreprocessResult operator()(const ImageView& img, const InputConfig& cfg,
                              std::vector<float>& chw_out,
                              std::optional<Size> pad_to = std::nullopt) {
    return static_cast<P&>(*this).run(img, cfg, chw_out, pad_to, 1, SerialBlocks{});
  }
};

}  // namespace detail

/// One-pass torchvision preprocessing, bit-identical to `TorchvisionPreprocess` (which it
/// falls back to for the inputs ATen resizes with its channels-last kernel: a 1x1 image, or
/// `memory_format == channels_last`).
struct FusedTorchvisionPreprocess : detail::SerialPreprocess<FusedTorchvisionPreprocess> {
  TorchvisionPreprocess reference;  ///< the fallback, and `memory_format`'s holder
  std::vector<detail::LinearTap> rows, cols;
  detail::TorchHrowPlan hrow_plan;  ///< `cols` for the vector horizontal pass
  Size taps_in{-1, -1}, taps_out{-1, -1};
  std::vector<std::vector<float>> scratch;  ///< per block: 2 normalised + 2 filtered rows

  void reserve(const StageSizing& s) { reference.reserve(s); }

  /// The pass, over `blocks` blocks of output rows run by `for_blocks(blocks, body)`.
  template <class ForBlocks>
  PreprocessResult run(const ImageView& img, const InputConfig& cfg, std::vector<float>& chw_out,
                       std::optional<Size> pad_to, int blocks, ForBlocks&& for_blocks) {
    const detail::PreprocessSetup set =
        detail::preprocess_setup(img, cfg, Conventions::torchvision, pad_to);
    const Size in = set.in, out = set.out, padded = set.padded;
    if (reference.memory_format == TorchMemoryFormat::channels_last ||
        (in.height == 1 && in.width == 1))
      return reference(img, cfg, chw_out, pad_to);
    const auto& lut = set.lut;
    const auto& map = set.map;
    if (!(taps_in == in && taps_out == out)) {
      detail::torch_linear_taps(in.height, out.height, rows);
      detail::torch_linear_taps(in.width, out.width, cols);
      hrow_plan.build(cols, in.width, detail::torch_hrow_lanes());
      taps_in = in;
      taps_out = out;
    }
    float* dst = detail::prepare_output(chw_out, padded);
    blocks = std::max(1, std::min(blocks, padded.height));
    const std::size_t W = std::size_t(padded.width), OW = std::size_t(out.width);
    const std::size_t IW = std::size_t(in.width);
    const std::size_t plane = std::size_t(padded.height) * W;
    const std::size_t step = img.row_step(), px = std::size_t(img.channels);
    for (int b = 0; b < blocks; ++b) detail::block_scratch(scratch, b, 2 * IW + 2 * OW);
#ifdef RCNN_TORCH_RESIZE_FMA_DISPATCH
    const bool native = detail::cpu_has_fma();
#endif
    for_blocks(blocks, [&](int b) {
      const auto [y0, y1] = detail::block_rows(padded.height, blocks, b);
      float* s = scratch[std::size_t(b)].data();
      float* norm[2] = {s, s + IW};
      float* slot[2] = {s + 2 * IW, s + 2 * IW + OW};
      for (int c = 0; c < 3; ++c) {
        const std::array<float, 256>& table = lut[std::size_t(c)];
        const std::uint8_t* src = img.data + std::size_t(map[std::size_t(c)]);
        float* out_plane = dst + std::size_t(c) * plane;
        int held[2] = {-1, -1};
        // Row i of the plane, normalised and filtered horizontally, in a slot (kept while
        // the next output row may read it again; `keep` is the other row in use).
        const auto hrow = [&](int i, int keep) -> const float* {
          if (held[0] == i) return slot[0];
          if (held[1] == i) return slot[1];
          const int k = held[0] == keep ? 1 : 0;
          const std::uint8_t* p = src + std::size_t(i) * step;
          float* n = norm[k];
          for (std::size_t x = 0; x < IW; ++x) n[x] = table[p[x * px]];
          detail::torch_hrow(n, hrow_plan, cols, slot[k]);
          held[k] = i;
          return slot[k];
        };
        for (int y = y0; y < y1; ++y) {
          float* o = out_plane + std::size_t(y) * W;
          if (y >= out.height) {
            std::fill(o, o + W, 0.f);
            continue;
          }
          const detail::LinearTap& h = rows[std::size_t(y)];
          const float* t0 = hrow(h.i0, h.i1);
          const float* t1 = hrow(h.i1, h.i0);
#ifdef RCNN_TORCH_RESIZE_FMA_DISPATCH
          if (native)
            detail::torch_vrow_fma_native(t0, t1, h, out.width, o);
          else
#endif
            detail::torch_vrow_fma(t0, t1, h, out.width, o);
          std::fill(o + OW, o + W, 0.f);
        }
      }
    });
    return {in, out, padded};
  }
};

namespace detail {

/// One axis of Pillow's coefficients with every output widened to exactly `ksize` taps
/// starting at `first` (`first + ksize <= in_size`): the window is moved left at the right
/// border and the extra taps get weight 0. Pre: `in_size >= ksize`.
struct PilFixedAxis {
  int ksize = 0;
  std::vector<int> first;
  std::vector<std::int32_t> weights;  ///< ksize per output

  void build(const PilAxisCoefficients& c) {
    ksize = c.ksize;
    first.resize(std::size_t(c.out_size));
    weights.assign(std::size_t(c.out_size) * std::size_t(ksize), 0);
    for (int o = 0; o < c.out_size; ++o) {
      const int f = std::min(c.first[std::size_t(o)], c.in_size - ksize);
      const int shift = c.first[std::size_t(o)] - f;
      const std::int32_t* w = c.weights.data() + std::size_t(o) * std::size_t(ksize);
      std::int32_t* d = weights.data() + std::size_t(o) * std::size_t(ksize);
      for (int t = 0; t < c.count[std::size_t(o)]; ++t) d[t + shift] = w[t];
      first[std::size_t(o)] = f;
    }
  }
};

/// Horizontal pass of one row: `C` channels read `pixel_step` bytes apart, `K` taps.
template <int C, int K>
inline void pil_hrow_fixed(const std::uint8_t* in, int pixel_step, std::uint8_t* out,
                           const PilFixedAxis& a, int out_width) {
  constexpr std::int32_t half = 1 << (kPilPrecisionBits - 1);
  for (int xx = 0; xx < out_width; ++xx) {
    const std::int32_t* k = a.weights.data() + std::size_t(xx) * K;
    const std::uint8_t* p = in + std::size_t(a.first[std::size_t(xx)]) * std::size_t(pixel_step);
    std::int32_t acc[C];
    for (int ch = 0; ch < C; ++ch) acc[ch] = half;
    for (int x = 0; x < K; ++x)
      for (int ch = 0; ch < C; ++ch) acc[ch] += std::int32_t(p[x * pixel_step + ch]) * k[x];
    for (int ch = 0; ch < C; ++ch) out[std::size_t(xx) * C + ch] = pil_clip8(acc[ch]);
  }
}

/// Horizontal pass of one row, any kernel size (the axis' own windows).
template <int C>
inline void pil_hrow_any(const std::uint8_t* in, int pixel_step, std::uint8_t* out,
                         const PilAxisCoefficients& c) {
  pil_horizontal_pass<C>(in, 0, pixel_step, 1, out, 0, c);
}

/// `acc[i] = half + sum_t rows[t][i] * w[t]` over `n` bytes: the vertical pass of one output
/// row before `clip8` (int32, exact in any order). Inlined into each instruction-set variant.
[[gnu::always_inline]] inline void pil_vrow_acc_body(const std::uint8_t* const* rows,
                                                     const std::int32_t* w, int taps,
                                                     std::size_t n, std::int32_t* acc) {
  constexpr std::int32_t half = 1 << (kPilPrecisionBits - 1);
  for (std::size_t i = 0; i < n; ++i) acc[i] = half;
  for (int t = 0; t < taps; ++t) {
    const std::uint8_t* r = rows[t];
    const std::int32_t wt = w[t];
    if (wt == 0) continue;
    for (std::size_t i = 0; i < n; ++i) acc[i] += std::int32_t(r[i]) * wt;
  }
}
inline void pil_vrow_acc_generic(const std::uint8_t* const* rows, const std::int32_t* w, int taps,
                                 std::size_t n, std::int32_t* acc) {
  pil_vrow_acc_body(rows, w, taps, n, acc);
}
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(__AVX2__)
#define RCNN_PIL_AVX2_DISPATCH 1
__attribute__((target("avx2"))) inline void pil_vrow_acc_avx2(const std::uint8_t* const* rows,
                                                              const std::int32_t* w, int taps,
                                                              std::size_t n, std::int32_t* acc) {
  pil_vrow_acc_body(rows, w, taps, n, acc);
}
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif
inline void pil_vrow_acc(const std::uint8_t* const* rows, const std::int32_t* w, int taps,
                         std::size_t n, std::int32_t* acc) {
#ifdef RCNN_PIL_AVX2_DISPATCH
  if (cpu_has_avx2()) return pil_vrow_acc_avx2(rows, w, taps, n, acc);
#endif
  pil_vrow_acc_generic(rows, w, taps, n, acc);
}

}  // namespace detail

/// One-pass Detectron2 preprocessing, bit-identical to `Detectron2Preprocess`.
struct FusedDetectron2Preprocess : detail::SerialPreprocess<FusedDetectron2Preprocess> {
  PilResizeWorkspace axes;  ///< Pillow's coefficients (cached per size pair)
  detail::PilFixedAxis fixed_h;
  Size fixed_for_in{-1, -1}, fixed_for_out{-1, -1};
  std::vector<std::vector<std::uint8_t>> rows_scratch;  ///< per block: filtered input rows
  std::vector<std::vector<std::int32_t>> acc_scratch;   ///< per block: one accumulator row
  std::vector<std::vector<std::uint8_t>> clip_scratch;  ///< per block: one output row's bytes

  void reserve(const StageSizing&) {}

  template <class ForBlocks>
  PreprocessResult run(const ImageView& img, const InputConfig& cfg, std::vector<float>& chw_out,
                       std::optional<Size> pad_to, int blocks, ForBlocks&& for_blocks) {
    const detail::PreprocessSetup set =
        detail::preprocess_setup(img, cfg, Conventions::detectron2, pad_to);
    if (img.channels == 1)
      run_impl<1>(img, set.in, set.out, set.padded, set.lut, set.map, chw_out, blocks, for_blocks);
    else
      run_impl<3>(img, set.in, set.out, set.padded, set.lut, set.map, chw_out, blocks, for_blocks);
    return {set.in, set.out, set.padded};
  }

 private:
  template <int C, class ForBlocks>
  void run_impl(const ImageView& img, Size in, Size out, Size padded,
                const std::array<std::array<float, 256>, 3>& lut, const std::array<int, 3>& map,
                std::vector<float>& chw_out, int blocks, ForBlocks& for_blocks) {
    const bool need_h = out.width != in.width;
    const bool need_v = out.height != in.height;
    detail::pil_precompute_axis(in.width, out.width, axes.horizontal);
    detail::pil_precompute_axis(in.height, out.height, axes.vertical);
    const detail::PilAxisCoefficients& hc = axes.horizontal;
    const detail::PilAxisCoefficients& vc = axes.vertical;
    const bool fixed = need_h && in.width >= hc.ksize &&
                       (hc.ksize == 3 || hc.ksize == 5 || hc.ksize == 7);
    if (fixed && !(fixed_for_in == in && fixed_for_out == out)) {
      fixed_h.build(hc);
      fixed_for_in = in;
      fixed_for_out = out;
    }
    float* dst = detail::prepare_output(chw_out, padded);
    blocks = std::max(1, std::min(blocks, padded.height));
    const std::size_t W = std::size_t(padded.width), OW = std::size_t(out.width);
    const std::size_t plane = std::size_t(padded.height) * W;
    const std::size_t row_bytes = OW * C;  // one filtered row
    const std::size_t step = img.row_step();
    const int px = img.channels;
    // Input rows a block of output rows reads: at most its rows' window span.
    for (int b = 0; b < blocks; ++b) {
      const auto [y0, y1] = detail::block_rows(std::min(padded.height, out.height), blocks, b);
      int span = 0;
      if (y1 > y0)
        span = need_v ? vc.first[std::size_t(y1 - 1)] + vc.count[std::size_t(y1 - 1)] -
                            vc.first[std::size_t(y0)]
                      : y1 - y0;
      detail::block_scratch(rows_scratch, b, std::size_t(std::max(span, 1)) * row_bytes);
      detail::block_scratch(acc_scratch, b, row_bytes);
      detail::block_scratch(clip_scratch, b, row_bytes);
    }
    // The channel of a filtered row feeding model channel c (a 1-channel image feeds all 3).
    std::array<int, 3> src_ch{};
    for (int c = 0; c < 3; ++c) src_ch[std::size_t(c)] = C == 1 ? 0 : map[std::size_t(c)];

    for_blocks(blocks, [&](int b) {
      const auto [r0, r1] = detail::block_rows(padded.height, blocks, b);
      const auto [y0, y1] = detail::block_rows(std::min(padded.height, out.height), blocks, b);
      std::uint8_t* filtered = rows_scratch[std::size_t(b)].data();
      std::int32_t* acc = acc_scratch[std::size_t(b)].data();
      const int first_row = y1 > y0 ? (need_v ? vc.first[std::size_t(y0)] : y0) : 0;
      const int last_row = y1 > y0 ? (need_v ? vc.first[std::size_t(y1 - 1)] +
                                                   vc.count[std::size_t(y1 - 1)]
                                             : y1)
                                   : 0;
      // 1. Horizontal pass (or the channels' copy) of the input rows this block reads.
      for (int r = first_row; r < last_row; ++r) {
        const std::uint8_t* p = img.data + std::size_t(r) * step;
        std::uint8_t* q = filtered + std::size_t(r - first_row) * row_bytes;
        if (!need_h) {
          for (std::size_t x = 0; x < OW; ++x)
            for (int ch = 0; ch < C; ++ch) q[x * C + std::size_t(ch)] = p[x * std::size_t(px) + std::size_t(ch)];
        } else if (!fixed) {
          detail::pil_hrow_any<C>(p, px, q, hc);
        } else if (fixed_h.ksize == 3) {
          detail::pil_hrow_fixed<C, 3>(p, px, q, fixed_h, out.width);
        } else if (fixed_h.ksize == 5) {
          detail::pil_hrow_fixed<C, 5>(p, px, q, fixed_h, out.width);
        } else {
          detail::pil_hrow_fixed<C, 7>(p, px, q, fixed_h, out.width);
        }
      }
      // 2. Vertical pass, clip8, normalisation table, planar write, right padding.
      for (int y = y0; y < y1; ++y) {
        const std::uint8_t* bytes;
        std::uint8_t* clipped = clip_scratch[std::size_t(b)].data();
        if (need_v) {
          const std::uint8_t* taps[64];
          const int n = vc.count[std::size_t(y)];
          const int f = vc.first[std::size_t(y)];
          const int used = std::min(n, 64);
          for (int t = 0; t < used; ++t)
            taps[t] = filtered + std::size_t(f + t - first_row) * row_bytes;
          if (n <= 64) {
            detail::pil_vrow_acc(taps, vc.weights.data() + std::size_t(y) * std::size_t(vc.ksize),
                                 n, row_bytes, acc);
          } else {  // a huge shrink: accumulate in batches of 64 rows (exact int32 sums)
            detail::pil_vrow_acc(taps, vc.weights.data() + std::size_t(y) * std::size_t(vc.ksize),
                                 64, row_bytes, acc);
            for (int t0 = 64; t0 < n; ++t0) {
              const std::uint8_t* r = filtered + std::size_t(f + t0 - first_row) * row_bytes;
              const std::int32_t wt = vc.weights[std::size_t(y) * std::size_t(vc.ksize) + std::size_t(t0)];
              for (std::size_t i = 0; i < row_bytes; ++i) acc[i] += std::int32_t(r[i]) * wt;
            }
          }
          for (std::size_t i = 0; i < row_bytes; ++i) clipped[i] = detail::pil_clip8(acc[i]);
          bytes = clipped;
        } else {
          bytes = filtered + std::size_t(y - first_row) * row_bytes;
        }
        for (int c = 0; c < 3; ++c) {
          const std::array<float, 256>& table = lut[std::size_t(c)];
          const std::size_t sc = std::size_t(src_ch[std::size_t(c)]);
          float* o = dst + std::size_t(c) * plane + std::size_t(y) * W;
          for (std::size_t x = 0; x < OW; ++x) o[x] = table[bytes[x * C + sc]];
          std::fill(o + OW, o + W, 0.f);
        }
      }
      // 3. Bottom padding rows in this block's share.
      for (int y = std::max(r0, out.height); y < r1; ++y)
        for (int c = 0; c < 3; ++c) {
          float* o = dst + std::size_t(c) * plane + std::size_t(y) * W;
          std::fill(o, o + W, 0.f);
        }
    });
  }
};

}  // namespace rcnn
