// OpenAI Batch JSONL <-> WorkItem. Parsing is strict about types and ranges (a bad line must fail
// here with a message naming the field and value, not later as a puzzling worker error) but never
// throws: every problem lands in BatchRequest::status, and the custom_id is recovered whenever the
// line still parses far enough to have one, so the 400 result maps back to the caller's request.
// Output lines keep OpenAI's documented key order: error lines are built as ordered_json trees;
// success lines, one per result on the coordinator's hot path, are written out directly (the same
// bytes, with nlohmann escaping every string).
#include "coordinator/batch_format.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace dpinfer::coordinator {
namespace {

using Json = nlohmann::ordered_json;

constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
constexpr size_t kMaxStopStrings = 16;
constexpr size_t kMaxDescribedBytes = 48;

// Cuts `s` to at most `max_bytes` without splitting a UTF-8 sequence, so messages stay valid.
std::string TruncateUtf8(std::string s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  s.resize(end);
  s += "...";
  return s;
}

// The value as it appeared (JSON syntax), shortened: messages quote what the user sent.
std::string Describe(const Json& v) {
  return TruncateUtf8(v.dump(-1, ' ', false, Json::error_handler_t::replace), kMaxDescribedBytes);
}

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when it is ill-formed (by the
// Unicode table nlohmann's lexer applies: no overlongs, no surrogates, nothing past U+10FFFF).
size_t Utf8SequenceLength(absl::string_view s, size_t i) {
  auto byte = [&](size_t k) -> unsigned {
    return k < s.size() ? static_cast<unsigned char>(s[k]) : 0;
  };
  auto in = [](unsigned b, unsigned lo, unsigned hi) { return b >= lo && b <= hi; };
  const unsigned b0 = byte(i);
  if (b0 < 0x80) return 1;
  if (in(b0, 0xC2, 0xDF)) return in(byte(i + 1), 0x80, 0xBF) ? 2 : 0;
  if (in(b0, 0xE0, 0xEF)) {
    const unsigned lo = b0 == 0xE0 ? 0xA0 : 0x80;
    const unsigned hi = b0 == 0xED ? 0x9F : 0xBF;
    return in(byte(i + 1), lo, hi) && in(byte(i + 2), 0x80, 0xBF) ? 3 : 0;
  }
  if (in(b0, 0xF0, 0xF4)) {
    const unsigned lo = b0 == 0xF0 ? 0x90 : 0x80;
    const unsigned hi = b0 == 0xF4 ? 0x8F : 0xBF;
    return in(byte(i + 1), lo, hi) && in(byte(i + 2), 0x80, 0xBF) && in(byte(i + 3), 0x80, 0xBF)
               ? 4
               : 0;
  }
  return 0;
}

// Replaces every ill-formed byte with U+FFFD; used only to re-parse a line that failed on bad
// UTF-8, so that its custom_id and the offending field can still be found.
std::string SanitizeUtf8(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceLength(s, i);
    if (n == 0) {
      out.append(kReplacementChar.data(), kReplacementChar.size());
      ++i;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  return out;
}

// Path (e.g. "body.prompt", "body.stop[1]") of the first key or string, in document order, that
// holds U+FFFD. After SanitizeUtf8 that is where the bad bytes were, unless the line also carried
// a genuine U+FFFD earlier; then the path is a best guess, which is all a message needs.
std::optional<std::string> FindReplacementPath(const Json& v, const std::string& path) {
  if (v.is_string()) {
    if (absl::StrContains(v.get_ref<const std::string&>(), kReplacementChar)) return path;
  } else if (v.is_object()) {
    for (const auto& [key, child] : v.items()) {
      const std::string child_path = path.empty() ? key : absl::StrCat(path, ".", key);
      if (absl::StrContains(key, kReplacementChar)) return child_path;
      if (auto found = FindReplacementPath(child, child_path)) return found;
    }
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) {
      if (auto found = FindReplacementPath(v[i], absl::StrCat(path, "[", i, "]"))) return found;
    }
  }
  return std::nullopt;
}

// nlohmann's message without its "[json.exception...] parse error at line 1, column N: " prefix
// and without the "; last read: '<token>'" part, which can repeat a whole prompt.
std::string ShortParseReason(const std::string& what) {
  std::string reason = what;
  if (size_t col = reason.find("column "); col != std::string::npos) {
    if (size_t colon = reason.find(": ", col); colon != std::string::npos) {
      reason = reason.substr(colon + 2);
    }
  }
  if (size_t last = reason.find("; last read: '"); last != std::string::npos) {
    size_t expected = reason.rfind("'; expected ");
    reason = expected != std::string::npos && expected >= last
                 ? absl::StrCat(reason.substr(0, last), reason.substr(expected + 1))
                 : reason.substr(0, last);
  }
  return TruncateUtf8(std::move(reason), 160);
}

// The value when `v` is a number with an integral value that fits int64 (16.0 counts: JSON does
// not distinguish, and Python clients sometimes send floats).
std::optional<int64_t> IntegerOf(const Json& v) {
  if (v.is_number_integer() && !v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // 2^63 is exactly representable; anything at or past it does not fit.
    if (std::isfinite(d) && std::trunc(d) == d && d >= -9223372036854775808.0 &&
        d < 9223372036854775808.0) {
      return static_cast<int64_t>(d);
    }
  }
  return std::nullopt;
}

absl::Status FieldError(absl::string_view field, absl::string_view what, const Json& v) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what, ", got ", Describe(v)));
}

