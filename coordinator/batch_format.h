// The job file format: OpenAI Batch JSONL (the format vLLM's run-batch reads). Input lines are
// parsed and validated into WorkItems here; results are rendered back as OpenAI batch output
// lines. A bad line becomes an error result for that line alone (status_code 400).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "dpinfer/v1/worker.pb.h"

namespace dpinfer::coordinator {

struct BatchRequest {
  int64_t index = 0;                     // 0-based position among the job's requests
  std::optional<std::string> custom_id;  // absent when the line was too malformed to have one
  std::string model;                     // body.model ("" when absent)
  // OK: `item` is ready to dispatch. Otherwise the message names the problem, e.g.
  // "line 3: body.top_p must be in (0, 1], got 1.5"; the line gets a 400 result.
  absl::Status status;
  v1::WorkItem item;  // index, prompt (text or token ids) and sampling parameters
};

// Parses one input line (`line_number` is 1-based, used in messages). Never fails as a whole:
// problems land in BatchRequest::status. Checks: valid UTF-8 and JSON object; custom_id a
// string; method "POST"; url "/v1/completions"; body an object; prompt a string or a non-empty
// array of non-negative integer token ids (a list of prompts is refused: one prompt per line);
// max_tokens >= 1 (default 16); temperature >= 0 (default 1); 0 < top_p <= 1; top_k -1, 0 or
// >= 1; seed an integer; stop a string or array of at most 16 non-empty strings; ignore_eos bool;
// n (if given) == 1; unknown body keys are ignored, as OpenAI-compatible servers do.
BatchRequest ParseBatchLine(std::string_view line, int64_t index, int64_t line_number);

// A success line: {"id", "custom_id", "response": {"status_code": 200, "request_id", "body":
// <OpenAI completion object>}, "error": null}.
std::string RenderSuccess(const BatchRequest& request, const v1::Completion& completion,
                          const std::string& job_id, const std::string& model, int64_t created);

// An error line: "response": {"status_code": <code>, "body": {"error": {"message", "type":
// "invalid_request_error" ...}}}.
std::string RenderError(const BatchRequest& request, const std::string& job_id, int status_code,
                        std::string_view message);

}  // namespace dpinfer::coordinator
