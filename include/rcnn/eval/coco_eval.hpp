#pragma once
/// \file coco_eval.hpp
/// COCO detection evaluation (box and mask AP / AR), equal to pycocotools' COCOeval with its
/// default parameters: the 12-number summary (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100,
/// ARs, ARm, ARl) and the full precision / recall arrays. Framework-free (rcnn::rcnn); the
/// `rcnn-eval` program wraps it. docs/how-to/evaluate-on-coco.md.
///
/// The rules (pycocotools' COCOeval, COCO.loadRes; written here from their documented behaviour):
/// * images: every image of the annotation file; categories: every category of it (results of
///   other categories are left out); a result on an image the annotation file lacks is an error.
/// * ground truth with iscrowd = 1 is "ignore": a detection matched to it counts neither as
///   true nor as false positive, and a crowd region can take any number of detections (IoU with
///   a crowd region = intersection / detection area).
/// * area ranges all [0, 1e10], small [0, 32^2], medium [32^2, 96^2], large [96^2, 1e10]
///   (inclusive) on the annotation's "area" field; outside the range a ground truth is ignored,
///   and an unmatched detection outside it too. A detection's area is w * h of its bbox when the
///   results carry boxes (decided by the first result, as COCO.loadRes does), else its mask's
///   pixel count.
/// * per image and category: detections sorted by score (stable: ties keep file order), at most
///   maxDets[-1] = 100; each, at each IoU threshold 0.50:0.05:0.95, takes the unmatched (or crowd)
///   ground truth of highest IoU >= threshold, preferring non-ignored ones.
/// * per category, area range and maxDets (1, 10, 100): detections of all images sorted by score,
///   cumulative TP / FP, recall = TP / non-ignored ground truths, precision = TP / (TP + FP + eps)
///   made non-increasing from the right, then read at the 101 recall points 0:0.01:1 (first
///   detection reaching each recall; 0 beyond the last). -1 where a category has no non-ignored
///   ground truth; summaries average the values > -1 (numpy's pairwise summation order).

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "../error.hpp"
#include "../mask/rle.hpp"
#include "coco_masks.hpp"

