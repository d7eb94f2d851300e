// Expert dispatch/combine benchmark: the round trip of one MoE layer's expert traffic between a
// worker and one expert host, over the real wire path, between two processes on this host (the
// bench spawns itself as the expert host with --peer), on UCX shared memory (TLS "sm,tcp", error
// mode NONE) and tcp (TLS "tcp", mode PEER), as bench/transport_bench.cpp does.
//
// Worker (this process, bench thread): builds an ExpertDispatch of tokens x top-k rows (V3 width:
// hidden 7168, FP8 e4m3 activations + fp32 1x128 scales, rows grouped by slot as
// actors/dispatch/remote_experts.cpp builds them: one memcpy per row from the quantized token),
// schemas::encode()s it and sends the frame as AM expert_dispatch (carriage `payload`: the frame
// is the AM payload). Expert host (the peer, on its progress thread): frame_of_am + schemas::decode
// (checked and validated), builds the ExpertCombine with BF16 outputs for every row (no expert
// math: a fixed pattern is copied in; this measures communication), encodes, sends it back. Worker
// (progress thread): decodes the combine; the bench thread wakes with it. One round trip is timed
// from the start of building the dispatch to the decoded combine in the bench thread's hands.
//
// Also measured, to place the cost: the same bytes as raw AMs (no Cap'n Proto, no copies: the
// transport alone), and the codec alone in one process (build+encode, decode, both ways).
// Baselines come from ucx_perftest (ucp_am_bw and ucp_am_lat at the frame sizes, ucp_am_lat at
// 1 KiB), run by bench/dispatch_bench.sh in the same run and passed in with --baselines FILE.
#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/message.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/lcg.hpp"
#include "schemas/wire.hpp"
#include "transport/ucx/ucx_transport.hpp"

extern char** environ;

