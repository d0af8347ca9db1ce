// `dpinfer tokenize` and `dpinfer detokenize`: the model's tokenizer from the command line, so a
// user can see the ids a prompt becomes (and check them against HF's) or read ids back as text
// without starting a coordinator. Text and ids travel on stdin/stdout so that the two compose:
// `dpinfer tokenize --model M < a.txt | dpinfer detokenize --model M` prints a.txt unchanged.
#pragma once

#include <istream>
#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace dpinfer::cli {

struct TokenizeOptions {
  std::string model;  // a model directory holding tokenizer.json, or the tokenizer.json itself
  bool add_special_tokens = false;  // the post-processor's template, e.g. Llama's BOS
};

struct DetokenizeOptions {
  std::string model;
  bool skip_special_tokens = false;  // HF decode's default keeps them
};

// The ids of UTF-8 `text` as a JSON array ("[15496,995]"). Every byte counts: a trailing newline
// is text like any other. Invalid UTF-8 is an InvalidArgument error.
absl::StatusOr<std::string> TokenizeToJson(const TokenizeOptions& options, std::string_view text);

// The text of a JSON array of ids. An id outside the vocabulary is an error naming it, rather
// than being dropped as HF's decode does, since on the command line it is most likely a typo or
// the wrong model.
absl::StatusOr<std::string> DetokenizeJson(const DetokenizeOptions& options,
                                           std::string_view json_ids);

// The subcommands: read all of `in`, write the result to `out` (the ids followed by a newline;
// the text exactly, with nothing added), errors to `err`. Return the exit code, 0 or 1.
int RunTokenize(const TokenizeOptions& options, std::istream& in, std::ostream& out,
                std::ostream& err);
int RunDetokenize(const DetokenizeOptions& options, std::istream& in, std::ostream& out,
                  std::ostream& err);

}  // namespace dpinfer::cli
