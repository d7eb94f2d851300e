// The UCP implementation. Everything below `Impl` that is not marked "any thread" runs on the
// progress thread, which owns the worker (UCS_THREAD_MODE_SINGLE), the listener, the endpoints
// and the peer table. The context is shared with memory regions (mt_workers_shared, so mem_map
// and rkey_pack are safe from any thread) and outlives the transport while a region lives.
//
// Wire: one UCX AM id carries everything; its UCX header is an 8-byte WirePrefix (magic, kind,
// application AM id) followed by the application header, so unknown application ids are ours to
// count, and hello/bye control messages share the endpoint's ordering with data.
#include "transport/ucx/ucx_transport.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "transport/thread_annotations.hpp"

namespace sy::transport::ucx {

namespace {

using Clock = std::chrono::steady_clock;

constexpr unsigned wire_am_id = 7;
constexpr std::uint32_t wire_magic = 0x31545953;  // "SYT1"

enum class Kind : std::uint8_t { data = 1, hello, hello_ack, bye, bye_ack };

struct WirePrefix {
  std::uint32_t magic = wire_magic;
  Kind kind = Kind::data;
  std::uint8_t reserved = 0;
  AmId am_id = 0;
};
static_assert(sizeof(WirePrefix) == 8);

std::string status_text(ucs_status_t status) { return ucs_status_string(status); }

Errc errc_of(ucs_status_t status) {
  switch (status) {
    case UCS_OK:
      return Errc::ok;
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CANCELED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_REJECTED:
      return Errc::peer_failed;
    case UCS_ERR_UNREACHABLE:
      return Errc::unreachable;
    case UCS_ERR_TIMED_OUT:
      return Errc::timed_out;
    default:
      return Errc::internal;
  }
}

// "host:port" (IPv4 or a name) -> sockaddr. Runs on the caller's thread (may resolve a name).
sockaddr_storage parse_address(const std::string& address, socklen_t& length,
                               const std::string& what) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    throw TransportError(Errc::invalid_argument, what + ": address '" + address +
                                                     "' is not host:port");
  }
  const std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    throw TransportError(Errc::invalid_argument,
                         what + ": cannot resolve '" + address + "': " + gai_strerror(rc));
  }
  sockaddr_storage storage{};
  std::memcpy(&storage, found->ai_addr, found->ai_addrlen);
  length = found->ai_addrlen;
  freeaddrinfo(found);
  return storage;
}

std::string format_address(const sockaddr_storage& storage) {
  if (storage.ss_family != AF_INET) {
    return "?";
  }
  const auto& in = reinterpret_cast<const sockaddr_in&>(storage);
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &in.sin_addr, text, sizeof(text));
  return std::string(text) + ":" + std::to_string(ntohs(in.sin_port));
}

struct Context {
  ucp_context_h handle = nullptr;
  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() {
    if (handle != nullptr) {
      ucp_cleanup(handle);
    }
  }
};

class UcxRegion final : public MemoryRegion {
 public:
  UcxRegion(std::shared_ptr<Context> context, ucp_mem_h memh, std::byte* base, std::size_t size,
            std::vector<std::byte> key)
      : context_(std::move(context)), memh_(memh), base_(base), size_(size), key_(std::move(key)) {}
  ~UcxRegion() override { ucp_mem_unmap(context_->handle, memh_); }
  std::byte* data() const override { return base_; }
  std::size_t size() const override { return size_; }
  Bytes packed_key() const override { return key_; }

 private:
  std::shared_ptr<Context> context_;
  ucp_mem_h memh_;
  std::byte* base_;
  std::size_t size_;
  std::vector<std::byte> key_;
};

}  // namespace

struct UcxTransport::Impl {
  enum class PeerState : std::uint8_t {
    accepted,    // a client reached our listener; its hello has not arrived yet
    connecting,  // we connect; our hello is not acknowledged yet
    live,
    down,  // closed by either side or failed; no more operations
  };

  // A received message waiting for its turn (it, or one ahead of it, is a rendezvous still
  // landing). Owned by its peer's inbox; the UCX receive refers to it until it is ready.
  struct Inbound {
    Impl* impl = nullptr;
    PeerId peer = invalid_peer;
    AmId am_id = 0;
    std::vector<std::byte> header;
    std::vector<std::byte> payload;
    bool ready = false;
    bool failed = false;
  };

  struct Peer {
    PeerId id = invalid_peer;
    ucp_ep_h ep = nullptr;
    std::string address;
    PeerState state = PeerState::accepted;
    bool bye_sent = false;
    bool bye_acked = false;
    bool close_wanted = false;  // close the endpoint once its operations are done
    bool force_close = false;
    bool failed = false;  // UCX reported an error on the endpoint
    int outstanding = 0;  // our operations on this endpoint not yet completed
    std::map<std::vector<std::byte>, ucp_rkey_h> rkeys;
    std::deque<std::unique_ptr<Inbound>> inbox;
    std::shared_ptr<std::promise<Status>> connect_waiter;
  };

  // One operation handed to UCX; user_data of its request.
  struct Op {
    Impl* impl = nullptr;
    PeerId peer = invalid_peer;
    std::string what;  // "send am 3", "put", ... for error text
    Completion done;
    std::vector<std::byte> header;  // the UCX header of a send; must live until completion
    enum class Count : std::uint8_t { none, am, rma } count = Count::none;
    bool abandoned = false;  // teardown completed it already; UCX may still call back
  };

  enum class Phase : std::uint8_t { running, saying_bye, closing_endpoints, done };

  explicit Impl(UcxOptions opts) : options(std::move(opts)) {}
  ~Impl();

  // --- set-up, any thread before the progress thread starts ---
  void start();

  // --- any thread ---
  bool post(std::function<void()> command);
  bool on_progress_thread() const { return std::this_thread::get_id() == thread.get_id(); }
  template <class T>
  T run_sync(std::function<T()> body, std::chrono::milliseconds timeout, const std::string& what);
  void complete_inline(const Completion& done, Status status) {
    if (done) {
      done(status);
    }
  }

  // --- progress thread ---
  void run();
  bool run_commands();  // true when it ran any
  void after_progress();
  void teardown();

