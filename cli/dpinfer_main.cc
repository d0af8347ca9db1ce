// dpinfer: the command-line client. `run` is the one-command offline job; submit / status /
// results / cancel / workers talk to a running coordinator; make-model writes the small
// random-weight model the quickstart uses; tokenize / detokenize run the model's tokenizer.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "cli/check_logits_flags.h"
#include "cli/client.h"
#include "cli/make_model.h"
#include "cli/run.h"
#include "cli/tokenize_cmd.h"
#include "common/subprocess.h"

namespace {

std::string DefaultCoordinator() {
  const char* v = std::getenv("DPINFER_COORDINATOR");
  return v != nullptr && *v != '\0' ? v : "127.0.0.1:8470";
}

// `dpinfer submit --timing`: how long each phase of the client's service path took, on stderr,
// with the unix times of main() and of the job's start and end on the coordinator (same host:
// same clock), so that a caller who timed the whole command can tell process start-up, the time
// before the first dispatch and the time after the last result apart (bench/gpu/service_bench.sh).
class PhaseTimer {
 public:
  using Clock = std::chrono::steady_clock;
  PhaseTimer(bool enabled, Clock::time_point start)
      : enabled_(enabled), start_(start), last_(start) {}
  void Mark(const char* phase) {
    if (!enabled_) return;
    const auto now = Clock::now();
    absl::StrAppendFormat(&text_, "%s%s %.1f ms", text_.empty() ? "" : " | ", phase,
                          std::chrono::duration<double, std::milli>(now - last_).count());
    last_ = now;
  }
  void Print(const dpinfer::v1::Job& job) const {
    if (!enabled_) return;
    const double now_unix =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    const double main_unix =
        now_unix - std::chrono::duration<double>(Clock::now() - start_).count();
    std::cerr << absl::StrFormat(
        "dpinfer: timing: %s; unix times: main %.6f, job started %.6f, finished %.6f\n", text_,
        main_unix, job.started_at(), job.finished_at());
  }

