// lm-evaluation-harness's lambada_openai, piqa and wikitext on a Model (include/llmint8/eval.h).
#include "llmint8/eval.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llmint8/error.h"

namespace llmint8::eval {

// ---- Log-likelihood -----------------------------------------------------------------------------

Loglikelihood loglikelihood(Model& model, Session& session, std::span<const int32_t> context,
                            std::span<const int32_t> continuation, int32_t prefix) {
  const int64_t max_len = model.max_context();
  const int64_t vocab = model.vocab_size();
  if (continuation.empty()) throw Error("loglikelihood: the continuation has no tokens");
  std::vector<int32_t> all;
  if (context.empty()) {
    if (prefix < 0) throw Error("loglikelihood: empty context and the model has no BOS/EOS prefix token");
    all.push_back(prefix);
  } else {
    all.assign(context.begin(), context.end());
  }
  all.insert(all.end(), continuation.begin(), continuation.end());
  for (int32_t t : all)
    if (t < 0 || t >= vocab)
      throw Error("loglikelihood: token id " + std::to_string(t) + " is outside the vocabulary of " +
                  std::to_string(vocab));
  // Targets all[s, e) per pass, input all[max(0, e-1-max_len), e-1): for a continuation of at
  // most max_len tokens one pass with the harness's input (context + continuation)[-(max_len+1):][:-1].
  // A longer continuation (which the harness does not handle) is scored in further passes of
  // max_len targets, each with as much preceding text as fits.
  const int64_t n = int64_t(all.size());
  Loglikelihood r;
  std::vector<float> logits;
  for (int64_t s = n - int64_t(continuation.size()); s < n;) {
    const int64_t e = std::min(n, s + max_len);
    const int64_t begin = std::max<int64_t>(0, e - 1 - max_len);
    const std::span<const int32_t> input(all.data() + begin, size_t(e - 1 - begin));
    const int64_t T = int64_t(input.size()), C = e - s;
    session.reset();
    session.forward(input, &logits, /*all_logits=*/true);
    if (int64_t(logits.size()) != T * vocab)
      throw Error("loglikelihood: the model returned " + std::to_string(logits.size()) + " logits, expected " +
                  std::to_string(T * vocab));
    for (int64_t j = 0; j < C; ++j) {
      const float* row = logits.data() + (T - C + j) * vocab;
      const int32_t target = all[size_t(s + j)];
      double mx = -INFINITY;
      int64_t arg = 0;
      for (int64_t v = 0; v < vocab; ++v)
        if (double(row[v]) > mx) mx = row[v], arg = v;
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - mx);
      r.logprob += double(row[target]) - mx - std::log(sum);
      if (arg != target) r.is_greedy = false;
    }
    s = e;
  }
  if (!std::isfinite(r.logprob)) throw Error("loglikelihood: not finite (NaN or infinite logits from the model)");
  return r;
}

EncodedPair encode_pair(const Tokenizer& tok, std::string_view context, std::string_view continuation) {
  std::string ctx(context), cont(continuation);
  size_t n_spaces = 0;
  while (n_spaces < ctx.size() && ctx[ctx.size() - 1 - n_spaces] == ' ') ++n_spaces;
  if (n_spaces > 0) {
    cont = ctx.substr(ctx.size() - n_spaces) + cont;
    ctx.resize(ctx.size() - n_spaces);
  }
  EncodedPair p;
  const std::vector<int32_t> whole = tok.encode(ctx + cont, /*add_special_tokens=*/false);
  p.context = tok.encode(ctx, /*add_special_tokens=*/false);
  const size_t nc = std::min(p.context.size(), whole.size());
  p.continuation.assign(whole.begin() + std::ptrdiff_t(nc), whole.end());
  return p;
}

std::vector<Window> rolling_windows(std::span<const int32_t> tokens, int32_t prefix, int64_t max_len) {
  if (max_len < 1) throw Error("rolling_windows: max_len must be >= 1");
  std::vector<Window> out;
  const int64_t n = int64_t(tokens.size());
  if (n == 0) return out;
  // context_len = 1: every window predicts up to max_len tokens.
  const int64_t first = std::min(max_len, n);
  Window w;
  w.input.push_back(prefix);
  w.input.insert(w.input.end(), tokens.begin(), tokens.begin() + first - 1);
  w.target.assign(tokens.begin(), tokens.begin() + first);
  out.push_back(std::move(w));
  int64_t predicted = first;
  while (predicted < n) {
    const int64_t pred = std::min(n - predicted, max_len);
    const int64_t end = predicted + pred;  // >= max_len + 1, so the input start is >= 0
    Window x;
    x.input.assign(tokens.begin() + (end - max_len - 1), tokens.begin() + (end - 1));
    x.target.assign(tokens.begin() + (end - pred), tokens.begin() + end);
    out.push_back(std::move(x));
    predicted += pred;
  }
  return out;
}