namespace {

namespace tr = sy::transport;
namespace sc = sy::schemas;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto dispatch_id = static_cast<tr::AmId>(sc::MessageKind::expert_dispatch);
constexpr auto combine_id = static_cast<tr::AmId>(sc::MessageKind::expert_combine);
// Bench-only AM ids (not message kinds): the same byte counts without Cap'n Proto, and a reset
// of the host's timing records after warm-up.
constexpr tr::AmId raw_dispatch_id = 100;  // header: 8-byte reply size; payload: dispatch bytes
constexpr tr::AmId raw_combine_id = 101;   // payload: reply size bytes
constexpr tr::AmId reset_id = 102;
constexpr std::int64_t quant_block = 128;

int idle_ms = 100;       // --idle-ms: UcxOptions::max_idle_wait, both sides
int busy_poll_us = -1;   // --busy-poll-us: UcxOptions::busy_poll, both sides; -1: the default

tr::ucx::UcxOptions options_for(const std::string& tls, const std::string& name) {
  tr::ucx::UcxOptions o;
  o.max_idle_wait = std::chrono::milliseconds(idle_ms);
  if (busy_poll_us >= 0) o.busy_poll = std::chrono::microseconds(busy_poll_us);
  if (tls == "sm") {
    o.error_mode = tr::ucx::ErrorMode::none;  // shared memory needs mode NONE
    o.config = {{"TLS", "sm,tcp"}, {"NET_DEVICES", "lo"}};  // the listener path needs tcp
  } else if (tls == "tcp") {
    o.error_mode = tr::ucx::ErrorMode::peer;
    o.config = {{"TLS", "tcp"}, {"NET_DEVICES", "lo"}};
  } else {
    throw std::invalid_argument("unknown --tls '" + tls + "' (sm or tcp)");
  }
  o.name = name;
  return o;
}

double us_since(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// The BF16 outputs the host sends: bf16 of uniform(-1, 1) from a fixed generator, so the worker
// can check every byte. The host overwrites the first 8 bytes with the batch id.
std::vector<std::byte> output_pattern(std::size_t bytes) {
  sy::bench::Lcg rng(0xC0FFEE);
  std::vector<std::byte> out(bytes);
  for (std::size_t i = 0; i + 1 < bytes; i += 2) {
    const float f = rng.uniform(-1.0f, 1.0f);
    std::uint32_t u = 0;
    std::memcpy(&u, &f, 4);
    const auto b = static_cast<std::uint16_t>(u >> 16);
    std::memcpy(out.data() + i, &b, 2);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The workload: one layer call's rows for one expert host, built the way remote_experts.cpp does.

struct Shape {
  int tokens = 128, top_k = 8, hidden = 7168, experts = 256;
};

struct Workload {
  Shape shape;
  std::int64_t rows = 0, blocks = 0;
  std::vector<std::uint8_t> xq;    // [tokens, hidden] e4m3 bytes (finite, random)
  std::vector<float> scales;       // [tokens, blocks]
  std::vector<std::uint32_t> slots, slot_rows;
  std::vector<std::int64_t> row_token;  // [rows]: the token each row copies, grouped by slot

  explicit Workload(const Shape& s) : shape(s) {
    if (s.tokens < 1 || s.top_k < 1 || s.top_k > s.experts || s.hidden < quant_block || s.hidden % quant_block != 0) {
      throw std::invalid_argument("bad shape: need tokens >= 1, 1 <= top-k <= experts, hidden a multiple of 128");
    }
    rows = static_cast<std::int64_t>(s.tokens) * s.top_k;
    if (rows > sc::limits::max_dispatch_rows) throw std::invalid_argument("tokens x top-k over max_dispatch_rows");
    blocks = s.hidden / quant_block;
    sy::bench::Lcg rng(12345);
    xq.resize(static_cast<std::size_t>(s.tokens) * static_cast<std::size_t>(s.hidden));
    for (auto& b : xq) {
      b = static_cast<std::uint8_t>(rng.next());
      if ((b & 0x7f) == 0x7f) b ^= 1;  // 0x7f / 0xff are NaN in e4m3
    }
    scales.resize(static_cast<std::size_t>(s.tokens * blocks));
    for (auto& v : scales) v = rng.uniform(1e-4f, 1e-2f);
    // Top-k distinct experts per token, uniformly; one host holds every slot (slot = expert).
    std::vector<std::vector<std::int64_t>> by_expert(static_cast<std::size_t>(s.experts));
    for (int t = 0; t < s.tokens; ++t) {
      std::vector<int> chosen;
      while (static_cast<int>(chosen.size()) < s.top_k) {
        const int e = static_cast<int>(rng.next() % static_cast<std::uint32_t>(s.experts));
        if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
      }
      for (int e : chosen) by_expert[static_cast<std::size_t>(e)].push_back(t);
    }
    for (int e = 0; e < s.experts; ++e) {
      const auto& ts = by_expert[static_cast<std::size_t>(e)];
      if (ts.empty()) continue;
      slots.push_back(static_cast<std::uint32_t>(e));
      slot_rows.push_back(static_cast<std::uint32_t>(ts.size()));
      row_token.insert(row_token.end(), ts.begin(), ts.end());
    }
  }
};

// Build + encode, as RemoteExpertExecutor::run and TransportBridge::send_kind do.
sc::Frame encode_dispatch(const Workload& w, std::uint64_t batch_id) {
  capnp::MallocMessageBuilder message;
  auto d = message.initRoot<sc::ExpertDispatch>();
  d.setBatchId(batch_id);
  d.setLayer(3);
  d.setEpoch(1);
  const std::int64_t h = w.shape.hidden;
  d.setHidden(static_cast<std::uint32_t>(h));
  auto slot_ids = d.initSlots(static_cast<unsigned>(w.slots.size()));
  auto slot_rows = d.initSlotRows(static_cast<unsigned>(w.slots.size()));
  for (unsigned i = 0; i < w.slots.size(); ++i) {
    slot_ids.set(i, w.slots[i]);
    slot_rows.set(i, w.slot_rows[i]);
  }
  d.setDtype(sc::ActivationDtype::FP8E4M3);
  auto act = d.initActivations(static_cast<unsigned>(w.rows * h));
  auto scl = d.initScales(static_cast<unsigned>(w.rows * w.blocks * 4));
  for (std::int64_t r = 0; r < w.rows; ++r) {
    const std::int64_t t = w.row_token[static_cast<std::size_t>(r)];
    std::memcpy(act.begin() + r * h, w.xq.data() + t * h, static_cast<std::size_t>(h));
    std::memcpy(scl.begin() + r * w.blocks * 4, w.scales.data() + t * w.blocks, static_cast<std::size_t>(w.blocks * 4));
  }
  return sc::encode<sc::ExpertDispatch>(message);
}

// The host's answer to a decoded dispatch: BF16 outputs for every row (the pattern, batch id in
// the first 8 bytes), encoded. `pattern` grows to the size needed.
sc::Frame encode_combine(sc::ExpertDispatch::Reader d, std::vector<std::byte>& pattern) {
  std::uint64_t rows = 0;
  for (const std::uint32_t n : d.getSlotRows()) rows += n;
  const std::size_t bytes = static_cast<std::size_t>(rows) * d.getHidden() * 2;
  if (pattern.size() < bytes) pattern = output_pattern(bytes);
  capnp::MallocMessageBuilder message;
  auto c = message.initRoot<sc::ExpertCombine>();
  c.setBatchId(d.getBatchId());
  c.setLayer(d.getLayer());
  c.setEpoch(d.getEpoch());
  c.setRows(static_cast<std::uint32_t>(rows));
  c.setDtype(sc::OutputDtype::BF16);
  auto out = c.initOutputs(static_cast<unsigned>(bytes));
  std::memcpy(out.begin(), pattern.data(), bytes);
  const std::uint64_t id = d.getBatchId();
  std::memcpy(out.begin(), &id, std::min<std::size_t>(8, bytes));
  return sc::encode<sc::ExpertCombine>(message);
}

sc::Frame encode_combine_error(sc::ExpertDispatch::Reader d, const std::string& why) {
  capnp::MallocMessageBuilder message;
  auto c = message.initRoot<sc::ExpertCombine>();
  c.setBatchId(d.getBatchId() != 0 ? d.getBatchId() : 1);
  c.setLayer(0);
  c.setEpoch(1);
  c.setRows(0);
  c.setError(why.substr(0, sc::limits::max_message_bytes));
  return sc::encode<sc::ExpertCombine>(message);
}

// Throws unless the combine answers batch `id` of `w` with exactly the host's pattern.
void check_combine(sc::ExpertCombine::Reader c, const Workload& w, std::uint64_t id, bool every_byte,
                   const std::vector<std::byte>& pattern) {
  if (c.getError().size() > 0) throw std::runtime_error(std::string("host answered an error: ") + c.getError().cStr());
  const std::size_t bytes = static_cast<std::size_t>(w.rows) * static_cast<std::size_t>(w.shape.hidden) * 2;
  if (c.getBatchId() != id || c.getRows() != w.rows || c.getDtype() != sc::OutputDtype::BF16 ||
      c.getOutputs().size() != bytes) {
    throw std::runtime_error("combine does not answer the dispatch (batch, rows, dtype or size)");
  }
  std::uint64_t echoed = 0;
  std::memcpy(&echoed, c.getOutputs().begin(), std::min<std::size_t>(8, bytes));
  if (echoed != id) throw std::runtime_error("combine outputs do not carry the batch id");
  if (every_byte && bytes > 8 && std::memcmp(c.getOutputs().begin() + 8, pattern.data() + 8, bytes - 8) != 0) {
    throw std::runtime_error("combine outputs differ from the host's pattern");
  }
}

// ---------------------------------------------------------------------------------------------
// The expert host (peer process): answers dispatches on its progress thread, echoes raw AMs,
// leaves when the worker closes (or dies: PDEATHSIG; or 300 s pass). On exit it prints its
// timing records: "HOST <rows> <n> <decode µs median> <build+encode µs median>".

struct Timings {
  std::vector<double> decode, answer;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run_peer(const std::string& tls) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  tr::ucx::UcxTransport transport(options_for(tls, "dispatch_host"));
  transport.listen("127.0.0.1:0");
  std::vector<std::byte> pattern, raw_reply;
  std::map<std::uint64_t, Timings> timings;  // by rows; progress thread only until close
  transport.set_handler(dispatch_id, [&](tr::PeerId from, tr::Bytes header, tr::Bytes payload) {
    std::shared_ptr<sc::Frame> answer;
    try {
      const auto start = Clock::now();
      const auto d = sc::decode<sc::ExpertDispatch>(sc::frame_of_am(dispatch_id, header, payload));
      const double decode_us = us_since(start);
      const auto built = Clock::now();
      answer = std::make_shared<sc::Frame>(encode_combine(d.reader(), pattern));
      std::uint64_t rows = 0;
      for (const std::uint32_t n : d->getSlotRows()) rows += n;
      timings[rows].decode.push_back(decode_us);
      timings[rows].answer.push_back(us_since(built));
    } catch (const std::exception& e) {
      capnp::MallocMessageBuilder empty;
      std::fprintf(stderr, "dispatch host: %s\n", e.what());
      answer = std::make_shared<sc::Frame>(
          encode_combine_error(empty.initRoot<sc::ExpertDispatch>().asReader(), e.what()));
    }
    const sc::AmParts parts = sc::am_parts(sc::MessageKind::expert_combine, *answer);
    transport.send(from, combine_id, parts.header, parts.payload, [answer](const tr::Status&) {});
  });
  transport.set_handler(raw_dispatch_id, [&](tr::PeerId from, tr::Bytes header, tr::Bytes) {
    std::uint64_t size = 0;
    if (header.size() == 8) std::memcpy(&size, header.data(), 8);
    if (raw_reply.size() < size) raw_reply.assign(size, std::byte{0x3c});  // never changed while in flight:
    // the worker waits for each reply before the next dispatch, and sizes only grow per case.
    transport.send(from, raw_combine_id, {}, tr::Bytes(raw_reply.data(), size), {});
  });
  transport.set_handler(reset_id, [&](tr::PeerId, tr::Bytes header, tr::Bytes) {  // header: 8-byte rows
    std::uint64_t rows = 0;
    if (header.size() == 8) std::memcpy(&rows, header.data(), 8);
    timings.erase(rows);
  });
  std::mutex mutex;
  std::condition_variable cv;
  bool gone = false;
  transport.on_peer_failure([&](tr::PeerId, const tr::PeerDown&) {
    std::lock_guard lock(mutex);
    gone = true;
    cv.notify_all();
  });
  std::printf("READY %s\n", transport.local_address().c_str());
  std::fflush(stdout);
  {
    std::unique_lock lock(mutex);
    cv.wait_for(lock, 300s, [&] { return gone; });
  }
  transport.close(1s);
  for (const auto& [rows, t] : timings) {
    std::printf("HOST %llu %zu %.3f %.3f\n", static_cast<unsigned long long>(rows), t.decode.size(), median(t.decode),
                median(t.answer));
  }
  std::printf("END\n");
  std::fflush(stdout);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The worker side.

class Child {
 public:
  Child(const std::string& self, const std::string& tls) {
    std::vector<std::string> env_strings{"UCX_WARN_UNUSED_ENV_VARS=n"};
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    std::vector<char*> envp;
    for (auto& entry : env_strings) envp.push_back(entry.data());
    envp.push_back(nullptr);
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    std::string flag = "--peer", arg = tls, idle = std::to_string(idle_ms), busy = std::to_string(busy_poll_us);
    char* argv[] = {const_cast<char*>(self.c_str()), flag.data(), arg.data(), idle.data(), busy.data(), nullptr};
    const int rc = posix_spawn(&pid_, self.c_str(), &actions, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    out_ = fds[0];
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error("posix_spawn " + self + ": " + std::strerror(rc));
    }
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  // A line of the child's stdout, or "" on timeout or end of file.
  std::string read_line(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::string line;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return "";
      pollfd fd{out_, POLLIN, 0};
      if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
      char c = 0;
      if (::read(out_, &c, 1) != 1) return "";
      if (c == '\n') return line;
      line += c;
    }
  }
  void reap(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (pid_ > 0 && Clock::now() < deadline) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      ::usleep(10000);
    }
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

// Answers arriving on the worker's progress thread, handed to the bench thread.
class Inbox {
 public:
  void put(sc::Decoded<sc::ExpertCombine>&& combine, double decode_us) {
    std::lock_guard lock(mutex_);
    combine_.emplace(std::move(combine));
    decode_us_ = decode_us;
    ++arrived_;
    cv_.notify_all();
  }
  void put_raw() {
    std::lock_guard lock(mutex_);
    ++arrived_;
    cv_.notify_all();
  }
  void fail(const std::string& why) {
    std::lock_guard lock(mutex_);
    error_ = why;
    ++arrived_;
    cv_.notify_all();
  }
  // Waits for arrival number n (1-based). Throws on timeout or a failed decode.
  void wait(std::uint64_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return arrived_ >= n; })) throw std::runtime_error("no answer: timed out");
    if (!error_.empty()) throw std::runtime_error(error_);
  }
  // After wait(): the combine that arrived (moved out) and its decode time on the progress thread.
  sc::Decoded<sc::ExpertCombine> take(double& decode_us) {
    std::lock_guard lock(mutex_);
    if (!combine_) throw std::runtime_error("no combine arrived");
    decode_us = decode_us_;
    auto out = std::move(*combine_);
    combine_.reset();
    return out;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<sc::Decoded<sc::ExpertCombine>> combine_;
  double decode_us_ = 0;
  std::uint64_t arrived_ = 0;
  std::string error_;
};

// Counts send completions, so buffers outlive the sends that read them.
class SendCounter {
 public:
  tr::Completion completion() {
    {
      std::lock_guard lock(mutex_);
      ++issued_;
    }
    return [this](const tr::Status& s) {
      std::lock_guard lock(mutex_);
      ++done_;
      failed_ += s.ok() ? 0 : 1;
      cv_.notify_all();
    };
  }
  void wait_all(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return done_ == issued_; })) {
      throw std::runtime_error("sends did not complete");
    }
    if (failed_ != 0) throw std::runtime_error(std::to_string(failed_) + " send(s) failed");
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::uint64_t issued_ = 0, done_ = 0, failed_ = 0;
};

struct Stats {
  double median = 0, min = 0, max = 0;
  std::size_t n = 0;
};

Stats summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back(), v.size()};
}

