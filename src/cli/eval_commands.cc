// `edgelm perplexity`: llama.cpp-style perplexity of a model on a text file, and the KL
// divergence / top-1 agreement of a model against a base model (docs/EVALUATION.md).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "evaluation/log_probs_file.h"
#include "evaluation/perplexity.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace edgelm::cli {
namespace {

namespace ev = edgelm::evaluation;

struct PerplexityFlags {
  ModelOptions model;
  std::string text_path;
  int context = 0;  // 0: min(512, the model's context)
  int chunks = 0;
  std::string base_model;   // --kl-divergence
  std::string save_logits;  // --save-logits
  std::string kl_base;      // --kl-base
  int top_k = 64;
  std::string json_path;
  std::string kv_type = "f16";
};

// Progress bar over chunks with the running PPL (and KLD) after it.
ev::ProgressCallback progress_printer(ProgressBar& bar) {
  return [&bar](const ev::EvalProgress& p) {
    char note[96];
    if (p.mean_kld >= 0) {
      std::snprintf(note, sizeof(note), "PPL %.4f KLD %.6f", p.perplexity, p.mean_kld);
    } else {
      std::snprintf(note, sizeof(note), "PPL %.4f", p.perplexity);
    }
    bar.update(p.chunks_done, note);
  };
}

std::string describe(const Model& m) {
  const ModelInfo& i = m.info();
  std::string dtypes;
  for (const std::string& d : i.dtypes) dtypes += (dtypes.empty() ? "" : "+") + d;
  return str_cat(i.path, " (", i.format, ", ", dtypes.empty() ? "?" : dtypes, ")");
}

void print_plan(const ev::ChunkPlan& plan, const std::string& source) {
  std::printf("text:             %s: %lld tokens\n", source.c_str(),
              static_cast<long long>(plan.text_tokens));
  std::printf(
      "chunks:           %d of %d tokens (%s); scoring positions %d..%d of each: %lld "
      "tokens\n",
      plan.n_chunks, plan.context, plan.bos >= 0 ? "first token replaced by BOS" : "no BOS",
      plan.first_scored, plan.context - 2, static_cast<long long>(plan.scored_tokens()));
}

nlohmann::json plan_json(const ev::ChunkPlan& plan) {
  return {{"text_tokens", plan.text_tokens},
          {"context", plan.context},
          {"chunks", plan.n_chunks},
          {"first_scored_position", plan.first_scored},
          {"scored_tokens", plan.scored_tokens()},
          {"bos_per_chunk", plan.bos >= 0}};
}

nlohmann::json ppl_json(const ev::Perplexity& p) {
  return {{"perplexity", p.value},
          {"perplexity_uncertainty", p.uncertainty},
          {"mean_nll", p.mean_nll},
          {"mean_nll_uncertainty", p.mean_nll_uncertainty},
          {"tokens", p.tokens}};
}

void write_json(const std::string& path, const nlohmann::json& j) {
  if (path.empty()) return;
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) fail("cannot write JSON to '", path, "'");
}

int report_perplexity(const Model& model, const ev::PerplexityResult& r, const PerplexityFlags& f,
                      const std::string& source) {
  std::printf("model:            %s\n", describe(model).c_str());
  print_plan(r.plan, source);
  std::printf("perplexity:       PPL = %.4f +/- %.5f\n", r.ppl.value, r.ppl.uncertainty);
  std::printf("mean NLL:         %.6f +/- %.6f nats/token\n", r.ppl.mean_nll,
              r.ppl.mean_nll_uncertainty);
  std::printf("time:             %.2f s (%.0f tokens/s evaluated)\n", r.seconds,
              r.seconds > 0 ? r.plan.n_chunks * (r.plan.context - 1.0) / r.seconds : 0.0);
  if (!f.save_logits.empty()) {
    std::printf("saved:            top-%d log-probs of every scored token to %s\n",
                std::min(f.top_k, model.vocab_size()), f.save_logits.c_str());
  }
  write_json(f.json_path, {{"model", model.info().path},
                           {"text", source},
                           {"plan", plan_json(r.plan)},
                           {"result", ppl_json(r.ppl)},
                           {"running_perplexity", r.running_perplexity},
                           {"seconds", r.seconds}});
  return 0;
}