  std::string do_listen(const sockaddr_storage& address, socklen_t length,
                        const std::string& text);
  void do_connect(PeerId id, const sockaddr_storage& address, socklen_t length,
                  const std::string& text, std::shared_ptr<std::promise<Status>> waiter);
  void cancel_connect(PeerId id, const std::string& text);
  void do_send(Op* op, AmId am_id, Bytes payload);
  void do_rma(Op* op, bool write, void* local, std::size_t size, std::uint64_t remote_addr,
              const std::vector<std::byte>& key);
  void do_flush(Op* op);
  void begin_close(std::chrono::milliseconds timeout);

  Peer* find_peer(PeerId id) {
    auto it = peers.find(id);
    return it == peers.end() ? nullptr : &it->second;
  }
  Peer* peer_by_ep(ucp_ep_h ep) {
    auto it = ep_peers.find(ep);
    return it == ep_peers.end() ? nullptr : find_peer(it->second);
  }
  // A live peer for `op`, or nullptr after completing `op` with the reason.
  Peer* usable_peer(Op* op);
  void submitted(Op* op, ucs_status_ptr_t request);
  void complete(Op* op, ucs_status_t status);
  void send_control(Peer& peer, Kind kind, const std::string& body);
  ucp_ep_params_t endpoint_params() const;
  void accept(ucp_conn_request_h request);
  void on_message(const WirePrefix& prefix, Bytes header, void* data, std::size_t length,
                  const ucp_am_recv_param_t* param);
  void on_data(Peer& peer, AmId am_id, Bytes header, void* data, std::size_t length, bool rndv);
  void drain_inbox(Peer& peer);
  void dispatch(PeerId from, AmId am_id, Bytes header, Bytes payload);
  void on_endpoint_error(ucp_ep_h ep, ucs_status_t status);
  void mark_down(Peer& peer, const PeerDown& why, bool notify);
  void request_close(Peer& peer, bool force);
  void close_endpoint(Peer& peer);
  std::string describe(PeerId id) {
    Peer* peer = find_peer(id);
    return "peer " + std::to_string(id) + (peer ? " (" + peer->address + ")" : "");
  }

  // UCX callbacks (progress thread, inside ucp_worker_progress).
  static void on_conn_request(ucp_conn_request_h request, void* arg) {
    static_cast<Impl*>(arg)->accept(request);
  }
  static void on_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
    static_cast<Impl*>(arg)->on_endpoint_error(ep, status);
  }
  static void on_op_done(void* request, ucs_status_t status, void* user_data) {
    ucp_request_free(request);
    auto* op = static_cast<Op*>(user_data);
    if (op->abandoned) {
      delete op;
      return;
    }
    op->impl->complete(op, status);
  }
  static void on_recv_data(void* request, ucs_status_t status, std::size_t /*length*/,
                           void* user_data) {
    ucp_request_free(request);
    auto* in = static_cast<Inbound*>(user_data);
    in->ready = true;
    in->failed = status != UCS_OK;
    if (Peer* peer = in->impl->find_peer(in->peer)) {
      in->impl->drain_inbox(*peer);
    }
  }
  static ucs_status_t on_am(void* arg, const void* header, std::size_t header_length, void* data,
                            std::size_t length, const ucp_am_recv_param_t* param) {
    auto* impl = static_cast<Impl*>(arg);
    WirePrefix prefix;
    if (header_length < sizeof(prefix)) {
      impl->malformed.fetch_add(1, std::memory_order_relaxed);
      return UCS_OK;
    }
    std::memcpy(&prefix, header, sizeof(prefix));
    if (prefix.magic != wire_magic) {
      impl->malformed.fetch_add(1, std::memory_order_relaxed);
      return UCS_OK;
    }
    const Bytes user_header(static_cast<const std::byte*>(header) + sizeof(prefix),
                            header_length - sizeof(prefix));
    const std::size_t before = impl->rndv_started;
    impl->on_message(prefix, user_header, data, length, param);
    // A started rendezvous receive owns the descriptor; anything else we are done with.
    return impl->rndv_started != before ? UCS_INPROGRESS : UCS_OK;
  }

  // --- immutable after start ---
  const UcxOptions options;
  std::shared_ptr<Context> context;
  ucp_worker_h worker = nullptr;
  int worker_fd = -1;
  int wake_fd = -1;
  std::thread thread;

  // --- progress thread only ---
  ucp_listener_h listener = nullptr;
  std::map<PeerId, Peer> peers;  // entries stay (state down) for the transport's life
  std::unordered_map<ucp_ep_h, PeerId> ep_peers;
  std::unordered_set<Op*> outstanding;
  std::set<PeerId> closing_peers;      // close_wanted and still holding an endpoint
  std::vector<void*> close_requests;   // ucp_ep_close_nbx requests in flight
  std::size_t rndv_started = 0;
  Phase phase = Phase::running;
  Clock::time_point bye_deadline, final_deadline;

  // --- shared ---
  std::atomic<PeerId> next_peer{1};
  std::atomic<bool> close_called{false};
  std::mutex join_mutex;  // close() may race with close() or the destructor

  std::mutex queue_mutex;
  std::vector<std::function<void()>> commands SY_GUARDED_BY(queue_mutex);
  bool accepting SY_GUARDED_BY(queue_mutex) = true;
  // The progress thread is (about to be) asleep in poll: a new command must write wake_fd.
  // While it busy-polls, posting skips that syscall and it sees `has_commands` instead.
  bool sleeping SY_GUARDED_BY(queue_mutex) = false;
  std::atomic<bool> has_commands{false};

  mutable std::mutex handler_mutex;
  std::map<AmId, std::shared_ptr<const AmHandler>> handlers SY_GUARDED_BY(handler_mutex);
  std::shared_ptr<const PeerFailureHandler> failure_handler SY_GUARDED_BY(handler_mutex);
  std::shared_ptr<const PeerConnectHandler> connect_handler SY_GUARDED_BY(handler_mutex);

  mutable std::mutex address_mutex;
  std::string local_address SY_GUARDED_BY(address_mutex);

  std::atomic<std::uint64_t> am_sent{0}, am_received{0}, am_dropped_no_handler{0},
      handler_exceptions{0}, rma_ops{0}, peers_failed{0}, malformed{0};
};

// ---------------------------------------------------------------------------------------------
// Set-up and the progress loop