struct Config {
  std::vector<std::string> tls{"sm", "tcp"};
  std::vector<int> tokens{128, 1};
  int top_k = 8, hidden = 7168, experts = 256;
  double seconds = 2.0;  // per case and path, after warm-up
  int min_iters = 20;
  int max_iters = 20000;
  std::map<std::string, double> baselines;  // "tls test bytes" -> GB/s or one-way µs
};

// One case's frames (sizes are deterministic: the routing comes from a fixed generator).
struct CaseInfo {
  Shape shape;
  std::size_t dispatch_bytes = 0, combine_bytes = 0, payload_out = 0, payload_back = 0;
  std::size_t slots = 0;
};

CaseInfo describe(const Workload& w) {
  std::vector<std::byte> pattern;
  const sc::Frame d = encode_dispatch(w, 1);
  const auto decoded = sc::decode<sc::ExpertDispatch>(d);
  const sc::Frame c = encode_combine(decoded.reader(), pattern);
  CaseInfo info;
  info.shape = w.shape;
  info.dispatch_bytes = d.size();
  info.combine_bytes = c.size();
  info.payload_out = static_cast<std::size_t>(w.rows * w.shape.hidden + w.rows * w.blocks * 4);
  info.payload_back = static_cast<std::size_t>(w.rows * w.shape.hidden * 2);
  info.slots = w.slots.size();
  return info;
}