double rolling_loglikelihood(Model& model, Session& session, std::span<const int32_t> tokens, int32_t prefix) {
  double sum = 0;
  for (const Window& w : rolling_windows(tokens, prefix, model.max_context())) {
    // make_disjoint_window: context = input less the targets after its first one.
    const size_t ctx_len = w.input.size() - (w.target.size() - 1);
    sum += loglikelihood(model, session, std::span<const int32_t>(w.input.data(), ctx_len), w.target, prefix).logprob;
  }
  return sum;
}

// ---- Metric helpers -----------------------------------------------------------------------------

double mean(std::span<const double> x) {
  if (x.empty()) return NAN;
  double s = 0;
  for (double v : x) s += v;
  return s / double(x.size());
}

double mean_stderr(std::span<const double> x) {
  const size_t n = x.size();
  if (n < 2) return NAN;
  const double m = mean(x);
  double ss = 0;
  for (double v : x) ss += (v - m) * (v - m);
  return std::sqrt(ss / double(n - 1)) / std::sqrt(double(n));
}

size_t argmax(std::span<const double> x) {
  size_t a = 0;
  for (size_t i = 1; i < x.size(); ++i)
    if (x[i] > x[a]) a = i;
  return a;
}

size_t argmax_normalized(std::span<const double> ll, std::span<const std::string> choices) {
  if (ll.size() != choices.size()) throw Error("argmax_normalized: " + std::to_string(ll.size()) + " scores for " +
                                               std::to_string(choices.size()) + " choices");
  std::vector<double> n(ll.size());
  for (size_t i = 0; i < ll.size(); ++i) n[i] = ll[i] / double(std::max<int64_t>(1, utf8_length(choices[i])));
  return argmax(n);
}

PerplexityMetrics perplexity_metrics(double ll, int64_t words, int64_t bytes) {
  if (words <= 0 || bytes <= 0) throw Error("perplexity_metrics: words and bytes must be > 0");
  return {std::exp(-ll / double(words)), std::exp(-ll / double(bytes)), -ll / double(bytes) / std::log(2.0)};
}

int64_t utf8_length(std::string_view s) {
  int64_t n = 0;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (i + len > s.size()) len = 1;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) len = 1;
    i += len;
    ++n;
  }
  return n;
}

int64_t split_word_count(std::string_view s) {
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  int64_t runs = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (ws(s[i]) && (i == 0 || !ws(s[i - 1]))) ++runs;
  return runs + 1;
}

namespace {
void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// re.sub(o\s*([^c]*?)\s*c, o\1c): from each opener to the first closer after it, the inner text
// loses its leading and trailing whitespace. Hand-written: std::regex recurses per character and
// overflows the stack on long spans between quotes.
std::string strip_pairs(const std::string& s, char o, char c) {
  std::string out;
  size_t pos = 0;
  for (;;) {
    const size_t a = s.find(o, pos);
    if (a == std::string::npos) break;
    const size_t b = s.find(c, a + 1);
    if (b == std::string::npos) break;  // no later opener has a closer either
    size_t l = a + 1, r = b;
    while (l < r && is_space(s[l])) ++l;
    while (r > l && is_space(s[r - 1])) --r;
    out.append(s, pos, a - pos);
    out += o;
    out.append(s, l, r - l);
    out += c;
    pos = b + 1;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// re.sub(r"/' [0-9]/", r"/'[0-9]/"): the pattern is literal apart from the digit class, and so is
// the replacement text.
std::string slash_quote_digit(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (i + 5 <= s.size() && s.compare(i, 3, "/' ") == 0 && s[i + 3] >= '0' && s[i + 3] <= '9' && s[i + 4] == '/') {
      out += "/'[0-9]/";
      i += 5;
    } else {
      out += s[i++];
    }
  }
  return out;
}
}  // namespace

std::string wikitext_detokenize(std::string s) {
  // The harness's replacements, in its order (Python str.replace / re.sub: all non-overlapping).
  replace_all(s, "s '", "s'");
  s = slash_quote_digit(s);
  replace_all(s, " @-@ ", "-");
  replace_all(s, " @,@ ", ",");
  replace_all(s, " @.@ ", ".");
  replace_all(s, " : ", ": ");
  replace_all(s, " ; ", "; ");
  replace_all(s, " . ", ". ");
  replace_all(s, " ! ", "! ");
  replace_all(s, " ? ", "? ");
  replace_all(s, " , ", ", ");
  // re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)") and the same for [], {}, "" and ''.
  s = strip_pairs(s, '(', ')');
  s = strip_pairs(s, '[', ']');
  s = strip_pairs(s, '{', '}');
  s = strip_pairs(s, '"', '"');
  s = strip_pairs(s, '\'', '\'');
  replace_all(s, "= = = =", "====");
  replace_all(s, "= = =", "===");
  replace_all(s, "= =", "==");
  replace_all(s, " \xC2\xB0 ", "\xC2\xB0");  // " ° "
  replace_all(s, " \n", "\n");
  replace_all(s, "\n ", "\n");
  replace_all(s, " N ", " 1 ");
  replace_all(s, " 's", "'s");
  return s;
}

std::vector<std::string> wikitext_documents(std::string_view raw) {
  auto top_heading = [](std::string_view line) {
    // " = Title = " exactly one '=' on each side (sub-headings are " = = Sub = = ").
    if (line.size() < 6 || line.substr(0, 3) != " = " || line.substr(line.size() - 3) != " = ") return false;
    return line[3] != '=' && line[line.size() - 4] != '=';
  };
  std::vector<std::string> docs;
  std::string cur;
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t nl = raw.find('\n', pos);
    const size_t end = nl == std::string_view::npos ? raw.size() : nl + 1;
    const std::string_view line = raw.substr(pos, end - pos);
    std::string_view bare = line;
    if (!bare.empty() && bare.back() == '\n') bare.remove_suffix(1);
    if (top_heading(bare)) {
      if (cur.find_first_not_of(" \n") != std::string::npos) docs.push_back(std::move(cur));
      cur.clear();
    }
    cur.append(line);
    pos = end;
  }
  if (cur.find_first_not_of(" \n") != std::string::npos) docs.push_back(std::move(cur));
  return docs;
}

