#include "monitoring/exporter.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include <prometheus/exposer.h>

namespace sy::monitoring {

Exporter::Exporter(const std::string& address, const std::shared_ptr<Registry>& registry) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw std::runtime_error(fmt::format("metrics address '{}': expected HOST:PORT", address));
  }
  host_ = address.substr(0, colon);
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address, 2);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("cannot serve metrics on {}: {}", address, e.what()));
  }
  exposer_->RegisterCollectable(registry);
}

Exporter::~Exporter() = default;

std::uint16_t Exporter::port() const {
  const auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : static_cast<std::uint16_t>(ports.front());
}

std::string Exporter::url() const { return fmt::format("http://{}:{}/metrics", host_, port()); }

}  // namespace sy::monitoring