struct Breakdown {  // medians, µs
  double worker_encode = 0, host_decode = 0, host_encode = 0, worker_decode = 0;
};

struct Row {
  CaseInfo info;
  std::string tls, path;
  Stats rtt;  // µs
  Breakdown parts;
  bool wire = false;
};

// Runs iterations until cfg.seconds pass (and at least min_iters), after a warm-up of at least 3
// iterations and 0.2 s; `one(measured)` does one round trip and returns its µs.
template <class F>
std::vector<double> timed_loop(const Config& cfg, F&& one) {
  const auto warm_start = Clock::now();
  for (int i = 0; i < 3 || (Clock::now() - warm_start < 200ms && i < 1000); ++i) one(false);
  std::vector<double> us;
  const auto start = Clock::now();
  while (static_cast<int>(us.size()) < cfg.min_iters ||
         (std::chrono::duration<double>(Clock::now() - start).count() < cfg.seconds &&
          static_cast<int>(us.size()) < cfg.max_iters)) {
    us.push_back(one(true));
  }
  return us;
}

void run_transport(const std::string& self, const std::string& tls, const Config& cfg,
                   const std::vector<Workload>& loads, const std::vector<CaseInfo>& infos, std::vector<Row>& rows) {
  Child child(self, tls);
  const std::string ready = child.read_line(20s);
  if (ready.rfind("READY ", 0) != 0) throw std::runtime_error("host (" + tls + ") said '" + ready + "'");
  const std::string address = ready.substr(6);
  tr::ucx::UcxTransport t(options_for(tls, "dispatch_worker"));
  const tr::PeerId peer = t.connect(address, 10s);

  Inbox inbox;
  t.set_handler(combine_id, [&](tr::PeerId, tr::Bytes header, tr::Bytes payload) {
    try {
      const auto start = Clock::now();
      auto c = sc::decode<sc::ExpertCombine>(sc::frame_of_am(combine_id, header, payload));
      inbox.put(std::move(c), us_since(start));
    } catch (const std::exception& e) {
      inbox.fail(std::string("worker: ") + e.what());
    }
  });
  t.set_handler(raw_combine_id, [&](tr::PeerId, tr::Bytes, tr::Bytes) { inbox.put_raw(); });
  std::uint64_t arrivals = 0;
  std::vector<std::size_t> wire_rows;
  SendCounter sends;

  for (std::size_t ci = 0; ci < loads.size(); ++ci) {
    const Workload& w = loads[ci];
    const CaseInfo& info = infos[ci];
    const std::vector<std::byte> pattern = output_pattern(info.payload_back);

    // Wire path: build + encode, AM, host decode + build + encode, AM, decode.
    std::vector<double> worker_encode, worker_decode;
    std::uint64_t batch = 0;
    bool reset_sent = false;
    const auto rows_of_case = static_cast<std::uint64_t>(w.rows);
    std::vector<double> us = timed_loop(cfg, [&](bool measured) {
      if (measured && !reset_sent) {  // the host drops this case's warm-up records (AMs stay in order)
        t.send(peer, reset_id, tr::Bytes(reinterpret_cast<const std::byte*>(&rows_of_case), 8), {}, sends.completion());
        reset_sent = true;
      }
      const std::uint64_t id = ++batch + (static_cast<std::uint64_t>(ci + 1) << 40);
      const auto start = Clock::now();
      auto frame = std::make_shared<sc::Frame>(encode_dispatch(w, id));
      const double enc = us_since(start);
      const sc::AmParts parts = sc::am_parts(sc::MessageKind::expert_dispatch, *frame);
      t.send(peer, dispatch_id, parts.header, parts.payload,
             [frame, done = sends.completion()](const tr::Status& s) { done(s); });
      inbox.wait(++arrivals, 30s);
      double dec = 0;
      const auto combine = inbox.take(dec);
      check_combine(combine.reader(), w, id, !measured, pattern);
      const double rtt = us_since(start);
      if (measured) {
        worker_encode.push_back(enc);
        worker_decode.push_back(dec);
      }
      return rtt;
    });
    Row wire{info, tls, "wire: encode, AM, decode", summarize(us), {}, true};
    wire.parts.worker_encode = median(worker_encode);
    wire.parts.worker_decode = median(worker_decode);
    wire_rows.push_back(rows.size());
    rows.push_back(wire);
    std::fprintf(stderr, "%s %d tokens, wire: %.1f us\n", tls.c_str(), w.shape.tokens, wire.rtt.median);

    // Raw path: the same byte counts as plain AM payloads, no Cap'n Proto, no copies.
    std::vector<std::byte> raw_out(info.dispatch_bytes, std::byte{0x5a});
    const std::uint64_t reply = info.combine_bytes;
    std::byte header[8];
    std::memcpy(header, &reply, 8);
    us = timed_loop(cfg, [&](bool) {
      const auto start = Clock::now();
      t.send(peer, raw_dispatch_id, tr::Bytes(header, 8), raw_out, sends.completion());
      inbox.wait(++arrivals, 30s);
      return us_since(start);
    });
    rows.push_back({info, tls, "raw AM, same bytes (transport only)", summarize(us), {}, false});
    std::fprintf(stderr, "%s %d tokens, raw: %.1f us\n", tls.c_str(), w.shape.tokens, rows.back().rtt.median);
    sends.wait_all(10s);  // raw_out must outlive its sends
  }
  t.close(2s);
  // The host's timing records, per case (by rows).
  for (std::string line = child.read_line(10s); !line.empty() && line != "END"; line = child.read_line(10s)) {
    std::istringstream fields(line);
    std::string tag;
    unsigned long long n_rows = 0;
    std::size_t n = 0;
    double dec = 0, enc = 0;
    if (!(fields >> tag >> n_rows >> n >> dec >> enc) || tag != "HOST") continue;
    for (const std::size_t r : wire_rows) {
      if (rows[r].info.shape.tokens * rows[r].info.shape.top_k == static_cast<long long>(n_rows)) {
        rows[r].parts.host_decode = dec;
        rows[r].parts.host_encode = enc;
      }
    }
  }
  child.reap(3s);
}

