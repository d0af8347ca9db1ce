// Per-request token sampling: greedy at temperature 0, otherwise temperature -> top-k -> top-p
// (nucleus) -> one draw. The draw's uniform number is a pure function of (seed, number of tokens
// generated so far), a counter-based RNG, so a seeded request yields the same tokens whatever it
// is batched with, however often it is preempted, and on whichever DP replica runs it.
#pragma once

#include <cstdint>

#include "worker/engine/engine.h"

namespace dpinfer::engine {

// splitmix64's finalizer: a bijective 64-bit mix.
uint64_t Mix64(uint64_t x);
// Uniform in [0, 1) from (seed, counter); 53 random bits.
double CounterUniform(uint64_t seed, uint64_t counter);

// Index of the largest logit (the lowest index among ties).
int32_t Argmax(const float* logits, int64_t vocab);

// Samples the next token from `logits` ([vocab]) for a request with `params`; `step` is the number
// of tokens the request has generated so far, `seed` its (given or drawn) seed.
int32_t SampleToken(const float* logits, int64_t vocab, const SamplingParams& params, uint64_t seed,
                    uint64_t step);

}  // namespace dpinfer::engine