namespace rcnn::coco {

enum class IouType { bbox, segm };

inline const char* iou_type_name(IouType t) { return t == IouType::bbox ? "bbox" : "segm"; }

struct Image {
  std::int64_t id = 0;
  int height = 0, width = 0;
  std::string file_name;
};

struct Category {
  std::int64_t id = 0;
  std::string name;
};

/// A ground-truth annotation or a detection (result).
struct Object {
  std::int64_t id = 0, image_id = 0, category_id = 0;
  XywhBox bbox{};
  double area = 0;
  bool crowd = false;
  double score = 0;  ///< detections only
  /// The segmentation as the file has it (polygons, uncompressed or compressed RLE); null when
  /// absent. Converted to an RLE only for mask evaluation.
  nlohmann::json segmentation;
};

struct Dataset {
  std::vector<Image> images;
  std::vector<Category> categories;
  std::vector<Object> annotations;
};

namespace detail_eval {

inline nlohmann::json read_json_file(const std::filesystem::path& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::fail(path.string() + ": cannot open the " + what);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    detail::fail(path.string() + ": the " + what + " is not valid JSON (" + e.what() + ")");
  }
}

inline const nlohmann::json& field(const nlohmann::json& obj, const char* key, const std::string& where) {
  if (!obj.is_object()) detail::fail(where + ": expected an object");
  const auto it = obj.find(key);
  if (it == obj.end()) detail::fail(where + ": missing \"" + key + "\"");
  return *it;
}

inline std::int64_t int_field(const nlohmann::json& obj, const char* key, const std::string& where) {
  const nlohmann::json& v = field(obj, key, where);
  if (v.is_number_integer()) return v.get<std::int64_t>();
  if (v.is_number_float() && v.get<double>() == std::floor(v.get<double>()))
    return std::int64_t(v.get<double>());
  detail::fail(where + "." + key + ": expected an integer, got " + v.dump());
}

inline double number_field(const nlohmann::json& obj, const char* key, const std::string& where) {
  const nlohmann::json& v = field(obj, key, where);
  if (!v.is_number()) detail::fail(where + "." + key + ": expected a number, got " + v.dump());
  return v.get<double>();
}

inline XywhBox box_field(const nlohmann::json& obj, const std::string& where) {
  const nlohmann::json& v = field(obj, "bbox", where);
  if (!v.is_array() || v.size() != 4)
    detail::fail(where + ".bbox: expected [x, y, width, height], got " + v.dump());
  XywhBox b;
  for (std::size_t i = 0; i < 4; ++i) {
    if (!v[i].is_number()) detail::fail(where + ".bbox: expected numbers, got " + v.dump());
    b[i] = v[i].get<double>();
  }
  return b;
}

/// numpy's pairwise summation (np.add.reduce on a contiguous float64 array), so that means
/// equal pycocotools' to the last bits.
inline double pairwise_sum(const double* a, std::size_t n) {
  if (n < 8) {
    double s = 0.;  // numpy starts from -0.0 for n < 8: the same value for these non-negative sums
    for (std::size_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  if (n <= 128) {
    double r[8];
    for (int k = 0; k < 8; ++k) r[k] = a[k];
    std::size_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int k = 0; k < 8; ++k) r[k] += a[i + std::size_t(k)];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += a[i];
    return s;
  }
  std::size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

inline double mean_of_valid(const std::vector<double>& values) {
  std::vector<double> v;
  v.reserve(values.size());
  for (double x : values)
    if (x > -1) v.push_back(x);
  if (v.empty()) return -1;
  return pairwise_sum(v.data(), v.size()) / double(v.size());
}

}  // namespace detail_eval

/// Parses a COCO annotation file's content ("images", "categories", "annotations").
/// `source` names the file in errors.
inline Dataset parse_ground_truth(const nlohmann::json& doc, const std::string& source) {
  using namespace detail_eval;
  if (!doc.is_object()) detail::fail(source + ": expected a COCO annotation object");
  Dataset d;
  const nlohmann::json& images = field(doc, "images", source);
  const nlohmann::json& cats = field(doc, "categories", source);
  if (!images.is_array() || !cats.is_array())
    detail::fail(source + ": \"images\" and \"categories\" must be arrays");
  for (std::size_t i = 0; i < images.size(); ++i) {
    const std::string where = source + ": images[" + std::to_string(i) + "]";
    Image im;
    im.id = int_field(images[i], "id", where);
    im.height = int(int_field(images[i], "height", where));
    im.width = int(int_field(images[i], "width", where));
    if (const auto it = images[i].find("file_name"); it != images[i].end() && it->is_string())
      im.file_name = it->get<std::string>();
    d.images.push_back(std::move(im));
  }
  for (std::size_t i = 0; i < cats.size(); ++i) {
    const std::string where = source + ": categories[" + std::to_string(i) + "]";
    Category c;
    c.id = int_field(cats[i], "id", where);
    if (const auto it = cats[i].find("name"); it != cats[i].end() && it->is_string())
      c.name = it->get<std::string>();
    d.categories.push_back(std::move(c));
  }
  const auto anns = doc.find("annotations");
  if (anns != doc.end() && !anns->is_null()) {
    if (!anns->is_array()) detail::fail(source + ": \"annotations\" must be an array");
    for (std::size_t i = 0; i < anns->size(); ++i) {
      const nlohmann::json& a = (*anns)[i];
      const std::string where = source + ": annotations[" + std::to_string(i) + "]";
      Object o;
      o.id = int_field(a, "id", where);
      o.image_id = int_field(a, "image_id", where);
      o.category_id = int_field(a, "category_id", where);
      o.area = number_field(a, "area", where);
      if (const auto it = a.find("bbox"); it != a.end()) o.bbox = box_field(a, where);
      if (const auto it = a.find("iscrowd"); it != a.end()) {
        if (it->is_boolean())
          o.crowd = it->get<bool>();
        else if (it->is_number())
          o.crowd = it->get<double>() != 0;
        else
          detail::fail(where + ".iscrowd: expected 0 or 1, got " + it->dump());
      }
      if (const auto it = a.find("segmentation"); it != a.end()) o.segmentation = *it;
      d.annotations.push_back(std::move(o));
    }
  }
  return d;
}

inline Dataset read_ground_truth(const std::filesystem::path& path) {
  return parse_ground_truth(detail_eval::read_json_file(path, "COCO annotation file"), path.string());
}

/// Parses a COCO results file's content (an array of {image_id, category_id, bbox and/or
/// segmentation, score}) against `gt`, as COCO.loadRes does: ids 1, 2, ... in file order, not
/// crowd; area = bbox w * h when the first result has a bbox (missing segmentations become the
/// box polygon), else the mask's pixel count (and a missing bbox its mask's box).
inline std::vector<Object> parse_results(const nlohmann::json& doc, const Dataset& gt,
                                         const std::string& source) {
  using namespace detail_eval;
  if (!doc.is_array()) detail::fail(source + ": expected a COCO results array");
  std::unordered_map<std::int64_t, const Image*> images;
  for (const Image& im : gt.images) images[im.id] = &im;
  std::vector<Object> out;
  out.reserve(doc.size());
  const bool boxes = !doc.empty() && doc[0].is_object() && doc[0].contains("bbox") &&
                     !(doc[0]["bbox"].is_array() && doc[0]["bbox"].empty());
  for (std::size_t i = 0; i < doc.size(); ++i) {
    const nlohmann::json& r = doc[i];
    const std::string where = source + ": [" + std::to_string(i) + "]";
    Object o;
    o.id = std::int64_t(i) + 1;
    o.image_id = int_field(r, "image_id", where);
    o.category_id = int_field(r, "category_id", where);
    o.score = number_field(r, "score", where);
    const auto im = images.find(o.image_id);
    if (im == images.end())
      detail::fail(where + ": image_id " + std::to_string(o.image_id) +
                   " is not an image of the annotation file");
    if (const auto it = r.find("segmentation"); it != r.end()) o.segmentation = *it;
    if (boxes) {
      o.bbox = box_field(r, where);
      o.area = o.bbox[2] * o.bbox[3];
      if (o.segmentation.is_null()) {
        const double x1 = o.bbox[0], y1 = o.bbox[1], x2 = o.bbox[0] + o.bbox[2],
                     y2 = o.bbox[1] + o.bbox[3];
        o.segmentation = nlohmann::json::array({nlohmann::json::array({x1, y1, x1, y2, x2, y2, x2, y1})});
      }
    } else {
      if (o.segmentation.is_null())
        detail::fail(where + ": a result needs a \"bbox\" or a \"segmentation\"");
      const CocoRle rle = [&] {
        const auto& s = o.segmentation;
        if (!s.is_object() || !s.contains("counts") || !s["counts"].is_string())
          detail::fail(where + ".segmentation: results need a compressed RLE {\"size\", \"counts\"}");
        return rle_from_string(s["counts"].get<std::string>(),
                               Size{s["size"][0].get<int>(), s["size"][1].get<int>()});
      }();
      o.area = double(rle_area(rle));
      if (const auto it = r.find("bbox"); it != r.end())
        o.bbox = box_field(r, where);
      else
        o.bbox = rle_bbox(rle);
    }
    out.push_back(std::move(o));
  }
  return out;
}

inline std::vector<Object> read_results(const std::filesystem::path& path, const Dataset& gt) {
  return parse_results(detail_eval::read_json_file(path, "COCO results file"), gt, path.string());
}

/// The mask of an annotation or result in an h x w image (COCO.annToRLE): polygons (merged),
/// [x, y, w, h] boxes given as 4-number "polygons", uncompressed or compressed RLE.
inline CocoRle segmentation_rle(const nlohmann::json& s, int h, int w, const std::string& where) {
  try {
    if (s.is_array()) {
      std::vector<CocoRle> parts;
      const bool as_boxes = !s.empty() && s[0].is_array() && s[0].size() == 4;
      for (const auto& poly : s) {
        std::vector<double> xy = poly.get<std::vector<double>>();
        if (as_boxes) {
          if (xy.size() != 4) detail::fail("expected [x, y, w, h] boxes");
          const double xs = xy[0], xe = xs + xy[2], ys = xy[1], ye = ys + xy[3];
          xy = {xs, ys, xs, ye, xe, ye, xe, ys};
        }
        parts.push_back(rle_from_polygon(xy, h, w));
      }
      return rle_union(parts);
    }
    if (s.is_object() && s.contains("counts") && s.contains("size")) {
      const int rh = s["size"][0].get<int>(), rw = s["size"][1].get<int>();
      if (s["counts"].is_string()) return rle_from_string(s["counts"].get<std::string>(), Size{rh, rw});
      CocoRle r{rh, rw, s["counts"].get<std::vector<std::uint32_t>>()};
      return r;
    }
  } catch (const nlohmann::json::exception& e) {
    detail::fail(where + ".segmentation: " + e.what());
  } catch (const Error& e) {
    detail::fail(where + ".segmentation: " + e.what());
  }
  detail::fail(where + ".segmentation: expected polygons or an RLE {\"size\", \"counts\"}");
}

/// COCOeval's parameters (Params.setDetParams); the defaults are COCO's.
struct Params {
  std::vector<double> iou_thresholds;     ///< 0.50:0.05:0.95 as numpy.linspace computes them
  std::vector<double> recall_thresholds;  ///< 0:0.01:1
  std::vector<int> max_dets{1, 10, 100};
  std::vector<std::array<double, 2>> area_ranges{{0, 1e10}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, 1e10}};
  std::vector<std::string> area_labels{"all", "small", "medium", "large"};

  Params() {
    // numpy.linspace(start, stop, n): start + i * ((stop - start) / (n - 1)), the last = stop.
    for (int i = 0; i < 10; ++i) iou_thresholds.push_back(double(i) * ((0.95 - 0.5) / 9) + 0.5);
    iou_thresholds.back() = 0.95;
    for (int i = 0; i < 101; ++i) recall_thresholds.push_back(double(i) * (1.0 / 100));
    recall_thresholds.back() = 1.0;
  }
};

/// The accumulated evaluation: precision [T][R][K][A][M] and recall [T][K][A][M] (C order),
/// -1 where a category has no ground truth in the setting; `stats` the 12 summary numbers.
struct Evaluation {
  IouType iou_type = IouType::bbox;
  Params params;
  std::vector<std::int64_t> category_ids;
  std::vector<double> precision, recall;
  std::array<double, 12> stats{};