// The codec alone, in one process: the four build/encode/decode steps of a round trip, and one
// memcpy of both frames for scale.
struct CodecRow {
  CaseInfo info;
  Stats total;
  Breakdown parts;
  double memcpy_us = 0;
};

CodecRow bench_codec(const Config& cfg, const Workload& w, const CaseInfo& info) {
  std::vector<std::byte> host_pattern;
  const std::vector<std::byte> pattern = output_pattern(info.payload_back);
  std::vector<double> e_d, d_d, e_c, d_c, copy;
  std::vector<std::byte> copy_src(info.dispatch_bytes + info.combine_bytes, std::byte{1});
  std::vector<std::byte> copy_dst(copy_src.size());
  std::uint64_t id = 0;
  const std::vector<double> total = timed_loop(cfg, [&](bool measured) {
    ++id;
    auto t0 = Clock::now();
    const sc::Frame dispatch = encode_dispatch(w, id);
    const double a = us_since(t0);
    t0 = Clock::now();
    const auto d = sc::decode<sc::ExpertDispatch>(dispatch);
    const double b = us_since(t0);
    t0 = Clock::now();
    const sc::Frame combine = encode_combine(d.reader(), host_pattern);
    const double c = us_since(t0);
    t0 = Clock::now();
    const auto back = sc::decode<sc::ExpertCombine>(combine);
    const double e = us_since(t0);
    check_combine(back.reader(), w, id, !measured, pattern);
    t0 = Clock::now();
    std::memcpy(copy_dst.data(), copy_src.data(), copy_src.size());
    const double m = us_since(t0);
    if (measured) {
      e_d.push_back(a);
      d_d.push_back(b);
      e_c.push_back(c);
      d_c.push_back(e);
      copy.push_back(m);
    }
    return a + b + c + e;
  });
  CodecRow row{info, summarize(total), {median(e_d), median(d_d), median(e_c), median(d_c)}, median(copy)};
  if (copy_dst[copy_dst.size() - 1] != std::byte{1}) std::fprintf(stderr, "memcpy check failed\n");
  return row;
}