// An integer field in [lo, hi]; `range` words the bound for the message.
absl::StatusOr<int64_t> GetInteger(const Json& v, absl::string_view field, int64_t lo, int64_t hi,
                                   absl::string_view range) {
  if (!v.is_number() || (v.is_number_float() && std::trunc(v.get<double>()) != v.get<double>())) {
    return FieldError(field, "must be an integer", v);
  }
  // Integral but possibly past int64 (a huge unsigned or float): that is a range problem.
  std::optional<int64_t> i = IntegerOf(v);
  if (!i || *i < lo || *i > hi) return FieldError(field, range, v);
  return *i;
}

absl::StatusOr<double> GetNumber(const Json& v, absl::string_view field) {
  if (!v.is_number()) return FieldError(field, "must be a number", v);
  const double d = v.get<double>();
  // The proto carries floats; a value that overflows float would arrive as inf.
  if (!std::isfinite(static_cast<float>(d)))
    return FieldError(field, "must be a finite number within float range", v);
  return d;
}

absl::StatusOr<uint64_t> GetSeed(const Json& v) {
  constexpr absl::string_view kField = "body.seed";
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    return FieldError(kField, "must be a non-negative integer", v);
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::trunc(d) != d) return FieldError(kField, "must be an integer", v);
    if (d < 0 || d >= 18446744073709551616.0) {
      return FieldError(kField, "must be an integer in [0, 2^64)", v);
    }
    return static_cast<uint64_t>(d);
  }
  return FieldError(kField, "must be an integer", v);
}

absl::Status ParsePrompt(const Json& prompt, v1::WorkItem& item) {
  constexpr absl::string_view kField = "body.prompt";
  if (prompt.is_string()) {
    item.set_text(prompt.get<std::string>());
    return absl::OkStatus();
  }
  if (!prompt.is_array()) {
    return FieldError(kField, "must be a string or an array of token ids", prompt);
  }
  if (prompt.empty()) return absl::InvalidArgumentError("body.prompt must not be an empty array");
  if (prompt[0].is_string() || prompt[0].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        kField, " must be a single prompt (a string or an array of token ids), got ",
        Describe(prompt), "; a list of prompts is not supported, put one prompt per line"));
  }
  v1::TokenIds* ids = item.mutable_token_ids();
  ids->mutable_ids()->Reserve(static_cast<int>(prompt.size()));
  for (size_t i = 0; i < prompt.size(); ++i) {
    const Json& v = prompt[i];
    // The common case without building the field name, which only a message needs.
    if (v.is_number_unsigned() && v.get<uint64_t>() <= std::numeric_limits<int32_t>::max()) {
      ids->add_ids(static_cast<int32_t>(v.get<uint64_t>()));
      continue;
    }
    absl::StatusOr<int64_t> id =
        GetInteger(v, absl::StrCat(kField, "[", i, "]"), 0, std::numeric_limits<int32_t>::max(),
                   "must be a token id in [0, 2^31)");
    if (!id.ok()) return id.status();
    ids->add_ids(static_cast<int32_t>(*id));
  }
  return absl::OkStatus();
}