void UcxTransport::Impl::start() {
  const std::string what = "ucx transport '" + options.name + "'";
  ucp_config_t* config = nullptr;
  if (ucs_status_t s = ucp_config_read(nullptr, nullptr, &config); s != UCS_OK) {
    throw TransportError(Errc::internal, what + ": ucp_config_read: " + status_text(s));
  }
  for (const auto& [name, value] : options.config) {
    if (ucs_status_t s = ucp_config_modify(config, name.c_str(), value.c_str()); s != UCS_OK) {
      ucp_config_release(config);
      throw TransportError(Errc::invalid_argument, what + ": UCX setting " + name + "=" + value +
                                                       ": " + status_text(s));
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED |
                      UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 1;  // regions are mapped from any thread
  params.name = options.name.c_str();
  context = std::make_shared<Context>();
  const ucs_status_t init = ucp_init(&params, config, &context->handle);
  ucp_config_release(config);
  if (init != UCS_OK) {
    context->handle = nullptr;
    throw TransportError(Errc::internal, what + ": ucp_init: " + status_text(init));
  }

  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_NAME;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches it
  worker_params.name = options.name.c_str();
  if (ucs_status_t s = ucp_worker_create(context->handle, &worker_params, &worker); s != UCS_OK) {
    worker = nullptr;
    throw TransportError(Errc::internal, what + ": ucp_worker_create: " + status_text(s));
  }
  if (ucs_status_t s = ucp_worker_get_efd(worker, &worker_fd); s != UCS_OK) {
    throw TransportError(Errc::internal, what + ": ucp_worker_get_efd: " + status_text(s));
  }
  ucp_am_handler_param_t handler{};
  handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                       UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
  handler.id = wire_am_id;
  handler.flags = UCP_AM_FLAG_WHOLE_MSG;
  handler.cb = &Impl::on_am;
  handler.arg = this;
  if (ucs_status_t s = ucp_worker_set_am_recv_handler(worker, &handler); s != UCS_OK) {
    throw TransportError(Errc::internal, what + ": set_am_recv_handler: " + status_text(s));
  }
  wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    throw TransportError(Errc::internal, what + ": eventfd: " + std::strerror(errno));
  }
  thread = std::thread([this] { run(); });
}

UcxTransport::Impl::~Impl() {
  if (thread.joinable()) {
    thread.join();
  }
  if (worker != nullptr) {  // set-up failed before the thread ran
    ucp_worker_destroy(worker);
  }
  if (wake_fd >= 0) {
    ::close(wake_fd);
  }
}

bool UcxTransport::Impl::post(std::function<void()> command) {
  bool wake = false;
  {
    std::lock_guard lock(queue_mutex);
    if (!accepting) {
      return false;
    }
    commands.push_back(std::move(command));
    has_commands.store(true, std::memory_order_release);
    wake = sleeping;
    sleeping = false;  // one write is enough
  }
  if (wake) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto written = ::write(wake_fd, &one, sizeof(one));
  }
  return true;
}

template <class T>
T UcxTransport::Impl::run_sync(std::function<T()> body, std::chrono::milliseconds timeout,
                               const std::string& what) {
  if (on_progress_thread()) {
    throw TransportError(Errc::invalid_argument, what + ": called on the progress thread");
  }
  auto result = std::make_shared<std::promise<T>>();
  auto future = result->get_future();
  if (!post([result, body = std::move(body)] {
        try {
          result->set_value(body());
        } catch (...) {
          result->set_exception(std::current_exception());
        }
      })) {
    throw TransportError(Errc::closed, what + ": transport is closed");
  }
  if (future.wait_for(timeout) != std::future_status::ready) {
    throw TransportError(Errc::timed_out, what + ": progress thread did not answer within " +
                                              std::to_string(timeout.count()) + " ms");
  }
  return future.get();
}