  std::size_t T() const { return params.iou_thresholds.size(); }
  std::size_t R() const { return params.recall_thresholds.size(); }
  std::size_t K() const { return category_ids.size(); }
  std::size_t A() const { return params.area_ranges.size(); }
  std::size_t M() const { return params.max_dets.size(); }
  double& precision_at(std::size_t t, std::size_t r, std::size_t k, std::size_t a, std::size_t m) {
    return precision[(((t * R() + r) * K() + k) * A() + a) * M() + m];
  }
  double& recall_at(std::size_t t, std::size_t k, std::size_t a, std::size_t m) {
    return recall[((t * K() + k) * A() + a) * M() + m];
  }
  double precision_at(std::size_t t, std::size_t r, std::size_t k, std::size_t a, std::size_t m) const {
    return precision[(((t * R() + r) * K() + k) * A() + a) * M() + m];
  }

  /// The names of `stats`, in order.
  static constexpr std::array<const char*, 12> stat_names{
      "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"};
};

namespace detail_eval {

/// One image and category at one area range (COCOeval.evaluateImg): detections in score order.
struct ImageEval {
  std::vector<double> scores;         ///< [D]
  std::vector<std::int64_t> matches;  ///< [T][D]: id of the matched ground truth, 0 if none
  std::vector<std::uint8_t> ignore;   ///< [T][D]
  std::vector<std::uint8_t> gt_ignore;  ///< [G]
};

}  // namespace detail_eval

/// Evaluates `results` against `gt` (COCOeval.evaluate + accumulate + summarize).
/// Throws rcnn::Error on malformed segmentations (mask evaluation).
inline Evaluation evaluate(const Dataset& gt, const std::vector<Object>& results, IouType type,
                           const Params& params = {}) {
  using detail_eval::ImageEval;
  Evaluation ev;
  ev.iou_type = type;
  ev.params = params;
  const Params& p = ev.params;
  std::vector<std::int64_t> img_ids;
  for (const Image& im : gt.images) img_ids.push_back(im.id);
  std::sort(img_ids.begin(), img_ids.end());
  img_ids.erase(std::unique(img_ids.begin(), img_ids.end()), img_ids.end());
  for (const Category& c : gt.categories) ev.category_ids.push_back(c.id);
  std::sort(ev.category_ids.begin(), ev.category_ids.end());
  ev.category_ids.erase(std::unique(ev.category_ids.begin(), ev.category_ids.end()),
                        ev.category_ids.end());
  const std::size_t I = img_ids.size(), K = ev.K(), T = ev.T(), R = ev.R(), A = ev.A(), M = ev.M();
  std::unordered_map<std::int64_t, std::size_t> img_index, cat_index;
  for (std::size_t i = 0; i < I; ++i) img_index[img_ids[i]] = i;
  for (std::size_t k = 0; k < K; ++k) cat_index[ev.category_ids[k]] = k;
  std::unordered_map<std::int64_t, const Image*> image_of;
  for (const Image& im : gt.images) image_of.emplace(im.id, &im);

  // Ground truths and detections per (category, image), in file order.
  struct Item {
    const Object* obj;
    CocoRle rle;
    XywhBox rle_box{};
  };
  std::vector<std::vector<Item>> gts(K * I), dts(K * I);
  auto group = [&](const std::vector<Object>& objs, std::vector<std::vector<Item>>& into,
                   const char* what) {
    for (std::size_t n = 0; n < objs.size(); ++n) {
      const Object& o = objs[n];
      const auto ii = img_index.find(o.image_id);
      const auto kk = cat_index.find(o.category_id);
      if (ii == img_index.end() || kk == cat_index.end()) continue;
      Item item{&o, {}, {}};
      if (type == IouType::segm) {
        const Image& im = *image_of.at(o.image_id);
        item.rle = segmentation_rle(o.segmentation, im.height, im.width,
                                    std::string(what) + "[" + std::to_string(n) + "]");
        item.rle_box = rle_bbox(item.rle);
      }
      into[kk->second * I + ii->second].push_back(std::move(item));
    }
  };
  group(gt.annotations, gts, "annotations");
  group(results, dts, "results");

  const std::size_t max_det = std::size_t(*std::max_element(p.max_dets.begin(), p.max_dets.end()));
  std::vector<int> max_dets_sorted = p.max_dets;
  std::sort(max_dets_sorted.begin(), max_dets_sorted.end());
  // evals[(k * A + a) * I + i]
  std::vector<std::optional<ImageEval>> evals(K * A * I);
  for (std::size_t k = 0; k < K; ++k) {
    for (std::size_t i = 0; i < I; ++i) {
      const std::vector<Item>& g = gts[k * I + i];
      std::vector<Item> d_all;
      const std::vector<Item>& d_in = dts[k * I + i];
      if (g.empty() && d_in.empty()) continue;
      // Detections by score, highest first; ties keep file order; at most max_det.
      std::vector<std::size_t> order(d_in.size());
      for (std::size_t n = 0; n < order.size(); ++n) order[n] = n;
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return d_in[a].obj->score > d_in[b].obj->score;
      });
      if (order.size() > max_det) order.resize(max_det);
      const std::size_t D = order.size(), G = g.size();
      // IoU [D][G] (ground truths in file order); none when either side is empty.
      std::vector<double> ious(D * G);
      for (std::size_t di = 0; di < D; ++di) {
        const Item& d = d_in[order[di]];
        for (std::size_t gi = 0; gi < G; ++gi)
          ious[di * G + gi] =
              type == IouType::bbox
                  ? box_iou(d.obj->bbox, g[gi].obj->bbox, g[gi].obj->crowd)
                  : mask_iou(d.rle, g[gi].rle, d.rle_box, g[gi].rle_box, g[gi].obj->crowd);
      }
      for (std::size_t a = 0; a < A; ++a) {
        const auto& rng = p.area_ranges[a];
        // Ground truths: non-ignored first (stable).
        std::vector<std::uint8_t> ig(G);
        for (std::size_t gi = 0; gi < G; ++gi) {
          const Object& o = *g[gi].obj;
          ig[gi] = o.crowd || o.area < rng[0] || o.area > rng[1];
        }
        std::vector<std::size_t> gorder(G);
        for (std::size_t n = 0; n < G; ++n) gorder[n] = n;
        std::stable_sort(gorder.begin(), gorder.end(),
                         [&](std::size_t x, std::size_t y) { return ig[x] < ig[y]; });
        ImageEval e;
        e.scores.resize(D);
        for (std::size_t di = 0; di < D; ++di) e.scores[di] = d_in[order[di]].obj->score;
        e.gt_ignore.resize(G);
        for (std::size_t n = 0; n < G; ++n) e.gt_ignore[n] = ig[gorder[n]];
        e.matches.assign(T * D, 0);
        e.ignore.assign(T * D, 0);
        std::vector<std::int64_t> gt_match(T * G, 0);
        if (D > 0 && G > 0) {
          for (std::size_t t = 0; t < T; ++t) {
            for (std::size_t di = 0; di < D; ++di) {
              double best = std::min(p.iou_thresholds[t], 1 - 1e-10);
              std::ptrdiff_t m = -1;
              for (std::size_t n = 0; n < G; ++n) {
                const Object& go = *g[gorder[n]].obj;
                // A matched ground truth is taken, unless it is a crowd region.
                if (gt_match[t * G + n] > 0 && !go.crowd) continue;
                // Matched to a regular ground truth: ignored ones (sorted last) cannot beat it.
                if (m > -1 && e.gt_ignore[std::size_t(m)] == 0 && e.gt_ignore[n] == 1) break;
                const double v = ious[di * G + gorder[n]];
                if (v < best) continue;
                best = v;
                m = std::ptrdiff_t(n);
              }
              if (m == -1) continue;
              e.ignore[t * D + di] = e.gt_ignore[std::size_t(m)];
              e.matches[t * D + di] = g[gorder[std::size_t(m)]].obj->id;
              gt_match[t * G + std::size_t(m)] = d_in[order[di]].obj->id;
            }
          }
        }
        // Unmatched detections outside the area range are ignored.
        for (std::size_t di = 0; di < D; ++di) {
          const double area = d_in[order[di]].obj->area;
          const bool out = area < rng[0] || area > rng[1];
          for (std::size_t t = 0; t < T; ++t)
            if (e.matches[t * D + di] == 0 && out) e.ignore[t * D + di] = 1;
        }
        evals[(k * A + a) * I + i] = std::move(e);
      }
    }
  }

  // Accumulate.
  ev.precision.assign(T * R * K * A * M, -1.0);
  ev.recall.assign(T * K * A * M, -1.0);
  const double eps = 2.220446049250313e-16;  // numpy.spacing(1)
  for (std::size_t k = 0; k < K; ++k) {
    for (std::size_t a = 0; a < A; ++a) {
      for (std::size_t mi = 0; mi < M; ++mi) {
        const std::size_t md = std::size_t(p.max_dets[mi]);
        std::vector<const ImageEval*> E;
        for (std::size_t i = 0; i < I; ++i)
          if (evals[(k * A + a) * I + i]) E.push_back(&*evals[(k * A + a) * I + i]);
        if (E.empty()) continue;
        std::vector<double> scores;
        std::vector<std::pair<const ImageEval*, std::size_t>> where;  // (image, detection)
        std::size_t npig = 0;
        for (const ImageEval* e : E) {
          const std::size_t D = std::min(md, e->scores.size());
          for (std::size_t di = 0; di < D; ++di) {
            scores.push_back(e->scores[di]);
            where.emplace_back(e, di);
          }
          for (std::uint8_t x : e->gt_ignore) npig += x == 0;
        }
        if (npig == 0) continue;
        std::vector<std::size_t> inds(scores.size());
        for (std::size_t n = 0; n < inds.size(); ++n) inds[n] = n;
        std::stable_sort(inds.begin(), inds.end(),
                         [&](std::size_t x, std::size_t y) { return scores[x] > scores[y]; });
        const std::size_t nd = inds.size();
        for (std::size_t t = 0; t < T; ++t) {
          std::vector<double> rc(nd), pr(nd);
          double tp = 0, fp = 0;
          for (std::size_t n = 0; n < nd; ++n) {
            const auto [e, di] = where[inds[n]];
            const std::size_t D = e->scores.size();
            const bool matched = e->matches[t * D + di] != 0;
            const bool ignored = e->ignore[t * D + di] != 0;
            if (!ignored) (matched ? tp : fp) += 1;
            rc[n] = tp / double(npig);
            pr[n] = tp / (fp + tp + eps);
          }
          ev.recall_at(t, k, a, mi) = nd ? rc[nd - 1] : 0;
          for (std::size_t n = nd; n-- > 1;)
            if (pr[n] > pr[n - 1]) pr[n - 1] = pr[n];
          for (std::size_t r = 0; r < R; ++r) {
            // First detection whose recall reaches the threshold (numpy.searchsorted, left).
            const std::size_t pi = std::size_t(
                std::lower_bound(rc.begin(), rc.end(), p.recall_thresholds[r]) - rc.begin());
            ev.precision_at(t, r, k, a, mi) = pi < nd ? pr[pi] : 0.0;
          }
        }
      }
    }
  }

  // Summarize (COCOeval.summarize, _summarizeDets).
  auto area_index = [&](const char* label) -> std::ptrdiff_t {
    for (std::size_t a = 0; a < A; ++a)
      if (p.area_labels[a] == label) return std::ptrdiff_t(a);
    return -1;
  };
  auto maxdet_index = [&](int md) -> std::ptrdiff_t {
    for (std::size_t m = 0; m < M; ++m)
      if (p.max_dets[m] == md) return std::ptrdiff_t(m);
    return -1;
  };
  auto summarize = [&](bool ap, std::optional<double> iou, const char* area, int md) {
    const std::ptrdiff_t ai = area_index(area), mi = maxdet_index(md);
    std::vector<double> v;
    if (ai < 0 || mi < 0) return -1.0;
    for (std::size_t t = 0; t < T; ++t) {
      if (iou && p.iou_thresholds[t] != *iou) continue;
      if (ap) {
        for (std::size_t r = 0; r < R; ++r)
          for (std::size_t k = 0; k < K; ++k)
            v.push_back(ev.precision_at(t, r, k, std::size_t(ai), std::size_t(mi)));
      } else {
        for (std::size_t k = 0; k < K; ++k) v.push_back(ev.recall_at(t, k, std::size_t(ai), std::size_t(mi)));
      }
    }
    return detail_eval::mean_of_valid(v);
  };
  const int m0 = max_dets_sorted[0], m1 = max_dets_sorted[std::min<std::size_t>(1, M - 1)],
            m2 = max_dets_sorted[std::min<std::size_t>(2, M - 1)];
  ev.stats = {summarize(true, std::nullopt, "all", 100), summarize(true, 0.5, "all", m2),
              summarize(true, 0.75, "all", m2),          summarize(true, std::nullopt, "small", m2),
              summarize(true, std::nullopt, "medium", m2), summarize(true, std::nullopt, "large", m2),
              summarize(false, std::nullopt, "all", m0), summarize(false, std::nullopt, "all", m1),
              summarize(false, std::nullopt, "all", m2), summarize(false, std::nullopt, "small", m2),
              summarize(false, std::nullopt, "medium", m2), summarize(false, std::nullopt, "large", m2)};
  return ev;
}

