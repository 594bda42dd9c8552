// Outlier-feature recording and its report, JSON and SVG (src/runtime/outliers.h).
#include "runtime/outliers.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "llmint8/error.h"

namespace llmint8::outliers {

Recorder::Recorder(float threshold) : threshold_(threshold) {
  if (!(threshold > 0.f) || !std::isfinite(threshold))
    throw Error("outliers: threshold must be a finite number > 0, got " + std::to_string(threshold));
}

void Recorder::observe(const std::string& module, const float* X, int64_t M, int64_t K) {
  if (M <= 0 || K <= 0) return;
  if (X == last_x_ && M == last_m_ && next_ > 0 && sites_[next_ - 1].width == K) {
    // Same tensor as the previous Linear (q/k/v, gate/up): the same site.
    Site& s = sites_[next_ - 1];
    if (tokens_ == 0) {
      const size_t dot = module.rfind('.');
      s.name += "+" + (dot == std::string::npos ? module : module.substr(dot + 1));
    }
    return;
  }
  last_x_ = X;
  last_m_ = M;
  if (next_ == sites_.size()) {
    if (tokens_ > 0)
      throw Error("outliers: module '" + module + "' ran in a later step but not in the first one");
    Site s;
    s.name = module;
    s.width = K;
    s.count.assign(size_t(K), 0);
    s.max_abs.assign(size_t(K), 0.f);
    s.hit.assign(size_t(K), {});
    sites_.push_back(std::move(s));
  }
  Site& s = sites_[next_++];
  if (s.width != K)
    throw Error("outliers: module '" + module + "' has input width " + std::to_string(K) + ", the site expected " +
                std::to_string(s.width));
  step_rows_ = M;
  for (int64_t k = 0; k < K; ++k) s.hit[size_t(k)].resize(size_t(tokens_ + M), 0);
  for (int64_t m = 0; m < M; ++m) {
    const float* row = X + m * K;
    for (int64_t k = 0; k < K; ++k) {
      const float a = std::fabs(row[k]);
      if (a > s.max_abs[size_t(k)]) s.max_abs[size_t(k)] = a;
      if (a >= threshold_) {
        ++s.count[size_t(k)];
        s.hit[size_t(k)][size_t(tokens_ + m)] = 1;
      }
    }
  }
  s.rows += M;
}

void Recorder::end_step() {
  tokens_ += step_rows_;
  step_rows_ = 0;
  next_ = 0;
  last_x_ = nullptr;
  last_m_ = -1;
}

Report Recorder::report(size_t top) const {
  Report r;
  r.threshold = threshold_;
  r.tokens = tokens_ + step_rows_;
  std::map<int64_t, std::vector<size_t>> by_width;
  for (size_t i = 0; i < sites_.size(); ++i) by_width[sites_[i].width].push_back(i);
  for (const auto& [width, idx] : by_width) {
    Group g;
    g.width = width;
    for (size_t i : idx) g.sites.push_back(sites_[i].name);
    const double nsites = double(idx.size());
    for (int64_t d = 0; d < width; ++d) {
      Dimension dim;
      dim.index = d;
      std::vector<uint8_t> any(size_t(r.tokens), 0);
      for (size_t i : idx) {
        const Site& s = sites_[i];
        dim.max_per_site.push_back(s.max_abs[size_t(d)]);
        dim.max_abs = std::max(dim.max_abs, s.max_abs[size_t(d)]);
        dim.outlier_values += s.count[size_t(d)];
        if (s.count[size_t(d)] > 0) {
          ++dim.layers;
          const auto& h = s.hit[size_t(d)];
          for (size_t t = 0; t < h.size() && t < any.size(); ++t) any[t] |= h[t];
        }
      }
      if (dim.layers == 0) continue;
      int64_t tok = 0;
      for (uint8_t a : any) tok += a;
      dim.layer_share = double(dim.layers) / nsites;
      dim.token_share = r.tokens > 0 ? double(tok) / double(r.tokens) : 0.0;
      dim.systematic = dim.layer_share >= 0.25 && dim.token_share >= 0.06;
      g.systematic += dim.systematic;
      g.dims.push_back(std::move(dim));
    }
    std::stable_sort(g.dims.begin(), g.dims.end(), [](const Dimension& a, const Dimension& b) {
      if (a.systematic != b.systematic) return a.systematic;
      const double sa = a.layer_share * a.token_share, sb = b.layer_share * b.token_share;
      if (sa != sb) return sa > sb;
      return a.max_abs > b.max_abs;
    });
    std::vector<uint8_t> listed(size_t(width), 0);
    for (size_t i = 0; i < g.dims.size() && i < top; ++i) listed[size_t(g.dims[i].index)] = 1;
    for (size_t i : idx) {
      float m = 0;
      for (int64_t d = 0; d < width; ++d)
        if (!listed[size_t(d)]) m = std::max(m, sites_[i].max_abs[size_t(d)]);
      g.site_max_other.push_back(m);
    }
    r.groups.push_back(std::move(g));
  }
  std::stable_sort(r.groups.begin(), r.groups.end(),
                   [](const Group& a, const Group& b) { return a.sites.size() > b.sites.size(); });
  return r;
}

nlohmann::json to_json(const Report& r, size_t max_dims) {
  nlohmann::json j;
  j["threshold"] = r.threshold;
  j["tokens"] = r.tokens;
  j["criterion"] = "systematic: |x| >= threshold in >= 25% of the group's Linear inputs and >= 6% of tokens";
  j["groups"] = nlohmann::json::array();
  for (const Group& g : r.groups) {
    nlohmann::json gj;
    gj["width"] = g.width;
    gj["sites"] = g.sites;
    gj["systematic_dimensions"] = g.systematic;
    gj["dimensions_with_outliers"] = g.dims.size();
    gj["dimensions"] = nlohmann::json::array();
    for (size_t i = 0; i < g.dims.size() && i < max_dims; ++i) {
      const Dimension& d = g.dims[i];
      gj["dimensions"].push_back({{"index", d.index},
                                  {"layers", d.layers},
                                  {"layer_share", d.layer_share},
                                  {"token_share", d.token_share},
                                  {"outlier_values", d.outlier_values},
                                  {"max_abs", d.max_abs},
                                  {"systematic", d.systematic},
                                  {"max_per_layer", d.max_per_site}});
    }
    j["groups"].push_back(std::move(gj));
  }
  return j;
}

namespace {
std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}
std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
// "model.layers.3.self_attn.q_proj+k_proj+v_proj" -> "3 q+k+v"
std::string short_site(const std::string& s) {
  std::string layer;
  size_t p = 0;
  while (p < s.size()) {
    size_t e = s.find('.', p);
    if (e == std::string::npos) e = s.size();
    const std::string part = s.substr(p, e - p);
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      layer = part;
      break;
    }
    p = e + 1;
  }
  const size_t dot = s.rfind('.');
  std::string tail = dot == std::string::npos ? s : s.substr(dot + 1);
  std::string t;
  for (size_t i = 0; i < tail.size(); ++i) {
    if (tail.compare(i, 5, "_proj") == 0) { i += 4; continue; }
    t += tail[i];
  }
  return layer.empty() ? t : layer + " " + t;
}
}  // namespace