absl::Status ParseStop(const Json& stop, v1::SamplingParams& params) {
  constexpr absl::string_view kField = "body.stop";
  if (stop.is_string()) {
    if (stop.get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError("body.stop must not be an empty string");
    }
    params.add_stop(stop.get<std::string>());
    return absl::OkStatus();
  }
  if (!stop.is_array()) return FieldError(kField, "must be a string or an array of strings", stop);
  if (stop.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(absl::StrCat(kField, " must have at most ", kMaxStopStrings,
                                                   " entries, got ", stop.size()));
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    const std::string field = absl::StrCat(kField, "[", i, "]");
    if (!stop[i].is_string()) return FieldError(field, "must be a string", stop[i]);
    if (stop[i].get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, " must not be empty"));
    }
    params.add_stop(stop[i].get<std::string>());
  }
  return absl::OkStatus();
}

// Fills item.prompt and item.params from the request body. A JSON null counts as absent, since
// OpenAI clients serialize unset optional fields that way.
absl::Status ParseBody(const Json& body, v1::WorkItem& item) {
  auto field = [&](const char* name) -> const Json* {
    auto it = body.find(name);
    return it == body.end() || it->is_null() ? nullptr : &*it;
  };
  if (const Json* model = field("model"); model && !model->is_string()) {
    return FieldError("body.model", "must be a string", *model);
  }
  const Json* prompt = field("prompt");
  if (!prompt) return absl::InvalidArgumentError("body.prompt is required");
  if (absl::Status s = ParsePrompt(*prompt, item); !s.ok()) return s;

  v1::SamplingParams& params = *item.mutable_params();
  params.set_max_tokens(16);
  params.set_temperature(1.0f);
  params.set_top_p(1.0f);
  params.set_top_k(-1);

  if (const Json* v = field("max_tokens")) {
    absl::StatusOr<int64_t> max_tokens = GetInteger(
        *v, "body.max_tokens", 1, std::numeric_limits<int32_t>::max(), "must be in [1, 2^31)");
    if (!max_tokens.ok()) return max_tokens.status();
    params.set_max_tokens(static_cast<int32_t>(*max_tokens));
  }
  if (const Json* v = field("temperature")) {
    absl::StatusOr<double> t = GetNumber(*v, "body.temperature");
    if (!t.ok()) return t.status();
    if (*t < 0) return FieldError("body.temperature", "must be >= 0", *v);
    params.set_temperature(static_cast<float>(*t));
  }
  if (const Json* v = field("top_p")) {
    absl::StatusOr<double> p = GetNumber(*v, "body.top_p");
    if (!p.ok()) return p.status();
    if (!(*p > 0 && *p <= 1)) return FieldError("body.top_p", "must be in (0, 1]", *v);
    params.set_top_p(static_cast<float>(*p));
  }
  if (const Json* v = field("top_k")) {
    absl::StatusOr<int64_t> k =
        GetInteger(*v, "body.top_k", -1, std::numeric_limits<int32_t>::max(),
                   "must be -1 (disabled), 0 (disabled) or a positive integer below 2^31");
    if (!k.ok()) return k.status();
    params.set_top_k(static_cast<int32_t>(*k));
  }
  if (const Json* v = field("seed")) {
    absl::StatusOr<uint64_t> seed = GetSeed(*v);
    if (!seed.ok()) return seed.status();
    params.set_seed(*seed);
  }
  if (const Json* v = field("stop")) {
    if (absl::Status s = ParseStop(*v, params); !s.ok()) return s;
  }
  if (const Json* v = field("stop_token_ids")) {
    if (!v->is_array())
      return FieldError("body.stop_token_ids", "must be an array of token ids", *v);
    for (size_t i = 0; i < v->size(); ++i) {
      absl::StatusOr<int64_t> id =
          GetInteger((*v)[i], absl::StrCat("body.stop_token_ids[", i, "]"), 0,
                     std::numeric_limits<int32_t>::max(), "must be a token id in [0, 2^31)");
      if (!id.ok()) return id.status();
      params.add_stop_token_ids(static_cast<int32_t>(*id));
    }
  }
  if (const Json* v = field("ignore_eos")) {
    if (!v->is_boolean()) return FieldError("body.ignore_eos", "must be true or false", *v);
    params.set_ignore_eos(v->get<bool>());
  }
  if (const Json* v = field("n")) {
    if (IntegerOf(*v) != std::optional<int64_t>(1)) {
      return FieldError("body.n", "must be 1 (one completion per request line)", *v);
    }
  }
  return absl::OkStatus();
}

