// rcnn-eval: COCO box and mask AP of a results file against an annotation file, equal to
// pycocotools' COCOeval (rcnn/eval/coco_eval.hpp). Needs neither LibTorch nor OpenCV.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <rcnn/eval/coco_eval.hpp>
#include <rcnn/version.hpp>

int main(int argc, char** argv) {
  CLI::App app{
      "rcnn-eval: COCO evaluation of detections, equal to pycocotools' COCOeval (default\n"
      "parameters: IoU 0.50:0.05:0.95, 101 recall points, maxDets 1/10/100, areas all/small/\n"
      "medium/large, crowd regions ignored). Prints pycocotools' 12-line summary per IoU type.\n"
      "RESULTS is a COCO results file ([{image_id, category_id, bbox [x, y, w, h], score\n"
      "[, segmentation]}], e.g. rcnn-detect --format coco); ANNOTATIONS the dataset's\n"
      "instances.json. docs/how-to/evaluate-on-coco.md."};
  std::string annotations, results, json_out, iou_type = "auto";
  bool per_category = false;
  app.set_version_flag("--version", std::string("rcnn-eval ") + RCNN_VERSION_STRING);
  app.add_option("--annotations,-a", annotations, "COCO annotation file (instances.json)")->required();
  app.add_option("--results,-r", results, "COCO results file")->required();
  app.add_option("--iou-type,-t", iou_type,
                 "bbox, segm, both, or auto (default): bbox, and segm too when the results have "
                 "segmentations")
      ->check(CLI::IsMember({"auto", "bbox", "segm", "both"}));
  app.add_option("--json", json_out,
                 "also write the numbers to this file: {\"bbox\": {\"AP\": ..., ...}, \"segm\": ...} "
                 "(full precision)");
  app.add_flag("--per-category", per_category,
               "also print the AP and AP50 of each category (area all, maxDets 100)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "rcnn-eval: error: %s (see --help)\n", e.what());
    return e.get_exit_code();
  }
  try {
    // Both files are read before any output (so a bad --json path fails fast too).
    std::ofstream json_file;
    if (!json_out.empty()) {
      json_file.open(json_out);
      if (!json_file) rcnn::detail::fail(json_out + ": cannot open for writing");
    }
    const rcnn::coco::Dataset gt = rcnn::coco::read_ground_truth(annotations);
    const nlohmann::json raw = rcnn::coco::detail_eval::read_json_file(results, "COCO results file");
    const std::vector<rcnn::coco::Object> dts = rcnn::coco::parse_results(raw, gt, results);
    bool has_segm = false;
    for (const auto& r : raw)
      if (r.is_object() && r.contains("segmentation")) has_segm = true;
    std::vector<rcnn::coco::IouType> types;
    if (iou_type == "bbox" || iou_type == "both" || iou_type == "auto")
      types.push_back(rcnn::coco::IouType::bbox);
    if (iou_type == "segm" || iou_type == "both" || (iou_type == "auto" && has_segm))
      types.push_back(rcnn::coco::IouType::segm);
    std::printf("%s: %zu images, %zu categories, %zu annotations; %s: %zu results\n",
                annotations.c_str(), gt.images.size(), gt.categories.size(), gt.annotations.size(),
                results.c_str(), dts.size());
    nlohmann::ordered_json all = nlohmann::ordered_json::object();
    for (const auto type : types) {
      const rcnn::coco::Evaluation ev = rcnn::coco::evaluate(gt, dts, type);
      std::printf("IoU type %s:\n%s", rcnn::coco::iou_type_name(type),
                  rcnn::coco::summary_table(ev).c_str());
      nlohmann::ordered_json j = nlohmann::ordered_json::object();
      for (std::size_t i = 0; i < 12; ++i) j[rcnn::coco::Evaluation::stat_names[i]] = ev.stats[i];
      if (per_category) {
        const std::vector<double> ap = rcnn::coco::per_category_ap(ev);
        const std::vector<double> ap50 = rcnn::coco::per_category_ap(ev, 0.5);
        nlohmann::ordered_json per = nlohmann::ordered_json::object(), per50 = per;
        std::printf("  %-8s %-24s %-6s %s\n", "id", "category", "AP", "AP50");
        for (std::size_t k = 0; k < ap.size(); ++k) {
          std::string name;
          for (const auto& c : gt.categories)
            if (c.id == ev.category_ids[k]) name = c.name;
          std::printf("  %-8lld %-24s %6.3f %6.3f\n", static_cast<long long>(ev.category_ids[k]),
                      name.c_str(), ap[k], ap50[k]);
          per[std::to_string(ev.category_ids[k])] = ap[k];
          per50[std::to_string(ev.category_ids[k])] = ap50[k];
        }
        j["per_category_AP"] = per;
        j["per_category_AP50"] = per50;
      }
      all[rcnn::coco::iou_type_name(type)] = j;
    }
    if (json_file.is_open()) {
      json_file << all.dump(2) << "\n";
      if (!json_file) rcnn::detail::fail(json_out + ": write failed");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rcnn-eval: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
