#include "monitoring/metrics.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <stdexcept>
#include <string>

#include "monitoring/exporter.hpp"

namespace sy::monitoring {
namespace {

// GET http://127.0.0.1:PORT/metrics; returns the whole response (status line, headers, body).
std::string http_get(std::uint16_t port, const std::string& method = "GET") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string request = method + " /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  EXPECT_EQ(::write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

TEST(MetricTable, NamesAreUniqueAndFindable) {
  std::set<std::string_view> names;
  for (const MetricInfo& m : table()) {
    EXPECT_TRUE(names.insert(m.name).second) << m.name;
    ASSERT_EQ(find(m.name), &m);
    EXPECT_EQ(&info(m.metric), &m);
  }
  EXPECT_EQ(table().size(), metric_count);
  EXPECT_EQ(find("switchyard_no_such_metric"), nullptr);
  EXPECT_NE(table_text().find("switchyard_node_up gauge bool labels=node,roles"), std::string::npos);
}

TEST(MetricTable, LabelsTakeExactlyTheTablesNames) {
  const prometheus::Labels l = labels(Metric::transport_bytes, {"decode0", "in"});
  EXPECT_EQ(l.at("peer"), "decode0");
  EXPECT_EQ(l.at("direction"), "in");
  EXPECT_THROW(labels(Metric::transport_bytes, {"decode0"}), std::invalid_argument);
  EXPECT_TRUE(labels(Metric::node_bad_frames, {}).empty());
}

TEST(Registry, FamiliesComeFromTheTableAndCheckTheType) {
  Registry registry;
  auto& up = registry.gauge(Metric::node_up);
  EXPECT_EQ(&up, &registry.gauge(Metric::node_up));  // registered once
  EXPECT_THROW(registry.counter(Metric::node_up), std::logic_error);
  EXPECT_THROW(registry.buckets(Metric::node_up), std::logic_error);
  up.Add(labels(Metric::node_up, {"router", "router"})).Set(1);
  registry.histogram(Metric::time_to_first_token)
      .Add({}, Registry::buckets(Metric::time_to_first_token))
      .Observe(0.2);
  const auto families = registry.Collect();
  ASSERT_EQ(families.size(), 2u);
  for (const auto& f : families) {
    const MetricInfo* m = find(f.name);
    ASSERT_NE(m, nullptr) << f.name;
    EXPECT_EQ(f.help, m->help);
  }
}

class FixedCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily f = Registry::describe(Metric::node_bad_frames);
    prometheus::ClientMetric c;
    c.counter.value = 7;
    f.metric.push_back(c);
    return {f};
  }
};

TEST(Exporter, ServesFamiliesAndCollectorsOverHttpGet) {
  auto registry = std::make_shared<Registry>();
  auto collector = std::make_shared<FixedCollector>();
  registry->add_collector(collector);
  registry->gauge(Metric::node_up).Add(labels(Metric::node_up, {"n0", "decode"})).Set(1);
  const Exporter exporter("127.0.0.1:0", registry);
  ASSERT_NE(exporter.port(), 0);
  EXPECT_EQ(exporter.url(), "http://127.0.0.1:" + std::to_string(exporter.port()) + "/metrics");
  const std::string text = http_get(exporter.port());
  EXPECT_NE(text.find("200 OK"), std::string::npos) << text;
  EXPECT_NE(text.find("switchyard_node_up{node=\"n0\",roles=\"decode\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("switchyard_node_bad_frames_total 7"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE switchyard_node_bad_frames_total counter"), std::string::npos) << text;
  collector.reset();  // a dropped collector disappears from the next scrape
  EXPECT_EQ(http_get(exporter.port()).find("switchyard_node_bad_frames_total"), std::string::npos);
}

TEST(Exporter, NamesTheAddressItCannotBind) {
  auto registry = std::make_shared<Registry>();
  const Exporter first("127.0.0.1:0", registry);
  const std::string taken = "127.0.0.1:" + std::to_string(first.port());
  try {
    const Exporter second(taken, registry);
    FAIL() << "bound a taken port";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(taken), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sy::monitoring