std::string with_commas(std::size_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string case_name(const Shape& s) {
  return std::to_string(s.tokens) + (s.tokens == 1 ? " token" : " tokens") + " x top-" + std::to_string(s.top_k);
}

double baseline(const Config& cfg, const std::string& tls, const std::string& test, std::size_t bytes) {
  const auto it = cfg.baselines.find(tls + " " + test + " " + std::to_string(bytes));
  return it == cfg.baselines.end() ? 0.0 : it->second;
}

// perftest estimates of one round trip in µs (0: no baseline): bandwidth (each frame at
// ucp_am_bw's rate for its size) and latency (ucp_am_lat's one-way p50 at each frame's size).
double estimate_bw(const Config& cfg, const std::string& tls, const CaseInfo& i) {
  const double d = baseline(cfg, tls, "am_bw", i.dispatch_bytes), c = baseline(cfg, tls, "am_bw", i.combine_bytes);
  if (d <= 0 || c <= 0) return 0;
  return static_cast<double>(i.dispatch_bytes) / (d * 1e3) + static_cast<double>(i.combine_bytes) / (c * 1e3);
}
double estimate_lat(const Config& cfg, const std::string& tls, const CaseInfo& i) {
  const double d = baseline(cfg, tls, "am_lat", i.dispatch_bytes), c = baseline(cfg, tls, "am_lat", i.combine_bytes);
  if (d <= 0 || c <= 0) return 0;
  return d + c;
}

void print(const Config& cfg, const std::vector<CaseInfo>& infos, const std::vector<Row>& rows,
           const std::vector<CodecRow>& codec) {
  std::printf("\nCases (one expert host holds all %d experts; rows grouped by slot, as remote_experts.cpp):\n",
              cfg.experts);
  for (const CaseInfo& i : infos) {
    std::printf("- %s = %d rows, hidden %d, %zu slots: dispatch frame %s B (e4m3 + scales %s B), combine frame %s B "
                "(bf16 %s B)\n",
                case_name(i.shape).c_str(), i.shape.tokens * i.shape.top_k, i.shape.hidden, i.slots,
                with_commas(i.dispatch_bytes).c_str(), with_commas(i.payload_out).c_str(),
                with_commas(i.combine_bytes).c_str(), with_commas(i.payload_back).c_str());
  }
  for (const std::string& tls : cfg.tls) {
    const double lat = baseline(cfg, tls, "am_lat", 1024);
    if (lat > 0) std::printf("- ucx_perftest ucp_am_lat 1 KiB, %s: %.2f µs round trip (2 x one-way p50)\n", tls.c_str(), 2 * lat);
  }
  std::printf("\nRound trip = build + encode dispatch, AM, host decode + build + encode combine, AM, decode, in µs: "
              "median (min-max).\nGB/s = (dispatch + combine frame bytes) / round trip (1e9 B/s). Estimates from "
              "ucx_perftest in the same run:\nbw = dispatch bytes / am_bw(dispatch bytes) + combine bytes / "
              "am_bw(combine bytes); lat = am_lat one-way p50 at each size, summed.\nratio = estimate / ours "
              "(1.00 = as fast as ucx_perftest moving the same bytes).\n\n");
  std::printf("| case | transport | path | round trip µs | n | GB/s | perftest bw est. µs | ratio | "
              "perftest lat est. µs | ratio |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    const double bw = estimate_bw(cfg, r.tls, r.info), lat = estimate_lat(cfg, r.tls, r.info);
    const double gbps = static_cast<double>(r.info.dispatch_bytes + r.info.combine_bytes) / (r.rtt.median * 1e3);
    char bw_col[32] = "-", bw_ratio[32] = "-", lat_col[32] = "-", lat_ratio[32] = "-";
    if (bw > 0) {
      std::snprintf(bw_col, sizeof bw_col, "%.1f", bw);
      std::snprintf(bw_ratio, sizeof bw_ratio, "**%.2f**", bw / r.rtt.median);
    }
    if (lat > 0) {
      std::snprintf(lat_col, sizeof lat_col, "%.1f", lat);
      std::snprintf(lat_ratio, sizeof lat_ratio, "%.2f", lat / r.rtt.median);
    }
    std::printf("| %s | %s | %s | %.1f (%.1f-%.1f) | %zu | %.2f | %s | %s | %s | %s |\n", case_name(r.info.shape).c_str(),
                r.tls.c_str(), r.path.c_str(), r.rtt.median, r.rtt.min, r.rtt.max, r.rtt.n, gbps, bw_col, bw_ratio,
                lat_col, lat_ratio);
  }
  std::printf("\nWhere the wire path's time goes (medians, µs; host steps run on its progress thread, the worker's "
              "decode on its own;\nremainder = round trip - the four steps: the two transfers and the thread "
              "wake-ups). Last rows: the codec alone in one process.\n\n");
  std::printf("| case | where | round trip | worker build+encode | host decode | host build+encode | worker decode | "
              "remainder |\n|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    if (!r.wire) continue;
    const Breakdown& b = r.parts;
    std::printf("| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", case_name(r.info.shape).c_str(), r.tls.c_str(),
                r.rtt.median, b.worker_encode, b.host_decode, b.host_encode, b.worker_decode,
                r.rtt.median - b.worker_encode - b.host_decode - b.host_encode - b.worker_decode);
  }
  for (const CodecRow& c : codec) {
    const Breakdown& b = c.parts;
    std::printf("| %s | one process, codec only (one memcpy of both frames: %.1f) | %.1f | %.1f | %.1f | %.1f | %.1f | - |\n",
                case_name(c.info.shape).c_str(), c.memcpy_us, c.total.median, b.worker_encode, b.host_decode,
                b.host_encode, b.worker_decode);
  }
}

// Baseline file lines: "<tls> am_bw <bytes> <GB/s>" and "<tls> am_lat <bytes> <one-way µs>".
std::map<std::string, double> read_baselines(const std::string& path) {
  std::map<std::string, double> out;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::string tls, test, size;
  double value = 0;
  while (in >> tls >> test >> size >> value) out[tls + " " + test + " " + size] = value;
  return out;
}

int usage() {
  std::fprintf(stderr,
               "usage: dispatch_bench [--tls sm|tcp]... [--tokens N]... [--top-k K] [--hidden H] [--experts E]\n"
               "                      [--seconds S] [--min-iters N] [--idle-ms N] [--busy-poll-us N]\n"
               "                      [--baselines FILE] [--quick] [--print-sizes]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 4 && args[0] == "--peer") {
      idle_ms = std::stoi(args[2]);
      busy_poll_us = std::stoi(args[3]);
      return run_peer(args[1]);
    }
    Config cfg;
    std::vector<std::string> tls;
    std::vector<int> tokens;
    bool print_sizes = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
      const bool has_value = i + 1 < args.size();
      if (args[i] == "--tls" && has_value) {
        tls.push_back(args[++i]);
      } else if (args[i] == "--tokens" && has_value) {
        tokens.push_back(std::stoi(args[++i]));
      } else if (args[i] == "--top-k" && has_value) {
        cfg.top_k = std::stoi(args[++i]);
      } else if (args[i] == "--hidden" && has_value) {
        cfg.hidden = std::stoi(args[++i]);
      } else if (args[i] == "--experts" && has_value) {
        cfg.experts = std::stoi(args[++i]);
      } else if (args[i] == "--seconds" && has_value) {
        cfg.seconds = std::stod(args[++i]);
      } else if (args[i] == "--min-iters" && has_value) {
        cfg.min_iters = std::max(1, std::stoi(args[++i]));
      } else if (args[i] == "--baselines" && has_value) {
        cfg.baselines = read_baselines(args[++i]);
      } else if (args[i] == "--idle-ms" && has_value) {
        idle_ms = std::max(1, std::stoi(args[++i]));
      } else if (args[i] == "--busy-poll-us" && has_value) {
        busy_poll_us = std::max(0, std::stoi(args[++i]));
      } else if (args[i] == "--quick") {
        cfg.seconds = 0.3;
        cfg.min_iters = 5;
      } else if (args[i] == "--print-sizes") {
        print_sizes = true;
      } else {
        return usage();
      }
    }
    if (!tls.empty()) cfg.tls = tls;
    if (!tokens.empty()) cfg.tokens = tokens;
    for (const auto& name : cfg.tls) options_for(name, "check");  // reject a bad --tls early
    std::vector<Workload> loads;
    std::vector<CaseInfo> infos;
    for (const int n : cfg.tokens) {
      loads.emplace_back(Shape{n, cfg.top_k, cfg.hidden, cfg.experts});
      infos.push_back(describe(loads.back()));
    }
    if (print_sizes) {  // for dispatch_bench.sh: "<tokens> <dispatch frame bytes> <combine frame bytes>"
      for (const CaseInfo& i : infos) std::printf("%d %zu %zu\n", i.shape.tokens, i.dispatch_bytes, i.combine_bytes);
      return 0;
    }
    std::vector<CodecRow> codec;
    for (std::size_t i = 0; i < loads.size(); ++i) codec.push_back(bench_codec(cfg, loads[i], infos[i]));
    std::vector<Row> rows;
    for (const auto& name : cfg.tls) run_transport("/proc/self/exe", name, cfg, loads, infos, rows);
    print(cfg, infos, rows, codec);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dispatch_bench: %s\n", e.what());
    return 1;
  }
}