/// The summary as pycocotools prints it (12 lines, 3 decimals).
inline std::string summary_table(const Evaluation& ev) {
  const Params& p = ev.params;
  char iou_all[32];
  std::snprintf(iou_all, sizeof iou_all, "%0.2f:%0.2f", p.iou_thresholds.front(), p.iou_thresholds.back());
  struct Row {
    bool ap;
    const char* iou;
    const char* area;
    int md;
  };
  const int m0 = p.max_dets.front(), m1 = p.max_dets[std::min<std::size_t>(1, p.max_dets.size() - 1)],
            m2 = p.max_dets.back();
  const Row rows[12] = {{true, iou_all, "all", 100},  {true, "0.50", "all", m2},    {true, "0.75", "all", m2},
                        {true, iou_all, "small", m2}, {true, iou_all, "medium", m2}, {true, iou_all, "large", m2},
                        {false, iou_all, "all", m0},  {false, iou_all, "all", m1},  {false, iou_all, "all", m2},
                        {false, iou_all, "small", m2}, {false, iou_all, "medium", m2}, {false, iou_all, "large", m2}};
  std::string out;
  for (int i = 0; i < 12; ++i) {
    char line[160];
    std::snprintf(line, sizeof line, " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f\n",
                  rows[i].ap ? "Average Precision" : "Average Recall", rows[i].ap ? "(AP)" : "(AR)",
                  rows[i].iou, rows[i].area, rows[i].md, ev.stats[std::size_t(i)]);
    out += line;
  }
  return out;
}

/// AP per category (area "all", the largest maxDets, mean over recall points and the IoU
/// thresholds, or only the threshold equal to `iou` when given), in `category_ids` order; -1
/// for a category without ground truth.
inline std::vector<double> per_category_ap(const Evaluation& ev, std::optional<double> iou = std::nullopt) {
  std::vector<double> out;
  const std::size_t m = ev.M() - 1;
  for (std::size_t k = 0; k < ev.K(); ++k) {
    std::vector<double> v;
    for (std::size_t t = 0; t < ev.T(); ++t) {
      if (iou && ev.params.iou_thresholds[t] != *iou) continue;
      for (std::size_t r = 0; r < ev.R(); ++r) v.push_back(ev.precision_at(t, r, k, 0, m));
    }
    out.push_back(detail_eval::mean_of_valid(v));
  }
  return out;
}

}  // namespace rcnn::coco