// Validates a parsed line; custom_id and model are taken first so that they survive any error.
absl::Status ParseRequest(const Json& line, BatchRequest& request) {
  if (!line.is_object()) return FieldError("the line", "must be a JSON object", line);
  auto custom_id = line.find("custom_id");
  if (custom_id != line.end() && custom_id->is_string()) {
    request.custom_id = custom_id->get<std::string>();
  }
  auto body = line.find("body");
  if (body != line.end() && body->is_object()) {
    auto model = body->find("model");
    if (model != body->end() && model->is_string()) request.model = model->get<std::string>();
  }

  if (custom_id == line.end() || custom_id->is_null()) {
    return absl::InvalidArgumentError("custom_id is required");
  }
  if (!custom_id->is_string()) return FieldError("custom_id", "must be a string", *custom_id);

  auto method = line.find("method");
  if (method == line.end() || method->is_null()) {
    return absl::InvalidArgumentError("method is required (\"POST\")");
  }
  if (!method->is_string() || method->get_ref<const std::string&>() != "POST") {
    const std::string shown = method->is_string()
                                  ? TruncateUtf8(method->get<std::string>(), kMaxDescribedBytes)
                                  : Describe(*method);
    return absl::InvalidArgumentError(
        absl::StrCat("method '", shown, "' is not supported; use POST"));
  }
  auto url = line.find("url");
  if (url == line.end() || url->is_null()) {
    return absl::InvalidArgumentError("url is required (\"/v1/completions\")");
  }
  if (!url->is_string() || url->get_ref<const std::string&>() != "/v1/completions") {
    const std::string shown = url->is_string()
                                  ? TruncateUtf8(url->get<std::string>(), kMaxDescribedBytes)
                                  : Describe(*url);
    return absl::InvalidArgumentError(
        absl::StrCat("url '", shown, "' is not supported; use /v1/completions"));
  }
  if (body == line.end() || body->is_null()) return absl::InvalidArgumentError("body is required");
  if (!body->is_object()) return FieldError("body", "must be a JSON object", *body);
  return ParseBody(*body, request.item);
}

// Explains a line nlohmann refused. A bad-UTF-8 line is re-parsed with the bad bytes replaced so
// that the message can name the field and the custom_id can still be recovered.
absl::Status ExplainParseFailure(std::string_view line, const nlohmann::json::exception& e,
                                 BatchRequest& request) {
  const auto* parse_error = dynamic_cast<const nlohmann::json::parse_error*>(&e);
  const std::string what = e.what();
  if (parse_error == nullptr) {
    // e.g. out_of_range.406 for a number like 1e400 that overflows a double.
    const size_t tag_end = what.find("] ");
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed JSON: ",
        TruncateUtf8(tag_end == std::string::npos ? what : what.substr(tag_end + 2), 160)));
  }
  if (line.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return absl::InvalidArgumentError("empty line (expected a JSON object)");
  }
  if (!absl::StrContains(what, "ill-formed UTF-8")) {
    return absl::InvalidArgumentError(absl::StrCat("malformed JSON: ", ShortParseReason(what),
                                                   " (byte ", parse_error->byte, ")"));
  }
  std::string where;
  Json sanitized = Json::parse(SanitizeUtf8(absl::string_view(line.data(), line.size())), nullptr,
                               /*allow_exceptions=*/false);
  if (!sanitized.is_discarded()) {
    if (std::optional<std::string> path = FindReplacementPath(sanitized, "")) {
      where = absl::StrCat(*path, " ");
    }
    if (sanitized.is_object()) {
      auto custom_id = sanitized.find("custom_id");
      // A custom_id that itself held the bad bytes would not match the caller's; leave it out.
      if (custom_id != sanitized.end() && custom_id->is_string() &&
          !absl::StrContains(custom_id->get_ref<const std::string&>(), kReplacementChar)) {
        request.custom_id = custom_id->get<std::string>();
      }
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, "not valid UTF-8 (byte ", parse_error->byte, ")"));
}