 private:
  const bool enabled_;
  const Clock::time_point start_;
  Clock::time_point last_;
  std::string text_;
};

int Fail(const absl::Status& s) {
  std::cerr << "dpinfer: " << s.message() << "\n";
  return 1;
}

void PrintJob(const dpinfer::v1::Job& job) {
  std::cout << absl::StrFormat("%s\t%s\t%d/%d done\t%d failed\t%d generated tokens", job.id(),
                               dpinfer::cli::JobStateName(job.state()), job.completed(),
                               job.total(), job.failed(), job.generated_tokens());
  if (job.redispatched() > 0) std::cout << "\t" << job.redispatched() << " re-dispatched";
  if (!job.error().empty()) std::cout << "\t" << job.error();
  std::cout << "\n";
}

// check-logits runs in its sibling binary (see check_logits_main.cc), with the arguments that
// follow the subcommand; they have already been checked here.
int ExecCheckLogits(int argc, char** argv) {
  const std::string binary = dpinfer::SelfExeDir() + "/" + dpinfer::cli::kCheckLogitsBinary;
  std::vector<char*> args = {const_cast<char*>(binary.c_str())};
  int i = 1;
  while (i < argc && std::strcmp(argv[i], "check-logits") != 0) ++i;
  for (++i; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  std::cout.flush();
  execv(binary.c_str(), args.data());
  std::cerr << "dpinfer: cannot run " << binary
            << " (check-logits lives there): " << std::strerror(errno) << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const auto main_entered = std::chrono::steady_clock::now();
  CLI::App app{"dpinfer: data-parallel batch LLM inference"};
  app.require_subcommand(1);
  std::string coordinator = DefaultCoordinator();
  auto add_coordinator = [&](CLI::App* sub) {
    sub->add_option("--coordinator", coordinator,
                    "coordinator HOST:PORT (env DPINFER_COORDINATOR, default 127.0.0.1:8470)");
  };

  dpinfer::cli::RunOptions run;
  auto* run_cmd = app.add_subcommand("run", "run a batch job on N local workers and stop them");
  run_cmd->add_option("--model", run.model_dir, "HF model directory")->required();
  run_cmd->add_option("--dp", run.dp_size, "data-parallel workers")->check(CLI::PositiveNumber);
  run_cmd->add_option("--input", run.input_path, "OpenAI batch JSONL input")->required();
  run_cmd->add_option("--output", run.output_path, "result JSONL output")->required();
  run_cmd->add_option("--timeout", run.timeout_s,
                      "seconds; processes still running then are killed and dpinfer exits 124");
  run_cmd->add_option("--worker-arg", run.worker_args,
                      "flag passed to every worker, e.g. --worker-arg=--threads=1 (repeatable)");
  run_cmd->add_option("--coordinator-arg", run.coordinator_args,
                      "flag passed to the coordinator, e.g. --coordinator-arg=--worker-timeout=10");
  run_cmd->add_option("--log-dir", run.log_dir, "where process logs go (default: a temp dir)");
  run_cmd->add_flag("--quiet", run.quiet, "no progress lines");

  std::string input, output, job_id, name;
  bool no_wait = false;
  double timeout_s = 7 * 24 * 3600.0;
  auto* submit = app.add_subcommand("submit", "submit a job to a running coordinator");
  add_coordinator(submit);
  submit->add_option("--input", input, "OpenAI batch JSONL input")->required();
  submit->add_option("--output", output, "result JSONL output (when waiting)");
  submit->add_option("--name", name, "job name");
  submit->add_flag("--no-wait", no_wait, "print the job id and return");
  submit->add_option("--timeout", timeout_s, "seconds to wait for the job");
  bool timing = false;
  submit->add_flag("--timing", timing, "print the time of each client phase on stderr");

  auto* status = app.add_subcommand("status", "show a job (or every job without JOB)");
  add_coordinator(status);
  status->add_option("job", job_id, "job id");

  auto* results = app.add_subcommand("results", "write a finished job's results");
  add_coordinator(results);
  results->add_option("job", job_id, "job id")->required();
  results->add_option("-o,--output", output, "result JSONL output")->required();

  auto* cancel = app.add_subcommand("cancel", "cancel a job");
  add_coordinator(cancel);
  cancel->add_option("job", job_id, "job id")->required();

  auto* workers = app.add_subcommand("workers", "list the registered workers");
  add_coordinator(workers);

  dpinfer::cli::MakeModelOptions mm;
  auto* make_model = app.add_subcommand(
      "make-model", "write a small random-weight Llama model (HF format) with a tokenizer");
  make_model->add_option("--out", mm.out_dir, "output directory")->required();
  make_model->add_option("--seed", mm.seed, "weight seed");
  make_model->add_option("--layers", mm.num_layers, "decoder layers");
  make_model->add_option("--hidden-size", mm.hidden_size, "hidden size");
  make_model->add_option("--intermediate-size", mm.intermediate_size, "MLP size");
  make_model->add_option("--heads", mm.num_heads, "attention heads");
  make_model->add_option("--kv-heads", mm.num_kv_heads, "key/value heads");
  make_model->add_option("--dtype", mm.dtype, "float32, bfloat16 or float16");
  make_model->add_option("--shards", mm.num_shards, "safetensors shards");

  dpinfer::cli::CheckLogitsOptions cl;
  auto* check_logits = app.add_subcommand(
      "check-logits", "compare the model's logits with a reference (e.g. HF transformers')");
  dpinfer::cli::AddCheckLogitsFlags(check_logits, &cl);

  dpinfer::cli::TokenizeOptions tok;
  auto* tokenize = app.add_subcommand(
      "tokenize", "print the ids of the UTF-8 text on stdin as a JSON array (every byte counts)");
  tokenize->add_option("--model", tok.model, "model directory or tokenizer.json")->required();
  tokenize->add_flag("--add-special-tokens", tok.add_special_tokens,
                     "apply the post-processor template (e.g. BOS)");
  dpinfer::cli::DetokenizeOptions detok;
  auto* detokenize = app.add_subcommand(
      "detokenize", "print the text of the JSON array of ids on stdin (nothing appended)");
  detokenize->add_option("--model", detok.model, "model directory or tokenizer.json")->required();
  detokenize->add_flag("--skip-special-tokens", detok.skip_special_tokens,
                       "leave special tokens out of the text");

  CLI11_PARSE(app, argc, argv);

  if (tokenize->parsed()) return dpinfer::cli::RunTokenize(tok, std::cin, std::cout, std::cerr);
  if (detokenize->parsed()) {
    return dpinfer::cli::RunDetokenize(detok, std::cin, std::cout, std::cerr);
  }

  if (run_cmd->parsed()) {
    if (run.output_path.empty()) return Fail(absl::InvalidArgumentError("--output is required"));
    return dpinfer::cli::RunJob(run);
  }
  if (check_logits->parsed()) return ExecCheckLogits(argc, argv);
  if (make_model->parsed()) {
    absl::Status s = dpinfer::cli::MakeTinyModel(mm);
    if (!s.ok()) return Fail(s);
    std::cout << "wrote " << mm.out_dir << "\n";
    return 0;
  }
  dpinfer::cli::BatchClient client(coordinator);
  if (submit->parsed()) {
    if (!no_wait && output.empty()) {
      return Fail(absl::InvalidArgumentError("--output is required unless --no-wait"));
    }
    PhaseTimer timer(timing, main_entered);
    timer.Mark("setup");
    auto lines = dpinfer::cli::ReadLines(input);
    if (!lines.ok()) return Fail(lines.status());
    timer.Mark("read");
    auto job = client.Submit(*lines, name.empty() ? input : name);
    if (!job.ok()) return Fail(job.status());
    timer.Mark("submit");
    if (no_wait) {
      std::cout << job->id() << "\n";
      return 0;
    }
    auto done = client.Wait(job->id(), timeout_s, nullptr);
    if (!done.ok()) return Fail(done.status());
    timer.Mark("wait");
    auto lines_out = client.Results(job->id());
    if (!lines_out.ok()) return Fail(lines_out.status());
    timer.Mark("results");
    absl::Status s = dpinfer::cli::WriteLines(output, *lines_out);
    if (!s.ok()) return Fail(s);
    timer.Mark("write");
    timer.Print(*done);
    std::cout << dpinfer::cli::SummaryLine(*done) << "\n";
    return done->state() == dpinfer::v1::JOB_STATE_COMPLETED ? 0 : 1;
  }
  if (status->parsed()) {
    if (job_id.empty()) {
      auto jobs = client.List();
      if (!jobs.ok()) return Fail(jobs.status());
      for (const auto& j : *jobs) PrintJob(j);
      return 0;
    }
    auto job = client.Get(job_id);
    if (!job.ok()) return Fail(job.status());
    PrintJob(*job);
    return 0;
  }
  if (results->parsed()) {
    auto lines_out = client.Results(job_id);
    if (!lines_out.ok()) return Fail(lines_out.status());
    absl::Status s = dpinfer::cli::WriteLines(output, *lines_out);
    if (!s.ok()) return Fail(s);
    std::cout << "wrote " << lines_out->size() << " results to " << output << "\n";
    return 0;
  }
  if (cancel->parsed()) {
    auto job = client.Cancel(job_id);
    if (!job.ok()) return Fail(job.status());
    PrintJob(*job);
    return 0;
  }
  if (workers->parsed()) {
    auto list = client.Workers();
    if (!list.ok()) return Fail(list.status());
    for (const auto& w : *list) {
      std::cout << absl::StrFormat("rank %d\t%s\t%s\t%s pid %d\t%d generated tokens\t%d assigned%s\n",
                                   w.dp_rank(), w.state(), w.address(), w.hostname(), w.pid(),
                                   w.generated_tokens(), w.assigned(),
                                   w.dead_reason().empty() ? "" : "\t" + w.dead_reason());
    }
    return 0;
  }
  return 0;
}