// ---- Tasks --------------------------------------------------------------------------------------

namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open (set the data directory with --data)");
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(std::move(line));
  }
  return lines;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open (set the data directory with --data)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string json_string(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string())
    throw Error(where + ": expected a JSON object with a string \"" + key + "\"");
  return j[key].get<std::string>();
}

nlohmann::json parse_json_line(const std::string& line, const std::string& where) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": invalid JSON (" + e.what() + ")");
  }
}

int32_t prefix_token(const Model& m, const Tokenizer& tok) {
  if (m.bos_id() >= 0) return m.bos_id();
  if (tok.bos_id() >= 0) return tok.bos_id();
  if (m.eos_id() >= 0) return m.eos_id();
  return tok.eos_id();
}

int64_t take(int64_t total, int64_t limit) { return limit > 0 ? std::min(total, limit) : total; }

void run_lambada(Model& model, const Tokenizer& tok, const EvalOptions& o, std::vector<Metric>& out) {
  const std::string path = o.data_dir + "/lambada/lambada_test.jsonl";
  const auto lines = read_lines(path);
  const int64_t n = take(int64_t(lines.size()), o.limit);
  if (n == 0) throw Error(path + ": no passages");
  auto session = model.new_session();
  const int32_t prefix = prefix_token(model, tok);
  std::vector<double> lls, accs;
  for (int64_t i = 0; i < n; ++i) {
    const std::string where = path + ":" + std::to_string(i + 1);
    const std::string text = json_string(parse_json_line(lines[size_t(i)], where), "text", where);
    const size_t sp = text.rfind(' ');
    if (sp == std::string::npos) throw Error(where + ": the passage has no space before its last word");
    const EncodedPair p = encode_pair(tok, text.substr(0, sp), text.substr(sp));
    const Loglikelihood r = loglikelihood(model, *session, p.context, p.continuation, prefix);
    lls.push_back(r.logprob);
    accs.push_back(r.is_greedy ? 1.0 : 0.0);
    if (o.progress) o.progress("lambada", i + 1, n);
  }
  const double ppl = std::exp(-mean(lls));
  // The harness bootstraps this stderr; the delta method (d exp(-m) = exp(-m) dm) approximates it.
  out.push_back({"lambada_openai", "perplexity", ppl, ppl * mean_stderr(lls), false, n});
  out.push_back({"lambada_openai", "acc", mean(accs), mean_stderr(accs), true, n});
}