// base: the base model's path (or the saved log-probs file); base_description: for humans.
int report_comparison(const Model& model, const std::string& base,
                      const std::string& base_description, const ev::ComparisonResult& r,
                      const PerplexityFlags& f, const std::string& source) {
  const ev::ComparisonStats& s = r.stats;
  std::printf("model:            %s\n", describe(model).c_str());
  std::printf("base:             %s%s\n", base_description.c_str(),
              r.base_top_k > 0 ? str_cat(" (saved top-", r.base_top_k, " log-probs)").c_str() : "");
  print_plan(r.plan, source);
  std::printf("PPL(base):        %.4f +/- %.5f\n", s.base.value, s.base.uncertainty);
  std::printf("PPL(model):       %.4f +/- %.5f\n", s.model.value, s.model.uncertainty);
  std::printf("delta PPL:        %+.5f +/- %.5f (model - base)\n", s.delta_ppl,
              s.delta_ppl_uncertainty);
  std::printf("PPL ratio:        %.6f +/- %.6f (model / base)\n", s.ppl_ratio,
              s.ppl_ratio_uncertainty);
  std::printf("NLL correlation:  %.4f\n", s.nll_correlation);
  std::printf("mean KLD:         %.6g +/- %.3g nats%s\n", s.mean_kld, s.mean_kld_uncertainty,
              r.base_top_k > 0 ? " (top-k lower bound)" : "");
  std::printf("KLD percentiles:  max %.5g, 99.9%% %.5g, 99%% %.5g, 90%% %.5g, median %.5g\n",
              s.kld_max, s.kld_p999, s.kld_p99, s.kld_p90, s.kld_median);
  std::printf("top-1 agreement:  %.3f +/- %.3f %%\n", 100 * s.top1_agreement,
              100 * s.top1_agreement_uncertainty);
  std::printf("delta p:          mean %+.4f %%, RMS %.4f %% (p of the actual next token)\n",
              100 * s.mean_delta_p, 100 * s.rms_delta_p);
  std::printf("time:             %.2f s\n", r.seconds);
  write_json(f.json_path, {{"model", model.info().path},
                           {"base", base},
                           {"base_top_k", r.base_top_k},
                           {"text", source},
                           {"plan", plan_json(r.plan)},
                           {"base_result", ppl_json(s.base)},
                           {"result", ppl_json(s.model)},
                           {"delta_ppl", s.delta_ppl},
                           {"delta_ppl_uncertainty", s.delta_ppl_uncertainty},
                           {"ppl_ratio", s.ppl_ratio},
                           {"ppl_ratio_uncertainty", s.ppl_ratio_uncertainty},
                           {"nll_correlation", s.nll_correlation},
                           {"mean_kld", s.mean_kld},
                           {"mean_kld_uncertainty", s.mean_kld_uncertainty},
                           {"kld_max", s.kld_max},
                           {"kld_p999", s.kld_p999},
                           {"kld_p99", s.kld_p99},
                           {"kld_p90", s.kld_p90},
                           {"kld_median", s.kld_median},
                           {"top1_agreement", s.top1_agreement},
                           {"top1_agreement_uncertainty", s.top1_agreement_uncertainty},
                           {"mean_delta_p", s.mean_delta_p},
                           {"rms_delta_p", s.rms_delta_p},
                           {"running_perplexity", r.running_perplexity},
                           {"seconds", r.seconds}});
  return 0;
}

