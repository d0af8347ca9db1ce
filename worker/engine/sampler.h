// Per-request token sampling: greedy at temperature 0; plain temperature sampling (no top-k, no
// top-p) by the Gumbel-max trick, which needs no sort: argmax over i of logits[i] / temperature +
// Gumbel noise drawn from (seed, step, i), exactly the softmax distribution in one pass; otherwise
// temperature -> top-k -> top-p (nucleus) over the sorted logits -> one draw. The draw's uniform
// number is a pure function of (seed, number of tokens generated so far), a counter-based RNG, so a
// seeded request yields the same tokens whatever it is batched with, however often it is preempted,
// and on whichever DP replica runs it.
#pragma once

#include <cstdint>

#include "worker/engine/engine.h"

namespace dpinfer::engine {

// splitmix64's finalizer: a bijective 64-bit mix.
uint64_t Mix64(uint64_t x);
// Uniform in [0, 1) from (seed, counter); 53 random bits.
double CounterUniform(uint64_t seed, uint64_t counter);

// The Gumbel-max rule's noise for vocabulary entry i: -log(-log(u)) in fp32, u uniform in (0, 1)
// (24 bits) from
// splitmix64 at state `row_key` + i * golden ratio, row_key = the bits CounterUniform(seed, step)
// draws from. The GPU sampler computes the same values.
uint64_t GumbelRowKey(uint64_t seed, uint64_t step);
float GumbelNoise(uint64_t row_key, int64_t i);
// True when SampleToken draws by the Gumbel-max rule for these parameters.
bool UsesGumbelSampling(float temperature, int32_t top_k, float top_p, int64_t vocab);

// Index of the largest logit (the lowest index among ties).
int32_t Argmax(const float* logits, int64_t vocab);

// Samples the next token from `logits` ([vocab]) for a request with `params`; `step` is the number
// of tokens the request has generated so far, `seed` its (given or drawn) seed.
int32_t SampleToken(const float* logits, int64_t vocab, const SamplingParams& params, uint64_t seed,
                    uint64_t step);

}  // namespace dpinfer::engine
