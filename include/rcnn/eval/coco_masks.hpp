#pragma once
/// \file coco_masks.hpp
/// The mask operations COCO evaluation needs, with pycocotools' semantics (its maskApi): a
/// polygon rasterised to an RLE, the union of RLEs, an RLE's bounding box, and the IoU of
/// boxes and of RLE masks with COCO's crowd rule. Framework-free (rcnn::rcnn).
///
/// Facts taken from pycocotools (written here from its documented behaviour):
/// * polygon: vertices scaled by 5 and rounded, the boundary walked densely between them, and
///   only the points where the walk crosses a pixel column centre kept; each such crossing
///   toggles the mask at that column from the (clamped, rounded-up) row downwards. Several
///   polygons of one object are merged (union).
/// * box IoU of [x, y, w, h] boxes: intersection / union, or intersection / detection area
///   when the ground truth is a crowd region; 0 without overlap.
/// * mask IoU: 0 when the masks' bounding boxes do not overlap; -1 when the sizes differ;
///   else intersection / union (crowd: intersection / detection area) counted on the runs;
///   intersection 0 gives 0.

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "../error.hpp"
#include "../mask/rle.hpp"

namespace rcnn::coco {

/// [x, y, width, height], as COCO writes boxes.
using XywhBox = std::array<double, 4>;

/// Rasterises one polygon `xy` (x0, y0, x1, y1, ...; at least 3 points) in an h x w image as
/// pycocotools' `frPyObjects(polygon)` does.
inline CocoRle rle_from_polygon(std::span<const double> xy, int h, int w) {
  if (xy.size() < 6 || xy.size() % 2 != 0)
    detail::fail("polygon: expected an even number (>= 6) of coordinates, got " +
                 std::to_string(xy.size()));
  const std::size_t k = xy.size() / 2;
  const double scale = 5.0;
  std::vector<int> x(k + 1), y(k + 1);
  for (std::size_t j = 0; j < k; ++j) {
    x[j] = int(scale * xy[2 * j] + 0.5);
    y[j] = int(scale * xy[2 * j + 1] + 0.5);
  }
  x[k] = x[0];
  y[k] = y[0];
  // Dense boundary points: along the longer axis of each edge, one point per unit step.
  std::vector<int> u, v;
  for (std::size_t j = 0; j < k; ++j) {
    int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const int dx = std::abs(xe - xs), dy = std::abs(ys - ye);
    const bool flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      std::swap(xs, xe);
      std::swap(ys, ye);
    }
    if (dx >= dy) {
      if (dx == 0) {
        // A repeated vertex: pycocotools divides 0 by 0 here and converts the NaN to int,
        // which x86 makes INT_MIN (the point then clamps to row 0 if it is ever used).
        u.push_back(xs);
        v.push_back(INT_MIN);
        continue;
      }
      const double s = double(ye - ys) / dx;
      for (int d = 0; d <= dx; ++d) {
        const int t = flip ? dx - d : d;
        u.push_back(t + xs);
        v.push_back(int(ys + s * t + 0.5));
      }
    } else {
      const double s = double(xe - xs) / dy;
      for (int d = 0; d <= dy; ++d) {
        const int t = flip ? dy - d : d;
        v.push_back(t + ys);
        u.push_back(int(xs + s * t + 0.5));
      }
    }
  }
  // Where the walk changes column: a toggle at pixel column xd (a whole number) from row yd.
  std::vector<std::uint32_t> toggles;
  for (std::size_t j = 1; j < u.size(); ++j) {
    if (u[j] == u[j - 1]) continue;
    double xd = double(u[j] < u[j - 1] ? u[j] : u[j] - 1);
    xd = (xd + 0.5) / scale - 0.5;
    if (std::floor(xd) != xd || xd < 0 || xd > w - 1) continue;
    double yd = double(v[j] < v[j - 1] ? v[j] : v[j - 1]);
    yd = (yd + 0.5) / scale - 0.5;
    if (yd < 0)
      yd = 0;
    else if (yd > h)
      yd = h;
    yd = std::ceil(yd);
    toggles.push_back(std::uint32_t(int(xd) * h + int(yd)));
  }
  toggles.push_back(std::uint32_t(h) * std::uint32_t(w));
  std::sort(toggles.begin(), toggles.end());
  // Differences are the run lengths; a zero-length run merges its neighbours.
  std::uint32_t prev = 0;
  for (std::uint32_t& a : toggles) {
    const std::uint32_t t = a;
    a -= prev;
    prev = t;
  }
  CocoRle r{h, w, {}};
  std::size_t j = 0;
  r.counts.push_back(toggles[j++]);
  while (j < toggles.size()) {
    if (toggles[j] > 0) {
      r.counts.push_back(toggles[j++]);
    } else {
      ++j;
      if (j < toggles.size()) r.counts.back() += toggles[j++];
    }
  }
  return r;
}

