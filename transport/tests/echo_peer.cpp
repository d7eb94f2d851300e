// The child process of the multi-process transport test (multiprocess.test.cpp): listens over
// UCX tcp (error mode PEER), echoes every AM 1 back as AM 2 with the same header and payload, and
// serves a registered 1 MiB region whose bytes start as (i * 7 + 3) mod 256. It prints
//   READY <address> <region address> <packed key in hex>
// on stdout, then serves until the parent goes away (or 60 s pass). Single-threaded apart from
// the transport's progress thread.
#include <sys/prctl.h>

#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "transport/ucx/ucx_transport.hpp"

namespace {

namespace tr = sy::transport;

int serve() {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
  tr::ucx::UcxOptions options;
  options.error_mode = tr::ucx::ErrorMode::peer;
  options.config = {{"TLS", "tcp"}, {"NET_DEVICES", "lo"}};
  options.name = "echo_peer";
  tr::ucx::UcxTransport transport(options);
  transport.listen("127.0.0.1:0");

  std::vector<std::byte> region(std::size_t{1} << 20);
  for (std::size_t i = 0; i < region.size(); ++i) {
    region[i] = static_cast<std::byte>((i * 7 + 3) & 0xff);
  }
  auto registered = transport.register_memory(region.data(), region.size());

  std::mutex mutex;
  std::condition_variable cv;
  bool parent_gone = false;
  transport.set_handler(1, [&transport](tr::PeerId from, tr::Bytes header, tr::Bytes payload) {
    // The payload span dies with this call; the echo needs it until its completion.
    auto copy = std::make_shared<std::vector<std::byte>>(payload.begin(), payload.end());
    transport.send(from, 2, header, *copy, [copy](const tr::Status&) {});
  });
  transport.on_peer_failure([&](tr::PeerId, const tr::PeerDown&) {
    std::lock_guard lock(mutex);
    parent_gone = true;
    cv.notify_all();
  });

  std::string key;
  for (std::byte b : registered->packed_key()) {
    char hex[3];
    std::snprintf(hex, sizeof(hex), "%02x", static_cast<unsigned>(b));
    key += hex;
  }
  std::printf("READY %s %llu %s\n", transport.local_address().c_str(),
              static_cast<unsigned long long>(registered->remote_address()), key.c_str());
  std::fflush(stdout);

  std::unique_lock lock(mutex);
  cv.wait_for(lock, std::chrono::seconds(60), [&] { return parent_gone; });
  lock.unlock();
  registered.reset();
  transport.close(std::chrono::seconds(1));
  return 0;
}

}  // namespace

int main() {
  try {
    return serve();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_peer: %s\n", e.what());
    return 1;
  }
}
