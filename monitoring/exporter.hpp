// Serves a Registry as Prometheus text at http://ADDRESS/metrics (GET; prometheus-cpp answers
// HEAD with 404). One per process, built by main next to the Registry; the node's address comes
// from its config's host and metrics_port (loopback unless configured otherwise).
// Threading: prometheus-cpp's civetweb threads call Registry::Collect; destroying the Exporter
// stops them. The Registry must outlive the Exporter (it is held weakly).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "monitoring/metrics.hpp"

namespace prometheus {
class Exposer;
}

namespace sy::monitoring {

class Exporter {
 public:
  // Listens on `address` ("HOST:PORT"; port 0 picks a free one) and serves `registry`. Throws
  // std::runtime_error naming the address when it cannot listen.
  Exporter(const std::string& address, const std::shared_ptr<Registry>& registry);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  std::uint16_t port() const;  // the port actually bound
  std::string url() const;     // "http://HOST:PORT/metrics"

 private:
  std::string host_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace sy::monitoring
