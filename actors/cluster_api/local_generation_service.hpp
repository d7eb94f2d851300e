// GenerationService on one process with every role co-located: the model (config, weights,
// tokenizer), one Engine and a DecodeBatcher, driven by a dedicated worker thread. Used by
// `switchyard serve-api` and the cluster API tests; the router actor replaces it in a cluster.
// Threading: submit/cancel/status from any thread post to a mutex-guarded inbox (status reads a
// snapshot the worker refreshes after every step); the worker alone touches the engine, the
// batcher and the sinks. Owns everything it loads; borrows the kernel backend (process-lifetime).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "actors/cluster_api/generation_service.hpp"
#include "gpu/backend.hpp"
#include "model/linear.hpp"

namespace sy::model {
class DecodeBatcher;
struct RequestEvent;
}  // namespace sy::model

namespace sy::actors::cluster_api {

struct LocalServiceOptions {
  std::filesystem::path model_dir;      // a Hugging Face DeepSeek-V3 folder (model/ loads it)
  const gpu::Backend* backend = nullptr;  // REQUIRES: non-null, a host-memory backend (ref, cpu)
  model::Numerics numerics = model::Numerics::fp8act;
  std::int64_t kv_pages = 256;          // KV pool, 64-token pages per layer
  std::int64_t max_batch = 8;           // requests one step runs at most (DecodeBatcher max_running)
  // Admitted requests waiting for a place in the batch (pages held). Beyond max_batch +
  // max_waiting, submissions are refused as overloaded (queue_full).
  std::int64_t max_waiting = 32;
  // Submissions not yet looked at by the worker (between two steps). Beyond it, submit refuses
  // at once (overloaded), so memory stays bounded however fast clients call.
  std::int64_t max_inbox = 1024;
  bool mtp = false;                     // MTP drafts for greedy requests (needs an MTP model)
  std::int64_t max_seq_len = 0;         // context per request; 0 = the model's
  std::int64_t max_chunk_tokens = 512;  // prompt tokens per step, all requests together
  std::string node_name = "local";      // what status() reports as the one node
};

class LocalGenerationService final : public GenerationService {
 public:
  // Loads the model and starts the worker. Throws (naming the problem) on a bad folder or
  // options; no thread is left running then.
  explicit LocalGenerationService(LocalServiceOptions options);
  // stop(std::chrono::milliseconds(0)), then joins the worker.
  ~LocalGenerationService() override;
  LocalGenerationService(const LocalGenerationService&) = delete;
  LocalGenerationService& operator=(const LocalGenerationService&) = delete;

  RequestId submit(GenerateInput input, std::shared_ptr<GenerationSink> sink) override;
  void cancel(RequestId id) override;
  StatusSnapshot status() override;

  // Shutdown: new submissions are refused (unavailable) from now on; requests in flight may
  // finish for up to `grace`, then the rest are cancelled (their sinks get Finish::cancelled).
  // Returns once every request has ended and the worker has exited. Idempotent.
  void stop(std::chrono::milliseconds grace);

 private:
  struct Model;
  struct Live;
  struct Submission {
    RequestId id = 0;
    GenerateInput input;
    std::shared_ptr<GenerationSink> sink;
    std::chrono::steady_clock::time_point received;
  };

  void run();                     // the worker thread's loop
  void start(Submission s);       // tokenize, check, admit (or refuse)
  void deliver(const model::RequestEvent& event);  // to the request's sink
  void refresh_snapshot();        // under mutex_

  LocalServiceOptions options_;
  std::unique_ptr<Model> model_;  // config, tokenizer, checkpoint, weights, engine
  std::unique_ptr<model::DecodeBatcher> batcher_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  // Worker-only state: the requests the batcher holds, and the counters status() reports.
  std::unordered_map<RequestId, std::unique_ptr<Live>> live_;
  std::int64_t completed_ = 0, cancelled_ = 0, failed_ = 0, refused_ = 0;

  // Shared with callers; guarded by mutex_.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Submission> inbox_;      // GUARDED_BY(mutex_)
  std::vector<RequestId> cancels_;     // GUARDED_BY(mutex_)
  RequestId next_id_ = 1;              // GUARDED_BY(mutex_)
  bool stopping_ = false;              // GUARDED_BY(mutex_): refuse new submissions
  std::chrono::steady_clock::time_point deadline_{};  // GUARDED_BY(mutex_): cancel all after it
  bool deadline_set_ = false;          // GUARDED_BY(mutex_)
  StatusSnapshot snapshot_;            // GUARDED_BY(mutex_)
  std::int64_t refused_now_ = 0;       // GUARDED_BY(mutex_): refusals by submit() itself

  std::thread worker_;
};

}  // namespace sy::actors::cluster_api
