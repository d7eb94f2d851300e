// Turns a client's prompt (text, chat text or token ids) into the token ids the model runs, the
// same way for every GenerationService (the one-process service and the cluster's router), so a
// prompt gives the same ids whichever serves it.
#pragma once

#include <cstdint>
#include <vector>

#include "actors/cluster_api/generation_service.hpp"
#include "model/tokenizer.hpp"

namespace sy::actors::cluster_api {

// Text: encoded with BOS when the model's template adds one; chat: formatted as one user turn of
// the chat format (which starts with BOS). Ids are taken as given (moved out of `input`).
// Throws std::invalid_argument naming the problem: an empty prompt, chat with ids.
std::vector<std::int32_t> prompt_token_ids(const model::Tokenizer& tokenizer, GenerateInput& input);

}  // namespace sy::actors::cluster_api