// The loop: commands, then ucp_worker_progress until it has nothing more, then either poll again
// (busy) or arm the worker's event fd and sleep. It stays busy while operations are in flight
// (until options.in_flight_poll passes without a completion) and for options.busy_poll after the
// last activity; only then does it sleep, so a message or completion that follows within the
// window costs no wake-up (a futex/eventfd wake-up on a loaded host costs 10-50 us).
void UcxTransport::Impl::run() {
  auto last_activity = Clock::now();
  auto last_completion = last_activity;
  std::size_t in_flight = 0;
  while (phase != Phase::done) {
    bool active = run_commands();
    while (ucp_worker_progress(worker) != 0) {
      active = true;
    }
    after_progress();
    if (phase == Phase::done) {
      break;
    }
    const auto now = Clock::now();
    if (active || outstanding.size() < in_flight || outstanding.empty()) {
      last_completion = now;  // something completed or moved (or nothing waits)
    }
    in_flight = outstanding.size();
    if (active) {
      last_activity = now;
    }
    if (has_commands.load(std::memory_order_acquire)) {
      continue;
    }
    const bool waiting = in_flight != 0 || !close_requests.empty();
    if ((waiting && now - last_completion < options.in_flight_poll) ||
        (!waiting && now - last_activity < options.busy_poll)) {
      // Busy: operations in flight, or within the window after activity. When a round found
      // nothing, let a runnable thread have the core before the next (the peer's progress thread,
      // or the application thread our completion woke, may be waiting for this very core on a
      // loaded host; spinning without yielding there costs each side its whole spin per round
      // trip). With the core to itself sched_yield returns at once.
      if (!active) {
        sched_yield();
      }
      continue;
    }
    // Sleep: announce it, then re-check for commands posted meanwhile (under the queue lock, so a
    // poster either sees `sleeping` and writes wake_fd, or its command is seen here).
    {
      std::lock_guard lock(queue_mutex);
      if (!commands.empty()) {
        continue;
      }
      sleeping = true;
    }
    const ucs_status_t armed = ucp_worker_arm(worker);
    if (armed != UCS_ERR_BUSY) {  // BUSY: events arrived meanwhile, progress again
      pollfd fds[2] = {{worker_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
      auto idle = phase == Phase::running ? options.max_idle_wait
                                          : std::min(options.max_idle_wait,
                                                     std::chrono::milliseconds(5));
      if (waiting) {
        idle = std::min(idle, std::chrono::milliseconds(1));  // a stalled peer: poll slowly
      }
      ::poll(fds, 2, static_cast<int>(idle.count()));
    }
    {
      std::lock_guard lock(queue_mutex);
      sleeping = false;
    }
    std::uint64_t drained = 0;
    [[maybe_unused]] const auto got = ::read(wake_fd, &drained, sizeof(drained));
    last_activity = Clock::now();  // woken: poll for the window again (a reply may follow)
  }
  teardown();
}

bool UcxTransport::Impl::run_commands() {
  if (!has_commands.load(std::memory_order_acquire)) {
    return false;
  }
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(queue_mutex);
    batch.swap(commands);
    has_commands.store(false, std::memory_order_relaxed);
  }
  for (auto& command : batch) {
    command();
  }
  return !batch.empty();
}

void UcxTransport::Impl::after_progress() {
  const auto now = Clock::now();
  // Endpoints waiting to close: once their operations are done (or at the deadline).
  for (auto it = closing_peers.begin(); it != closing_peers.end();) {
    Peer* peer = find_peer(*it);
    const bool late = phase == Phase::closing_endpoints;
    if (peer == nullptr || peer->ep == nullptr) {
      it = closing_peers.erase(it);
    } else if (peer->failed || peer->outstanding == 0 || late) {
      close_endpoint(*peer);
      it = closing_peers.erase(it);
    } else {
      ++it;
    }
  }
  // Finished close requests.
  std::erase_if(close_requests, [](void* request) {
    if (ucp_request_check_status(request) == UCS_INPROGRESS) {
      return false;
    }
    ucp_request_free(request);
    return true;
  });

  if (phase == Phase::saying_bye) {
    bool all_said = outstanding.empty();
    for (auto& [id, peer] : peers) {
      if (peer.bye_sent && !peer.bye_acked && peer.state != PeerState::down) {
        all_said = false;
      }
    }
    if (all_said || now >= bye_deadline) {
      phase = Phase::closing_endpoints;
      for (auto& [id, peer] : peers) {
        if (peer.ep != nullptr) {
          // After bye and ack nothing more flows, so a force close is safe in either mode (and a
          // flush close in mode NONE fails noisily once the peer's endpoint is gone).
          peer.state = PeerState::down;
          request_close(peer, peer.bye_acked || options.error_mode == ErrorMode::peer);
        }
      }
    }
  }
  if (phase == Phase::closing_endpoints) {
    for (PeerId id : closing_peers) {
      if (Peer* peer = find_peer(id); peer != nullptr && peer->ep != nullptr) {
        close_endpoint(*peer);
      }
    }
    closing_peers.clear();
    if (close_requests.empty() || now >= final_deadline) {
      phase = Phase::done;
    }
  }
}

void UcxTransport::Impl::teardown() {
  for (void* request : close_requests) {
    ucp_request_free(request);  // released by UCX when it completes
  }
  close_requests.clear();
  // Whatever UCX has not completed by now completes here; a late UCX callback only frees.
  for (Op* op : outstanding) {
    op->abandoned = true;
    complete_inline(op->done, {Errc::closed, op->what + " to " + describe(op->peer) +
                                                 ": transport closed before completion"});
  }
  outstanding.clear();
  for (auto& [id, peer] : peers) {
    for (auto& [key, rkey] : peer.rkeys) {
      ucp_rkey_destroy(rkey);
    }
    peer.rkeys.clear();
  }
  if (listener != nullptr) {
    ucp_listener_destroy(listener);
    listener = nullptr;
  }
  ucp_worker_destroy(worker);
  worker = nullptr;
}

// ---------------------------------------------------------------------------------------------
// Peers: listen, accept, connect, failure, close

ucp_ep_params_t UcxTransport::Impl::endpoint_params() const {
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  if (options.error_mode == ErrorMode::peer) {
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.err_handler.cb = &Impl::on_error;
    params.err_handler.arg = const_cast<Impl*>(this);
  } else {
    params.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  }
  return params;
}

std::string UcxTransport::Impl::do_listen(const sockaddr_storage& address, socklen_t length,
                                          const std::string& text) {
  const std::string what = "listen on " + text;
  if (listener != nullptr) {
    throw TransportError(Errc::invalid_argument, what + ": already listening");
  }
  ucp_listener_params_t params{};
  params.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&address);
  params.sockaddr.addrlen = length;
  params.conn_handler.cb = &Impl::on_conn_request;
  params.conn_handler.arg = this;
  if (ucs_status_t s = ucp_listener_create(worker, &params, &listener); s != UCS_OK) {
    listener = nullptr;
    throw TransportError(s == UCS_ERR_BUSY ? Errc::invalid_argument : errc_of(s),
                         what + ": ucp_listener_create: " + status_text(s));
  }
  ucp_listener_attr_t attr{};
  attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  if (ucs_status_t s = ucp_listener_query(listener, &attr); s != UCS_OK) {
    throw TransportError(Errc::internal, what + ": ucp_listener_query: " + status_text(s));
  }
  return format_address(attr.sockaddr);
}

void UcxTransport::Impl::accept(ucp_conn_request_h request) {
  if (phase != Phase::running) {
    ucp_listener_reject(listener, request);
    return;
  }
  std::string address = "?";
  ucp_conn_request_attr_t attr{};
  attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
  if (ucp_conn_request_query(request, &attr) == UCS_OK) {
    address = format_address(attr.client_address);
  }
  ucp_ep_params_t params = endpoint_params();
  params.field_mask |= UCP_EP_PARAM_FIELD_CONN_REQUEST;
  params.conn_request = request;
  ucp_ep_h ep = nullptr;
  if (ucs_status_t s = ucp_ep_create(worker, &params, &ep); s != UCS_OK) {
    std::fprintf(stderr, "sy::transport::ucx %s: accepting %s failed: %s\n",
                 options.name.c_str(), address.c_str(), status_text(s).c_str());
    return;
  }
  const PeerId id = next_peer.fetch_add(1);
  Peer& peer = peers[id];
  peer.id = id;
  peer.ep = ep;
  peer.address = address;
  peer.state = PeerState::accepted;
  ep_peers[ep] = id;
}