Json CustomIdJson(const BatchRequest& request) {
  return request.custom_id ? Json(*request.custom_id) : Json(nullptr);
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// Appends `s` as Dump() writes a JSON string value: quoted, escaped, ill-formed UTF-8 replaced.
void AppendJsonString(std::string& out, std::string_view s) {
  nlohmann::detail::serializer<Json> serializer(nlohmann::detail::output_adapter<char>(out), ' ',
                                                Json::error_handler_t::replace);
  serializer.dump(Json(std::string(s)), /*pretty_print=*/false, /*ensure_ascii=*/false,
                  /*indent_step=*/0);
}

}  // namespace

BatchRequest ParseBatchLine(std::string_view line, int64_t index, int64_t line_number) {
  BatchRequest request;
  request.index = index;
  request.item.set_index(index);
  absl::Status status;
  try {
    status = ParseRequest(Json::parse(line.begin(), line.end()), request);
  } catch (const nlohmann::json::exception& e) {
    status = ExplainParseFailure(line, e, request);
  }
  if (!status.ok()) {
    request.status =
        absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": ", status.message()));
  }
  return request;
}

std::string RenderSuccess(const BatchRequest& request, const v1::Completion& completion,
                          const std::string& job_id, const std::string& model, int64_t created) {
  // Written directly rather than built as an ordered_json tree and dumped: this runs once per
  // result under the coordinator's lock, and the last wave of a job's results arrives at once.
  // The bytes are the same as Dump() of the tree {"id", "custom_id", "response": {"status_code",
  // "request_id", "body": {...}}, "error": null}: strings go through nlohmann's own escaping.
  const int64_t completion_tokens = completion.output_ids_size();
  const int64_t prompt_tokens = completion.prompt_tokens();
  std::string out;
  out.reserve(completion.text().size() + 2 * job_id.size() + model.size() + 400);
  out += "{\"id\":";
  AppendJsonString(out, absl::StrCat("batch_req_", job_id, "_", request.index));
  out += ",\"custom_id\":";
  if (request.custom_id) {
    AppendJsonString(out, *request.custom_id);
  } else {
    out += "null";
  }
  out += ",\"response\":{\"status_code\":200,\"request_id\":";
  AppendJsonString(out, absl::StrCat(job_id, "-", request.index));
  out += ",\"body\":{\"id\":";
  AppendJsonString(out, absl::StrCat("cmpl-", job_id, "-", request.index));
  absl::StrAppend(&out, ",\"object\":\"text_completion\",\"created\":", created, ",\"model\":");
  AppendJsonString(out, model);
  out += ",\"choices\":[{\"index\":0,\"text\":";
  AppendJsonString(out, completion.text());
  out += ",\"logprobs\":null,\"finish_reason\":";
  AppendJsonString(out, completion.finish_reason());
  absl::StrAppend(&out, "}],\"usage\":{\"prompt_tokens\":", prompt_tokens,
                  ",\"completion_tokens\":", completion_tokens,
                  ",\"total_tokens\":", prompt_tokens + completion_tokens, "}}},\"error\":null}");
  return out;
}

std::string RenderError(const BatchRequest& request, const std::string& job_id, int status_code,
                        std::string_view message) {
  Json error = {{"message", std::string(message)},
                {"type", "invalid_request_error"},
                {"param", nullptr},
                {"code", nullptr}};
  Json out = {{"id", absl::StrCat("batch_req_", job_id, "_", request.index)},
              {"custom_id", CustomIdJson(request)},
              {"response",
               {{"status_code", status_code},
                {"request_id", absl::StrCat(job_id, "-", request.index)},
                {"body", {{"error", std::move(error)}}}}},
              {"error", nullptr}};
  return Dump(out);
}

}  // namespace dpinfer::coordinator
