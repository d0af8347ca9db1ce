// `dpinfer tokenize` / `dpinfer detokenize` (see tokenize_cmd.h): thin wrappers over
// engine::Tokenizer that add stdin/stdout handling and JSON for the ids.
#include "cli/tokenize_cmd.h"

#include <cstdint>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/engine/tokenizer/tokenizer.h"

namespace dpinfer::cli {
namespace {

using Json = nlohmann::json;

std::string ReadAll(std::istream& in) {
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

absl::StatusOr<std::string> TokenizeToJson(const TokenizeOptions& options, std::string_view text) {
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Tokenizer> tokenizer,
                   engine::Tokenizer::Load(options.model));
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenizer->Encode(text, options.add_special_tokens));
  return Json(ids).dump();
}

absl::StatusOr<std::string> DetokenizeJson(const DetokenizeOptions& options,
                                           std::string_view json_ids) {
  const Json j = Json::parse(json_ids, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) {
    return absl::InvalidArgumentError("input is not a JSON array of token ids");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Tokenizer> tokenizer,
                   engine::Tokenizer::Load(options.model));
  std::vector<int32_t> ids;
  ids.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& id = j[i];
    if (!id.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("element ", i, " of the input is not an integer token id: ", id.dump()));
    }
    const int64_t value = id.get<int64_t>();
    if (value < 0 || value >= tokenizer->vocab_size() ||
        tokenizer->IdToToken(static_cast<int32_t>(value)).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", value,
                                                     " is not in the vocabulary of ", options.model,
                                                     " (", tokenizer->vocab_size(), " tokens)"));
    }
    ids.push_back(static_cast<int32_t>(value));
  }
  return tokenizer->Decode(ids, options.skip_special_tokens);
}

int RunTokenize(const TokenizeOptions& options, std::istream& in, std::ostream& out,
                std::ostream& err) {
  absl::StatusOr<std::string> ids = TokenizeToJson(options, ReadAll(in));
  if (!ids.ok()) {
    err << "dpinfer tokenize: " << ids.status().message() << "\n";
    return 1;
  }
  out << *ids << "\n";
  return 0;
}

int RunDetokenize(const DetokenizeOptions& options, std::istream& in, std::ostream& out,
                  std::ostream& err) {
  absl::StatusOr<std::string> text = DetokenizeJson(options, ReadAll(in));
  if (!text.ok()) {
    err << "dpinfer detokenize: " << text.status().message() << "\n";
    return 1;
  }
  out << *text;
  out.flush();
  return 0;
}

}  // namespace dpinfer::cli