void UcxTransport::Impl::do_connect(PeerId id, const sockaddr_storage& address, socklen_t length,
                                    const std::string& text,
                                    std::shared_ptr<std::promise<Status>> waiter) {
  if (phase != Phase::running) {
    waiter->set_value({Errc::closed, "connect to " + text + ": transport is closing"});
    return;
  }
  ucp_ep_params_t params = endpoint_params();
  params.field_mask |= UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
  params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&address);
  params.sockaddr.addrlen = length;
  ucp_ep_h ep = nullptr;
  if (ucs_status_t s = ucp_ep_create(worker, &params, &ep); s != UCS_OK) {
    waiter->set_value({errc_of(s) == Errc::internal ? Errc::unreachable : errc_of(s),
                       "connect to " + text + ": ucp_ep_create: " + status_text(s)});
    return;
  }
  Peer& peer = peers[id];
  peer.id = id;
  peer.ep = ep;
  peer.address = text;
  peer.state = PeerState::connecting;
  peer.connect_waiter = std::move(waiter);
  ep_peers[ep] = id;
  std::string self;
  {
    std::lock_guard lock(address_mutex);
    self = local_address;
  }
  send_control(peer, Kind::hello, self);
}

void UcxTransport::Impl::cancel_connect(PeerId id, const std::string& text) {
  Peer* peer = find_peer(id);
  if (peer == nullptr || peer->state != PeerState::connecting) {
    return;  // answered meanwhile (live or failed)
  }
  peer->state = PeerState::down;
  if (peer->connect_waiter) {
    peer->connect_waiter->set_value({Errc::timed_out, "connect to " + text + ": no answer"});
    peer->connect_waiter.reset();
  }
  // Nothing was exchanged on this endpoint: a force close harms no peer, while a flush close of
  // an endpoint that never connected fails noisily.
  request_close(*peer, true);
}

void UcxTransport::Impl::on_endpoint_error(ucp_ep_h ep, ucs_status_t status) {
  Peer* peer = peer_by_ep(ep);
  if (peer == nullptr) {
    return;
  }
  const std::string reason = status_text(status);
  if (peer->state == PeerState::connecting && peer->connect_waiter) {
    // Refused, reset, not connected: whatever the flavour, nobody answered.
    peer->connect_waiter->set_value(
        {Errc::unreachable, "connect to " + peer->address + ": " + reason});
    peer->connect_waiter.reset();
  }
  peer->failed = true;
  mark_down(*peer, PeerDown{false, reason}, peer->state == PeerState::live);
  // UCX requires a force close after an error; done outside this callback.
  request_close(*peer, true);
}

void UcxTransport::Impl::mark_down(Peer& peer, const PeerDown& why, bool notify) {
  if (peer.state == PeerState::down) {
    return;
  }
  peer.state = PeerState::down;
  drain_inbox(peer);  // drops what waits: nothing more is delivered from a down peer
  if (!notify || phase != Phase::running) {
    return;
  }
  peers_failed.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<const PeerFailureHandler> handler;
  {
    std::lock_guard lock(handler_mutex);
    handler = failure_handler;
  }
  if (handler && *handler) {
    try {
      (*handler)(peer.id, why);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sy::transport::ucx %s: peer-failure handler threw: %s\n",
                   options.name.c_str(), e.what());
    }
  }
}

void UcxTransport::Impl::request_close(Peer& peer, bool force) {
  if (peer.ep == nullptr) {
    return;
  }
  peer.close_wanted = true;
  peer.force_close = peer.force_close || force;
  closing_peers.insert(peer.id);
}

void UcxTransport::Impl::close_endpoint(Peer& peer) {
  // Remote keys go first: UCX requires them destroyed before their endpoint.
  for (auto& [key, rkey] : peer.rkeys) {
    ucp_rkey_destroy(rkey);
  }
  peer.rkeys.clear();
  ucp_ep_h ep = peer.ep;
  peer.ep = nullptr;
  ep_peers.erase(ep);
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  params.flags = peer.force_close ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t request = ucp_ep_close_nbx(ep, &params);
  if (UCS_PTR_IS_PTR(request)) {
    close_requests.push_back(request);
  }
}