namespace detail_masks {

/// Walks the runs of two RLEs of one size together, as pycocotools' merge and IoU do: for each
/// stretch of `c` pixels calls `step(c, va, vb, va_next, vb_next, last)` with the two masks'
/// values over the stretch and after it (`last`: the stretch ends both masks).
template <class Step>
void walk_runs(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b, Step&& step) {
  std::uint32_t ca = a.empty() ? 0 : a[0], cb = b.empty() ? 0 : b[0];
  bool va = false, vb = false;
  std::size_t ia = 1, ib = 1;
  std::uint64_t ct = 1;
  while (ct > 0) {
    const std::uint32_t c = std::min(ca, cb);
    const bool va0 = va, vb0 = vb;
    ct = 0;
    ca -= c;
    if (!ca && ia < a.size()) {
      ca = a[ia++];
      va = !va;
    }
    ct += ca;
    cb -= c;
    if (!cb && ib < b.size()) {
      cb = b[ib++];
      vb = !vb;
    }
    ct += cb;
    step(c, va0, vb0, va, vb, ct == 0);
  }
}

}  // namespace detail_masks

/// Union of masks of one size (pycocotools `merge(..., intersect=0)`). Masks of different
/// sizes give an empty 0 x 0 RLE, as pycocotools does.
inline CocoRle rle_union(const std::vector<CocoRle>& rles) {
  if (rles.empty()) return {};
  if (rles.size() == 1) return rles[0];
  const int h = rles[0].height, w = rles[0].width;
  std::vector<std::uint32_t> acc = rles[0].counts;
  for (std::size_t i = 1; i < rles.size(); ++i) {
    const CocoRle& b = rles[i];
    if (b.height != h || b.width != w) return {};
    std::vector<std::uint32_t> out;
    bool v = false;
    std::uint32_t cc = 0;
    // A run ends where the union's value after a stretch differs from the one before.
    detail_masks::walk_runs(acc, b.counts, [&](std::uint32_t c, bool, bool, bool va, bool vb, bool last) {
      cc += c;
      const bool vp = v;
      v = va || vb;
      if (v != vp || last) {
        out.push_back(cc);
        cc = 0;
      }
    });
    acc = std::move(out);
  }
  return CocoRle{h, w, std::move(acc)};
}

/// Bounding box [x, y, w, h] of an RLE's pixels (pycocotools `toBbox`); [0, 0, 0, 0] when
/// empty. A run of 1s that crosses a column boundary spans the full height.
inline XywhBox rle_bbox(const CocoRle& r) {
  const std::uint32_t h = std::uint32_t(r.height), w = std::uint32_t(r.width);
  const std::size_t m = r.counts.size() / 2 * 2;
  if (m == 0 || h == 0) return {0, 0, 0, 0};
  std::uint32_t xs = w, ys = h, xe = 0, ye = 0, cc = 0, xp = 0;
  for (std::size_t j = 0; j < m; ++j) {
    cc += r.counts[j];
    const std::uint32_t t = cc - std::uint32_t(j % 2), y = t % h, x = (t - y) / h;
    if (j % 2 == 0)
      xp = x;
    else if (xp < x) {
      ys = 0;
      ye = h - 1;
    }
    xs = std::min(xs, x);
    xe = std::max(xe, x);
    ys = std::min(ys, y);
    ye = std::max(ye, y);
  }
  return {double(xs), double(ys), double(xe - xs + 1), double(ye - ys + 1)};
}

/// IoU of a detection box and a ground-truth box, [x, y, w, h] each (pycocotools `bbIou`):
/// crowd ground truth divides by the detection's area instead of the union.
inline double box_iou(const XywhBox& d, const XywhBox& g, bool crowd) {
  const double ga = g[2] * g[3], da = d[2] * d[3];
  const double w = std::fmin(d[2] + d[0], g[2] + g[0]) - std::fmax(d[0], g[0]);
  if (w <= 0) return 0.0;
  const double hh = std::fmin(d[3] + d[1], g[3] + g[1]) - std::fmax(d[1], g[1]);
  if (hh <= 0) return 0.0;
  const double i = w * hh;
  const double u = crowd ? da : da + ga - i;
  return i / u;
}

/// IoU of two masks (pycocotools `rleIou` for one pair); `d_box` / `g_box` are their
/// `rle_bbox`es. 0 without box overlap, -1 for masks of different sizes.
inline double mask_iou(const CocoRle& d, const CocoRle& g, const XywhBox& d_box,
                       const XywhBox& g_box, bool crowd) {
  if (!(box_iou(d_box, g_box, crowd) > 0)) return 0.0;
  if (d.height != g.height || d.width != g.width) return -1.0;
  std::uint32_t i = 0, u = 0;
  detail_masks::walk_runs(d.counts, g.counts, [&](std::uint32_t c, bool va, bool vb, bool, bool, bool) {
    if (va || vb) {
      u += c;
      if (va && vb) i += c;
    }
  });
  if (i == 0)
    u = 1;
  else if (crowd)
    u = std::uint32_t(rle_area(d));
  return double(i) / double(u);
}

}  // namespace rcnn::coco