int perplexity_command(const PerplexityFlags& f) {
  std::shared_ptr<const Model> model = load_model_from_options(f.model);
  ev::PerplexityOptions options;
  options.context = f.context > 0 ? f.context : std::min(512, model->context_length());
  options.max_chunks = f.chunks;
  options.kv_type = f.kv_type;

  if (!f.kl_base.empty()) {  // tokens, context and BOS come from the file
    if (f.context > 0) fail("--ctx cannot be used with --kl-base: the file fixes the context");
    if (f.kv_type != "f16") fail("--kv-type cannot be used with --kl-base (use --kl-divergence)");
    const ev::LogProbsReader saved(f.kl_base);  // reads the header: chunk count, tokens
    if (!f.text_path.empty()) {
      const std::vector<int32_t> tokens = ev::tokenize_text(*model, read_file(f.text_path));
      const std::vector<int32_t>& used = saved.tokens();
      if (tokens.size() < used.size() || !std::equal(used.begin(), used.end(), tokens.begin())) {
        fail("--kl-base: '", f.kl_base, "' was not made from '", f.text_path,
             "' with this model's tokenizer (the tokens differ)");
      }
    }
    const int n_chunks =
        f.chunks > 0 ? std::min(f.chunks, saved.plan().n_chunks) : saved.plan().n_chunks;
    ProgressBar bar("kl-divergence", n_chunks);
    const ev::ComparisonResult r =
        ev::compare_with_saved(model, f.kl_base, f.chunks, progress_printer(bar));
    bar.finish();
    return report_comparison(*model, f.kl_base, f.kl_base, r, f, f.kl_base);
  }
  if (f.text_path.empty()) fail("perplexity: -f/--file TEXT is required");
  const std::string text = read_file(f.text_path);

  if (!f.base_model.empty()) {
    ModelOptions base_options = f.model;
    base_options.path = f.base_model;
    std::shared_ptr<const Model> base = load_model_from_options(base_options);
    if (f.context == 0) options.context = std::min(options.context, base->context_length());
    const std::vector<int32_t> tokens = ev::tokenize_shared_text(*base, *model, text);
    const ev::ChunkPlan plan =
        ev::plan_chunks(static_cast<int64_t>(tokens.size()),
                        std::min(base->context_length(), model->context_length()), -1, options);
    ProgressBar bar("kl-divergence", plan.n_chunks);
    const ev::ComparisonResult r =
        ev::compare_models(base, model, tokens, options, progress_printer(bar));
    bar.finish();
    return report_comparison(*model, base->info().path, describe(*base), r, f, f.text_path);
  }

  if (!f.save_logits.empty() && f.kv_type != "f16") {
    fail("--kv-type cannot be used with --save-logits (the saved base uses f16)");
  }
  const std::vector<int32_t> tokens = ev::tokenize_text(*model, text);
  const ev::ChunkPlan plan =
      ev::plan_chunks(static_cast<int64_t>(tokens.size()), model->context_length(), -1, options);
  ProgressBar bar("perplexity", plan.n_chunks);
  const ev::PerplexityResult r =
      f.save_logits.empty() ? ev::evaluate_perplexity(model, tokens, options, progress_printer(bar))
                            : ev::save_base_log_probs(model, tokens, options, f.top_k,
                                                      f.save_logits, progress_printer(bar));
  bar.finish();
  return report_perplexity(*model, r, f, f.text_path);
}

}  // namespace

void register_eval_commands(CLI::App& app, std::vector<Command>& out) {
  auto flags = std::make_shared<PerplexityFlags>();
  CLI::App* cmd = app.add_subcommand(
      "perplexity", "perplexity on a text file (llama.cpp method), or KL divergence vs a base");
  add_model_options(cmd, flags->model);
  cmd->add_option("-f,--file", flags->text_path, "text file (e.g. wiki.test.txt)");
  cmd->add_option("-c,--ctx", flags->context, "tokens per chunk (default: 512 or the model's)")
      ->check(CLI::Range(4, 1 << 24));
  cmd->add_option("--chunks", flags->chunks, "evaluate at most this many chunks (0: all)")
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--kv-type", flags->kv_type,
                  "KV cache of -m: f16, f32 or q8_0 (the --kl-divergence base keeps f16)")
      ->check(CLI::IsMember({"f16", "f32", "q8_0"}))
      ->capture_default_str();
  CLI::Option* kl = cmd->add_option("--kl-divergence", flags->base_model,
                                    "base model (F32) to compare -m with: KLD, top-1, delta PPL");
  CLI::Option* save = cmd->add_option(
      "--save-logits", flags->save_logits,
      "write the top-k log-probs of every scored token of -m (the base) to this file");
  CLI::Option* base_file = cmd->add_option("--kl-base", flags->kl_base,
                                           "compare -m with log-probs saved by --save-logits");
  cmd->add_option("--kl-top-k", flags->top_k, "log-probs kept per token by --save-logits")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--json", flags->json_path, "also write the results as JSON to this file");
  kl->excludes(save)->excludes(base_file);
  save->excludes(base_file);
  out.push_back({cmd, [flags] { return perplexity_command(*flags); }});
}

}  // namespace edgelm::cli