void UcxTransport::Impl::begin_close(std::chrono::milliseconds timeout) {
  const auto now = Clock::now();
  phase = Phase::saying_bye;
  bye_deadline = now + timeout / 2;
  final_deadline = now + timeout;
  if (listener != nullptr) {
    ucp_listener_destroy(listener);
    listener = nullptr;
  }
  for (auto& [id, peer] : peers) {
    switch (peer.state) {
      case PeerState::live:
        peer.bye_sent = true;
        send_control(peer, Kind::bye, {});
        break;
      case PeerState::connecting:
        if (peer.connect_waiter) {
          peer.connect_waiter->set_value({Errc::closed, "connect to " + peer.address +
                                                            ": transport closed"});
          peer.connect_waiter.reset();
        }
        peer.state = PeerState::down;
        request_close(peer, options.error_mode == ErrorMode::peer);
        break;
      case PeerState::accepted:
        peer.state = PeerState::down;
        request_close(peer, options.error_mode == ErrorMode::peer);
        break;
      case PeerState::down:
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Operations

UcxTransport::Impl::Peer* UcxTransport::Impl::usable_peer(Op* op) {
  Peer* peer = find_peer(op->peer);
  Status status;
  if (phase != Phase::running) {
    status = {Errc::closed, op->what + " to " + describe(op->peer) + ": transport is closing"};
  } else if (peer == nullptr || peer->state == PeerState::accepted ||
             peer->state == PeerState::connecting) {
    status = {Errc::invalid_argument, op->what + " to peer " + std::to_string(op->peer) +
                                          ": unknown peer"};
  } else if (peer->state == PeerState::down || peer->ep == nullptr) {
    status = {Errc::peer_failed, op->what + " to " + describe(op->peer) + ": peer is down"};
  } else {
    return peer;
  }
  complete_inline(op->done, status);
  delete op;
  return nullptr;
}

void UcxTransport::Impl::submitted(Op* op, ucs_status_ptr_t request) {
  if (request == nullptr) {
    complete(op, UCS_OK);
  } else if (UCS_PTR_IS_ERR(request)) {
    complete(op, UCS_PTR_STATUS(request));
  } else {
    outstanding.insert(op);
    if (Peer* peer = find_peer(op->peer)) {
      ++peer->outstanding;
    }
  }
}

void UcxTransport::Impl::complete(Op* op, ucs_status_t status) {
  if (outstanding.erase(op) != 0) {
    if (Peer* peer = find_peer(op->peer)) {
      --peer->outstanding;
    }
  }
  Status result;
  if (status != UCS_OK) {
    Peer* peer = find_peer(op->peer);
    Errc code = errc_of(status);
    if (peer != nullptr && peer->state == PeerState::down && code == Errc::internal) {
      code = Errc::peer_failed;
    }
    result = {code, op->what + " to " + describe(op->peer) + ": " + status_text(status)};
  } else if (op->count == Op::Count::am) {
    am_sent.fetch_add(1, std::memory_order_relaxed);
  } else if (op->count == Op::Count::rma) {
    rma_ops.fetch_add(1, std::memory_order_relaxed);
  }
  if (op->done) {
    try {
      op->done(result);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sy::transport::ucx %s: completion of %s threw: %s\n",
                   options.name.c_str(), op->what.c_str(), e.what());
    }
  }
  delete op;
}

void UcxTransport::Impl::send_control(Peer& peer, Kind kind, const std::string& body) {
  auto* op = new Op{this, peer.id, "control message", {}, {}, Op::Count::none, false};
  WirePrefix prefix;
  prefix.kind = kind;
  op->header.resize(sizeof(prefix) + body.size());
  std::memcpy(op->header.data(), &prefix, sizeof(prefix));
  std::memcpy(op->header.data() + sizeof(prefix), body.data(), body.size());
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                        UCP_OP_ATTR_FIELD_FLAGS;
  params.cb.send = &Impl::on_op_done;
  params.user_data = op;
  params.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
  submitted(op, ucp_am_send_nbx(peer.ep, wire_am_id, op->header.data(), op->header.size(),
                                nullptr, 0, &params));
}

void UcxTransport::Impl::do_send(Op* op, AmId am_id, Bytes payload) {
  Peer* peer = usable_peer(op);
  if (peer == nullptr) {
    return;
  }
  WirePrefix prefix;
  prefix.am_id = am_id;
  std::memcpy(op->header.data(), &prefix, sizeof(prefix));
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                        UCP_OP_ATTR_FIELD_FLAGS;
  params.cb.send = &Impl::on_op_done;
  params.user_data = op;
  params.flags = UCP_AM_SEND_FLAG_REPLY;  // the receiver learns which endpoint it came from
  submitted(op, ucp_am_send_nbx(peer->ep, wire_am_id, op->header.data(), op->header.size(),
                                payload.data(), payload.size(), &params));
}

void UcxTransport::Impl::do_rma(Op* op, bool write, void* local, std::size_t size,
                                std::uint64_t remote_addr, const std::vector<std::byte>& key) {
  Peer* peer = usable_peer(op);
  if (peer == nullptr) {
    return;
  }
  auto [it, inserted] = peer->rkeys.try_emplace(key, nullptr);
  if (inserted) {
    if (ucs_status_t s = ucp_ep_rkey_unpack(peer->ep, key.data(), &it->second); s != UCS_OK) {
      peer->rkeys.erase(it);
      complete(op, s);
      return;
    }
  }
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.cb.send = &Impl::on_op_done;
  params.user_data = op;
  submitted(op, write ? ucp_put_nbx(peer->ep, local, size, remote_addr, it->second, &params)
                      : ucp_get_nbx(peer->ep, local, size, remote_addr, it->second, &params));
}

void UcxTransport::Impl::do_flush(Op* op) {
  Peer* peer = usable_peer(op);
  if (peer == nullptr) {
    return;
  }
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.cb.send = &Impl::on_op_done;
  params.user_data = op;
  submitted(op, ucp_ep_flush_nbx(peer->ep, &params));
}

// ---------------------------------------------------------------------------------------------
// Receiving

void UcxTransport::Impl::on_message(const WirePrefix& prefix, Bytes header, void* data,
                                    std::size_t length, const ucp_am_recv_param_t* param) {
  ucp_ep_h ep = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? param->reply_ep : nullptr;
  Peer* peer = peer_by_ep(ep);
  if (peer == nullptr) {
    malformed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  switch (prefix.kind) {
    case Kind::data:
      on_data(*peer, prefix.am_id, header, data, length,
              (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0);
      return;
    case Kind::hello: {
      if (peer->state != PeerState::accepted) {
        return;
      }
      if (!header.empty()) {
        peer->address.assign(reinterpret_cast<const char*>(header.data()), header.size());
      }
      peer->state = PeerState::live;
      send_control(*peer, Kind::hello_ack, {});
      std::shared_ptr<const PeerConnectHandler> handler;
      {
        std::lock_guard lock(handler_mutex);
        handler = connect_handler;
      }
      if (handler && *handler) {
        try {
          (*handler)(peer->id, peer->address);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "sy::transport::ucx %s: peer-connected handler threw: %s\n",
                       options.name.c_str(), e.what());
        }
      }
      return;
    }
    case Kind::hello_ack:
      if (peer->state == PeerState::connecting) {
        peer->state = PeerState::live;
        if (peer->connect_waiter) {
          peer->connect_waiter->set_value(Status::success());
          peer->connect_waiter.reset();
        }
      }
      return;
    case Kind::bye:
      if (peer->state == PeerState::live || peer->state == PeerState::accepted) {
        send_control(*peer, Kind::bye_ack, {});
        mark_down(*peer, PeerDown{true, "closed by peer"}, peer->state == PeerState::live);
        // Flush (the ack reaches the peer), then force-close: nothing more flows either way.
        auto* flush = new Op{this, peer->id, "flush after bye", {}, {}, Op::Count::none, false};
        ucp_request_param_t params{};
        params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        params.cb.send = &Impl::on_op_done;
        params.user_data = flush;
        submitted(flush, ucp_ep_flush_nbx(peer->ep, &params));
        request_close(*peer, true);  // once the flush is done
      }
      return;
    case Kind::bye_ack:
      peer->bye_acked = true;
      return;
  }
  malformed.fetch_add(1, std::memory_order_relaxed);
}

void UcxTransport::Impl::on_data(Peer& peer, AmId am_id, Bytes header, void* data,
                                 std::size_t length, bool rndv) {
  if (peer.state != PeerState::live) {
    return;  // a rendezvous we do not fetch completes the sender's request
  }
  if (!rndv && peer.inbox.empty()) {
    dispatch(peer.id, am_id, header, Bytes(static_cast<const std::byte*>(data), length));
    return;
  }
  auto in = std::make_unique<Inbound>();
  in->impl = this;
  in->peer = peer.id;
  in->am_id = am_id;
  in->header.assign(header.begin(), header.end());
  Inbound* raw = in.get();
  if (!rndv) {
    const auto* bytes = static_cast<const std::byte*>(data);
    in->payload.assign(bytes, bytes + length);
    in->ready = true;
    peer.inbox.push_back(std::move(in));
    drain_inbox(peer);
    return;
  }
  in->payload.resize(length);
  peer.inbox.push_back(std::move(in));
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.cb.recv_am = &Impl::on_recv_data;
  params.user_data = raw;
  ++rndv_started;
  ucs_status_ptr_t request = ucp_am_recv_data_nbx(worker, data, raw->payload.data(), length,
                                                  &params);
  if (request == nullptr || UCS_PTR_IS_ERR(request)) {
    raw->ready = true;
    raw->failed = request != nullptr;
    drain_inbox(peer);
  }
}

void UcxTransport::Impl::drain_inbox(Peer& peer) {
  while (!peer.inbox.empty() && peer.inbox.front()->ready) {
    std::unique_ptr<Inbound> in = std::move(peer.inbox.front());
    peer.inbox.pop_front();
    if (in->failed) {
      std::fprintf(stderr, "sy::transport::ucx %s: rendezvous receive of am %u from %s failed\n",
                   options.name.c_str(), in->am_id, describe(peer.id).c_str());
    } else if (peer.state == PeerState::live) {
      dispatch(peer.id, in->am_id, in->header, in->payload);
    }
  }
  // Not-ready entries of a down peer stay: their UCX receives still point at them and complete
  // (with an error) when the endpoint closes; the next drain drops them.
}

void UcxTransport::Impl::dispatch(PeerId from, AmId am_id, Bytes header, Bytes payload) {
  std::shared_ptr<const AmHandler> handler;
  {
    std::lock_guard lock(handler_mutex);
    if (auto it = handlers.find(am_id); it != handlers.end()) {
      handler = it->second;
    }
  }
  if (!handler) {
    am_dropped_no_handler.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  am_received.fetch_add(1, std::memory_order_relaxed);  // before: the handler may wake a reader
  try {
    (*handler)(from, header, payload);
  } catch (const std::exception& e) {
    handler_exceptions.fetch_add(1, std::memory_order_relaxed);
    std::fprintf(stderr, "sy::transport::ucx %s: handler for am %u from peer %llu threw: %s\n",
                 options.name.c_str(), am_id, static_cast<unsigned long long>(from), e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// The public face: every call becomes a command for the progress thread.

UcxTransport::UcxTransport(UcxOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->start();
}

UcxTransport::~UcxTransport() { close(std::chrono::seconds(2)); }

void UcxTransport::listen(const std::string& address) {
  const std::string what = "listen on " + address;
  socklen_t length = 0;
  const sockaddr_storage storage = parse_address(address, length, what);
  Impl* impl = impl_.get();
  const std::string bound = impl->run_sync<std::string>(
      [impl, storage, length, address] { return impl->do_listen(storage, length, address); },
      std::chrono::seconds(5), what);
  std::lock_guard lock(impl->address_mutex);
  impl->local_address = bound;
}

std::string UcxTransport::local_address() const {
  std::lock_guard lock(impl_->address_mutex);
  return impl_->local_address;
}

PeerId UcxTransport::connect(const std::string& address, std::chrono::milliseconds timeout) {
  const std::string what = "connect to " + address;
  Impl* impl = impl_.get();
  if (impl->on_progress_thread()) {
    throw TransportError(Errc::invalid_argument, what + ": called on the progress thread");
  }
  socklen_t length = 0;
  const sockaddr_storage storage = parse_address(address, length, what);
  const PeerId id = impl->next_peer.fetch_add(1);
  auto waiter = std::make_shared<std::promise<Status>>();
  auto answer = waiter->get_future();
  if (!impl->post([impl, id, storage, length, address, waiter] {
        impl->do_connect(id, storage, length, address, waiter);
      })) {
    throw TransportError(Errc::closed, what + ": transport is closed");
  }
  if (answer.wait_for(timeout) != std::future_status::ready) {
    // Withdraw; the progress thread decides whether the hello-ack beat us to it.
    if (!impl->post([impl, id, address] { impl->cancel_connect(id, address); }) ||
        answer.wait_for(std::chrono::seconds(2)) != std::future_status::ready) {
      throw TransportError(Errc::timed_out, what + ": no answer within " +
                                                std::to_string(timeout.count()) + " ms");
    }
  }
  Status status = answer.get();
  if (!status.ok()) {
    if (status.code == Errc::timed_out) {
      status.message += " within " + std::to_string(timeout.count()) + " ms";
    }
    throw TransportError(status.code, status.message);
  }
  return id;
}

void UcxTransport::set_handler(AmId id, AmHandler handler) {
  std::lock_guard lock(impl_->handler_mutex);
  if (handler) {
    impl_->handlers[id] = std::make_shared<const AmHandler>(std::move(handler));
  } else {
    impl_->handlers.erase(id);
  }
}

void UcxTransport::on_peer_failure(PeerFailureHandler handler) {
  std::lock_guard lock(impl_->handler_mutex);
  impl_->failure_handler = std::make_shared<const PeerFailureHandler>(std::move(handler));
}

void UcxTransport::on_peer_connected(PeerConnectHandler handler) {
  std::lock_guard lock(impl_->handler_mutex);
  impl_->connect_handler = std::make_shared<const PeerConnectHandler>(std::move(handler));
}

void UcxTransport::send(PeerId peer, AmId id, Bytes header, Bytes payload, Completion done) {
  Impl* impl = impl_.get();
  auto* op = new Impl::Op{impl, peer, "send am " + std::to_string(id), std::move(done), {},
                          Impl::Op::Count::am, false};
  op->header.resize(sizeof(WirePrefix) + header.size());
  if (!header.empty()) {
    std::memcpy(op->header.data() + sizeof(WirePrefix), header.data(), header.size());
  }
  if (!impl->post([impl, op, id, payload] { impl->do_send(op, id, payload); })) {
    impl->complete_inline(op->done, {Errc::closed, op->what + " to peer " +
                                                       std::to_string(peer) +
                                                       ": transport is closed"});
    delete op;
  }
}

namespace {

// ucp_mem_map (of `ptr`, or a new allocation when ptr is null), then the packed rkey.
std::unique_ptr<MemoryRegion> map_region(const std::shared_ptr<Context>& context, void* ptr,
                                         std::size_t size, const std::string& what) {
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = ptr;
  params.length = size;
  if (ptr == nullptr) {
    params.field_mask |= UCP_MEM_MAP_PARAM_FIELD_FLAGS;
    params.flags = UCP_MEM_MAP_ALLOCATE;
  }
  ucp_mem_h memh = nullptr;
  if (ucs_status_t s = ucp_mem_map(context->handle, &params, &memh); s != UCS_OK) {
    throw TransportError(Errc::internal, what + ": ucp_mem_map: " + status_text(s));
  }
  if (ptr == nullptr) {
    ucp_mem_attr_t attr{};
    attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
    if (ucs_status_t s = ucp_mem_query(memh, &attr); s != UCS_OK) {
      ucp_mem_unmap(context->handle, memh);
      throw TransportError(Errc::internal, what + ": ucp_mem_query: " + status_text(s));
    }
    ptr = attr.address;
    std::memset(ptr, 0, size);  // fresh shared memory is zero already; heap fallbacks are not
  }
  void* packed = nullptr;
  std::size_t packed_size = 0;
  if (ucs_status_t s = ucp_rkey_pack(context->handle, memh, &packed, &packed_size);
      s != UCS_OK) {
    ucp_mem_unmap(context->handle, memh);
    throw TransportError(Errc::internal, what + ": ucp_rkey_pack: " + status_text(s));
  }
  const auto* bytes = static_cast<const std::byte*>(packed);
  std::vector<std::byte> key(bytes, bytes + packed_size);
  ucp_rkey_buffer_release(packed);
  // For an allocated region ucp_mem_unmap (in ~UcxRegion) also frees the memory.
  return std::make_unique<UcxRegion>(context, memh, static_cast<std::byte*>(ptr), size,
                                     std::move(key));
}

}  // namespace

std::unique_ptr<MemoryRegion> UcxTransport::register_memory(void* ptr, std::size_t size) {
  if (ptr == nullptr || size == 0) {
    throw TransportError(Errc::invalid_argument, "register_memory: null or empty region");
  }
  return map_region(impl_->context, ptr, size,
                    "register_memory of " + std::to_string(size) + " bytes");
}

std::unique_ptr<MemoryRegion> UcxTransport::allocate_memory(std::size_t size) {
  if (size == 0) {
    throw TransportError(Errc::invalid_argument, "allocate_memory: empty region");
  }
  return map_region(impl_->context, nullptr, size,
                    "allocate_memory of " + std::to_string(size) + " bytes");
}

void UcxTransport::put(PeerId peer, const void* local, std::size_t size, std::uint64_t remote_addr,
                       Bytes remote_key, Completion done) {
  Impl* impl = impl_.get();
  auto* op = new Impl::Op{impl, peer, "put of " + std::to_string(size) + " bytes",
                          std::move(done), {}, Impl::Op::Count::rma, false};
  std::vector<std::byte> key(remote_key.begin(), remote_key.end());
  // ucp_put_nbx takes a const buffer; the cast only lets put and get share do_rma.
  void* buffer = const_cast<void*>(local);
  if (!impl->post([impl, op, buffer, size, remote_addr, key = std::move(key)] {
        impl->do_rma(op, true, buffer, size, remote_addr, key);
      })) {
    impl->complete_inline(op->done, {Errc::closed, op->what + ": transport is closed"});
    delete op;
  }
}

void UcxTransport::get(PeerId peer, void* local, std::size_t size, std::uint64_t remote_addr,
                       Bytes remote_key, Completion done) {
  Impl* impl = impl_.get();
  auto* op = new Impl::Op{impl, peer, "get of " + std::to_string(size) + " bytes",
                          std::move(done), {}, Impl::Op::Count::rma, false};
  std::vector<std::byte> key(remote_key.begin(), remote_key.end());
  if (!impl->post([impl, op, local, size, remote_addr, key = std::move(key)] {
        impl->do_rma(op, false, local, size, remote_addr, key);
      })) {
    impl->complete_inline(op->done, {Errc::closed, op->what + ": transport is closed"});
    delete op;
  }
}

void UcxTransport::flush(PeerId peer, Completion done) {
  Impl* impl = impl_.get();
  auto* op = new Impl::Op{impl, peer, "flush", std::move(done), {}, Impl::Op::Count::none, false};
  if (!impl->post([impl, op] { impl->do_flush(op); })) {
    impl->complete_inline(op->done, {Errc::closed, "flush: transport is closed"});
    delete op;
  }
}

void UcxTransport::close(std::chrono::milliseconds timeout) {
  Impl* impl = impl_.get();
  if (impl->on_progress_thread()) {
    throw TransportError(Errc::invalid_argument, "close: called on the progress thread");
  }
  if (!impl->close_called.exchange(true)) {
    {
      std::lock_guard lock(impl->queue_mutex);
      // The last command; everything posted before it runs first, nothing after it is taken.
      impl->commands.push_back([impl, timeout] { impl->begin_close(timeout); });
      impl->has_commands.store(true, std::memory_order_release);
      impl->accepting = false;
      impl->sleeping = false;
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto written = ::write(impl->wake_fd, &one, sizeof(one));
  }
  std::lock_guard lock(impl->join_mutex);
  if (impl->thread.joinable()) {
    impl->thread.join();  // the loop ends by the close deadline
  }
}

TransportStats UcxTransport::stats() const {
  TransportStats s;
  s.am_sent = impl_->am_sent.load();
  s.am_received = impl_->am_received.load();
  s.am_dropped_no_handler = impl_->am_dropped_no_handler.load();
  s.handler_exceptions = impl_->handler_exceptions.load();
  s.rma_ops = impl_->rma_ops.load();
  s.peers_failed = impl_->peers_failed.load();
  return s;
}

}  // namespace sy::transport::ucx
