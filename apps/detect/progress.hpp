#pragma once
// rcnn-detect's progress on stderr: a bar redrawn in place (images/s, ETA) when stderr is a
// terminal, else a plain line every `every` images; nothing with --quiet. The final summary
// line is printed by the caller.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace rcnn_detect {

class Progress {
 public:
  /// `total` 0: unknown (camera, video without a frame count): no ETA.
  Progress(bool quiet, std::size_t every) : quiet_(quiet), every_(every ? every : 1),
        tty_(isatty(fileno(stderr)) == 1), start_(clock::now()) {}

  void set_total(std::size_t total) { total_ = total; }
  void add_total(std::size_t n) { total_ += n; }

  /// Called after each image (or frame); `what` names it.
  void step(const std::string& what) {
    ++done_;
    if (quiet_) return;
    const double s = seconds();
    const double rate = s > 0 ? double(done_) / s : 0.0;
    if (tty_) {
      if (done_ != total_ && s - last_draw_ < 0.1) return;  // at most 10 redraws a second
      last_draw_ = s;
      char line[256];
      const int width = 24;
      std::string bar;
      if (total_ > 0) {
        const std::size_t filled = std::min<std::size_t>(width, done_ * width / total_);
        bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
      }
      std::snprintf(line, sizeof line, "\r%s%zu%s images  %.1f images/s  %s\033[K", bar.c_str(),
                    done_, total_ ? ("/" + std::to_string(total_)).c_str() : "", rate,
                    eta(rate).c_str());
      std::fputs(line, stderr);
      drawn_ = true;
    } else if (done_ % every_ == 0 || done_ == total_) {
      std::fprintf(stderr, "rcnn-detect: %zu%s images, %.1f images/s%s%s (%s)\n", done_,
                   total_ ? ("/" + std::to_string(total_)).c_str() : "", rate,
                   total_ && done_ < total_ ? ", " : "", total_ && done_ < total_ ? eta(rate).c_str() : "",
                   what.c_str());
    }
    std::fflush(stderr);
  }

  /// Ends the bar's line before other output on stderr (warnings, the summary).
  void break_line() {
    if (drawn_) {
      std::fputs("\n", stderr);
      drawn_ = false;
    }
  }

  std::size_t done() const { return done_; }
  double seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

 private:
  using clock = std::chrono::steady_clock;
  std::string eta(double rate) const {
    if (!total_ || rate <= 0 || done_ >= total_) return "";
    const long s = long(double(total_ - done_) / rate + 0.5);
    char b[48];
    std::snprintf(b, sizeof b, "ETA %ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    return b;
  }

  bool quiet_;
  std::size_t every_;
  bool tty_;
  clock::time_point start_;
  std::size_t total_ = 0, done_ = 0;
  double last_draw_ = -1;
  bool drawn_ = false;
};

}  // namespace rcnn_detect