std::string to_svg(const Report& r, size_t top) {
  const double W = 1060, H = 540, L = 80, R = 300, T = 60, B = 110;
  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1060\" height=\"540\" viewBox=\"0 0 1060 540\" "
       "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"1060\" height=\"540\" fill=\"white\"/>\n";
  if (r.groups.empty() || r.groups[0].sites.empty()) {
    o += "<text x=\"530\" y=\"270\" text-anchor=\"middle\">no Linear inputs were recorded</text>\n</svg>\n";
    return o;
  }
  const Group& g = r.groups[0];
  const size_t n = g.sites.size();
  const size_t k = std::min(top, g.dims.size());
  // y: log10 of max |x|, from a floor below the smallest plotted value to above the largest.
  float vmax = r.threshold, vmin = r.threshold;
  auto see = [&](float v) {
    if (v > 0) vmax = std::max(vmax, v), vmin = std::min(vmin, v);
  };
  for (size_t i = 0; i < k; ++i)
    for (float v : g.dims[i].max_per_site) see(v);
  for (float v : g.site_max_other) see(v);
  const double y0 = std::floor(std::log10(double(vmin))), y1 = std::ceil(std::log10(double(vmax)) + 1e-9);
  const double pw = W - L - R, ph = H - T - B;
  auto X = [&](size_t i) { return L + (n == 1 ? pw / 2 : pw * double(i) / double(n - 1)); };
  auto Y = [&](double v) {
    const double lv = std::log10(std::max(v, std::pow(10.0, y0)));
    return T + ph * (1.0 - (lv - y0) / std::max(y1 - y0, 1e-9));
  };
  o += "<text x=\"" + fmt("%.0f", W / 2) + "\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">"
       "Outlier features: max |x| per Linear input, top " + std::to_string(k) + " dimensions (width " +
       std::to_string(g.width) + ", " + std::to_string(r.tokens) + " tokens)</text>\n";
  // Grid and y axis (decades).
  for (double e = y0; e <= y1 + 1e-9; e += 1) {
    const double y = Y(std::pow(10.0, e));
    o += "<line x1=\"" + fmt("%.1f", L) + "\" x2=\"" + fmt("%.1f", L + pw) + "\" y1=\"" + fmt("%.1f", y) + "\" y2=\"" +
         fmt("%.1f", y) + "\" stroke=\"#ddd\"/>\n";
    o += "<text x=\"" + fmt("%.1f", L - 8) + "\" y=\"" + fmt("%.1f", y + 4) + "\" text-anchor=\"end\">" +
         fmt("%g", std::pow(10.0, e)) + "</text>\n";
  }
  o += "<line x1=\"" + fmt("%.1f", L) + "\" x2=\"" + fmt("%.1f", L) + "\" y1=\"" + fmt("%.1f", T) + "\" y2=\"" +
       fmt("%.1f", T + ph) + "\" stroke=\"black\"/>\n";
  o += "<line x1=\"" + fmt("%.1f", L) + "\" x2=\"" + fmt("%.1f", L + pw) + "\" y1=\"" + fmt("%.1f", T + ph) +
       "\" y2=\"" + fmt("%.1f", T + ph) + "\" stroke=\"black\"/>\n";
  o += "<text transform=\"translate(22," + fmt("%.1f", T + ph / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">max |x| over tokens (log scale)</text>\n";
  o += "<text x=\"" + fmt("%.1f", L + pw / 2) + "\" y=\"" + fmt("%.1f", H - 12) +
       "\" text-anchor=\"middle\">Linear input (layer, module), in model order</text>\n";
  // x tick labels, thinned to at most ~40.
  const size_t step = std::max<size_t>(1, (n + 39) / 40);
  for (size_t i = 0; i < n; i += step) {
    const double x = X(i);
    o += "<line x1=\"" + fmt("%.1f", x) + "\" x2=\"" + fmt("%.1f", x) + "\" y1=\"" + fmt("%.1f", T + ph) + "\" y2=\"" +
         fmt("%.1f", T + ph + 4) + "\" stroke=\"black\"/>\n";
    o += "<text transform=\"translate(" + fmt("%.1f", x + 3) + "," + fmt("%.1f", T + ph + 10) +
         ") rotate(45)\" font-size=\"10\">" + xml_escape(short_site(g.sites[i])) + "</text>\n";
  }
  // Threshold.
  const double yt = Y(r.threshold);
  o += "<line x1=\"" + fmt("%.1f", L) + "\" x2=\"" + fmt("%.1f", L + pw) + "\" y1=\"" + fmt("%.1f", yt) + "\" y2=\"" +
       fmt("%.1f", yt) + "\" stroke=\"#c00\" stroke-dasharray=\"6,4\"/>\n";
  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                 "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
  auto polyline = [&](const std::vector<float>& v, const std::string& color, const std::string& extra) {
    std::string pts;
    for (size_t i = 0; i < v.size(); ++i) pts += fmt("%.1f", X(i)) + "," + fmt("%.1f", Y(v[i])) + " ";
    o += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\" " + extra + " points=\"" + pts + "\"/>\n";
    for (size_t i = 0; i < v.size(); ++i)
      o += "<circle cx=\"" + fmt("%.1f", X(i)) + "\" cy=\"" + fmt("%.1f", Y(v[i])) + "\" r=\"2.5\" fill=\"" + color +
           "\"/>\n";
  };
  polyline(g.site_max_other, "#aaa", "stroke-dasharray=\"3,3\"");
  for (size_t i = 0; i < k; ++i) polyline(g.dims[i].max_per_site, colors[i % 10], "");
  // Legend.
  double ly = T + 10;
  const double lx = L + pw + 20;
  auto legend = [&](const std::string& color, const std::string& text, const std::string& dash) {
    o += "<line x1=\"" + fmt("%.1f", lx) + "\" x2=\"" + fmt("%.1f", lx + 24) + "\" y1=\"" + fmt("%.1f", ly) +
         "\" y2=\"" + fmt("%.1f", ly) + "\" stroke=\"" + color + "\" stroke-width=\"2\" " + dash + "/>\n";
    o += "<text x=\"" + fmt("%.1f", lx + 30) + "\" y=\"" + fmt("%.1f", ly + 4) + "\">" + xml_escape(text) + "</text>\n";
    ly += 18;
  };
  for (size_t i = 0; i < k; ++i) {
    const Dimension& d = g.dims[i];
    legend(colors[i % 10],
           "dim " + std::to_string(d.index) + fmt(": %.0f%% of layers, ", 100 * d.layer_share) +
               fmt("%.0f%% of tokens", 100 * d.token_share) + (d.systematic ? " *" : ""),
           "");
  }
  legend("#aaa", "all other dims (max)", "stroke-dasharray=\"3,3\"");
  legend("#c00", "threshold " + fmt("%g", r.threshold), "stroke-dasharray=\"6,4\"");
  o += "<text x=\"" + fmt("%.1f", lx) + "\" y=\"" + fmt("%.1f", ly + 8) +
       "\" font-size=\"10\">* systematic: &gt;= 25% of layers</text>\n";
  o += "<text x=\"" + fmt("%.1f", lx) + "\" y=\"" + fmt("%.1f", ly + 22) + "\" font-size=\"10\">and &gt;= 6% of tokens</text>\n";
  o += "</svg>\n";
  return o;
}

}  // namespace llmint8::outliers