void run_piqa(Model& model, const Tokenizer& tok, const EvalOptions& o, std::vector<Metric>& out) {
  const std::string path = o.data_dir + "/piqa/valid.jsonl";
  const std::string lpath = o.data_dir + "/piqa/valid-labels.lst";
  const auto lines = read_lines(path);
  const auto labels = read_lines(lpath);
  if (labels.size() != lines.size())
    throw Error(lpath + ": " + std::to_string(labels.size()) + " labels for " + std::to_string(lines.size()) +
                " examples in " + path);
  const int64_t n = take(int64_t(lines.size()), o.limit);
  if (n == 0) throw Error(path + ": no examples");
  auto session = model.new_session();
  const int32_t prefix = prefix_token(model, tok);
  std::vector<double> acc, acc_norm;
  for (int64_t i = 0; i < n; ++i) {
    const std::string where = path + ":" + std::to_string(i + 1);
    const nlohmann::json j = parse_json_line(lines[size_t(i)], where);
    const std::string ctx = "Question: " + json_string(j, "goal", where) + "\nAnswer:";
    const std::string sols[2] = {json_string(j, "sol1", where), json_string(j, "sol2", where)};
    const std::string& lab = labels[size_t(i)];
    if (lab != "0" && lab != "1") throw Error(lpath + ":" + std::to_string(i + 1) + ": label '" + lab + "' is not 0 or 1");
    const size_t gold = lab == "1" ? 1 : 0;
    std::vector<double> ll(2);
    for (size_t c = 0; c < 2; ++c) {
      const EncodedPair p = encode_pair(tok, ctx, " " + sols[c]);
      ll[c] = loglikelihood(model, *session, p.context, p.continuation, prefix).logprob;
    }
    acc.push_back(argmax(ll) == gold ? 1.0 : 0.0);
    acc_norm.push_back(argmax_normalized(ll, sols) == gold ? 1.0 : 0.0);
    if (o.progress) o.progress("piqa", i + 1, n);
  }
  out.push_back({"piqa", "acc", mean(acc), mean_stderr(acc), true, n});
  out.push_back({"piqa", "acc_norm", mean(acc_norm), mean_stderr(acc_norm), true, n});
}

void run_wikitext(Model& model, const Tokenizer& tok, const EvalOptions& o, std::vector<Metric>& out) {
  const std::string path = o.data_dir + "/wikitext-2/wiki.test.raw";
  const auto docs = wikitext_documents(read_all(path));
  const int64_t n = take(int64_t(docs.size()), o.limit);
  if (n == 0) throw Error(path + ": no documents");
  auto session = model.new_session();
  const int32_t prefix = prefix_token(model, tok);
  double ll = 0;
  int64_t words = 0, bytes = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::string doc = wikitext_detokenize(docs[size_t(i)]);
    const std::vector<int32_t> ids = tok.encode(doc, /*add_special_tokens=*/false);
    ll += rolling_loglikelihood(model, *session, ids, prefix);
    words += split_word_count(doc);
    bytes += int64_t(doc.size());
    if (o.progress) o.progress("wikitext", i + 1, n);
  }
  const PerplexityMetrics pm = perplexity_metrics(ll, words, bytes);
  out.push_back({"wikitext", "word_perplexity", pm.word_perplexity, std::nullopt, false, n});
  out.push_back({"wikitext", "byte_perplexity", pm.byte_perplexity, std::nullopt, false, n});
  out.push_back({"wikitext", "bits_per_byte", pm.bits_per_byte, std::nullopt, false, n});
}

}  // namespace

bool known_task(const std::string& t) {
  return t == "lambada" || t == "lambada_openai" || t == "piqa" || t == "wikitext";
}

std::vector<Metric> evaluate(Model& model, const Tokenizer& tok, const EvalOptions& opts) {
  if (opts.limit < 0) throw Error("eval: limit must be >= 0, got " + std::to_string(opts.limit));
  for (const auto& t : opts.tasks)
    if (!known_task(t))
      throw Error("eval: unknown task '" + t + "' (known: lambada, piqa, wikitext)");
  std::vector<Metric> out;
  for (const auto& t : opts.tasks) {
    if (t == "lambada" || t == "lambada_openai") run_lambada(model, tok, opts, out);
    else if (t == "piqa") run_piqa(model, tok, opts, out);
    else run_wikitext(model, tok, opts, out);
  }
  return out;
}

std::vector<ComparisonRow> compare(const std::vector<Metric>& a, const std::vector<Metric>& b) {
  std::vector<ComparisonRow> rows;
  for (const Metric& x : a)
    for (const Metric& y : b)
      if (x.task == y.task && x.name == y.name) {
        ComparisonRow r{x.task, x.name, x.value, y.value, std::nullopt, y.value - x.value, std::nullopt, x.n};
        if (x.stderr_ && y.stderr_ && std::isfinite(*x.stderr_) && std::isfinite(*y.stderr_)) {
          r.stderr_ = std::max(*x.stderr_, *y.stderr_);
          r.within = std::fabs(r.diff) <= *r.stderr_;
        }
        rows.push_back(r);
      }
  return rows;
}

}  // namespace llmint8::eval
