// The web console's endpoints as values (HttpHandlers::Handle): its files, status, top refused
// keys, the simulator and validation. Sockets are left to http_server_test.cc.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "floodgate/store.h"
#include "src/admin/node_admin.h"
#include "src/frontends/http/http_handlers.h"
#include "src/frontends/http/ui_assets.h"
#include "testing/fake_clock.h"
#include "testing/limiter_helpers.h"

namespace floodgate::frontends {
namespace {

namespace http = boost::beast::http;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int64_t kSec = 1'000'000'000;
constexpr char kYaml[] =
    "domain: api\n"
    "descriptors:\n"
    "  - key: user\n"
    "    rate_limit: {unit: minute, requests_per_unit: 1}\n"
    "    descriptors:\n"
    "      - {key: path, rate_limit: {unit: second, requests_per_unit: 5}}\n";

class ConsoleHandlersTest : public ::testing::Test {
 protected:
  ConsoleHandlersTest() : top_(&clock_) {
    clock_.Set(floodgate::testing::kMinuteStartNs);
    store_ = *NewShardedStore({});
    limiter::LimiterOptions options;
    options.clock = &clock_;
    limiter_ = std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 2),
                                                  floodgate::testing::MakeConfig(kYaml), options);
    service_ = service::NewRateLimitService(limiter_.get(), service::RequestLimits(), &metrics_, {},
                                            &top_);
    admin_ = std::make_unique<admin::NodeAdmin>(nullptr, limiter_.get(), &metrics_);
    admin_->SetNodeInfo(
        admin::NodeInfo{"1.2.3", clock_.NowNs() - 90 * kSec, 1 << 20, &clock_, &top_});
    handlers_ = std::make_unique<HttpHandlers>("", service_.get(), admin_.get(), &metrics_.http);
  }

  HttpReply Handle(http::verb method, std::string_view target, std::string_view body = "",
                   bool draining = false) {
    return handlers_->Handle(HttpRequest{.method = method,
                                         .target = target,
                                         .body = body,
                                         .from_loopback = [] { return true; },
                                         .draining = draining},
                             scratch_);
  }
  static std::string Header(const HttpReply& reply, std::string_view name) {
    for (const auto& [key, value] : reply.headers) {
      if (key == name) {
        return value;
      }
    }
    return "";
  }

  floodgate::testing::FakeClock clock_;
  service::TopRefused top_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  service::ServerMetrics metrics_;
  std::unique_ptr<service::RateLimitService> service_;
  std::unique_ptr<admin::NodeAdmin> admin_;
  std::unique_ptr<HttpHandlers> handlers_;
  HttpScratch scratch_;
};

TEST_F(ConsoleHandlersTest, ServesTheEmbeddedFilesWithAStrictPolicy) {
  ASSERT_NE(http_internal::FindUiAsset("index.html"), nullptr);  // ui/index.html, embedded

  HttpReply redirect = Handle(http::verb::get, "/ui");
  EXPECT_EQ(redirect.status, 308);
  EXPECT_EQ(Header(redirect, "Location"), "/ui/");

  for (std::string_view target : {"/ui/", "/ui/index.html"}) {
    HttpReply page = Handle(http::verb::get, target);
    EXPECT_EQ(page.status, 200) << target;
    EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
    EXPECT_EQ(page.body, http_internal::FindUiAsset("index.html")->content);
    EXPECT_EQ(Header(page, "Cache-Control"), "no-cache");
    EXPECT_EQ(Header(page, "Content-Security-Policy"),
              "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
              "connect-src 'self'");
  }
  // Only embedded names match: nothing is read from disk.
  for (std::string_view target : {"/ui/../CMakeLists.txt", "/ui/nope.js", "/ui//index.html",
                                  "/ui/%2e%2e/CMakeLists.txt", "/ui/index.html/"}) {
    HttpReply missing = Handle(http::verb::get, target);
    EXPECT_EQ(missing.status, 404) << target;
    EXPECT_THAT(missing.body, StartsWith("{\"error\":\"no such console file")) << target;
  }
  EXPECT_EQ(Handle(http::verb::post, "/ui/").status, 405);
  // Not a rate limit call: counted as an HTTP request, never by the pipeline's checks.
  EXPECT_FALSE(HttpHandlers::IsRateLimitCall("/ui/"));
}

TEST(UiContentTypeTest, ByExtension) {
  EXPECT_EQ(http_internal::UiContentType("a.js"), "text/javascript; charset=utf-8");
  EXPECT_EQ(http_internal::UiContentType("a.css"), "text/css; charset=utf-8");
  EXPECT_EQ(http_internal::UiContentType("img/a.svg"), "image/svg+xml");
  EXPECT_EQ(http_internal::UiContentType("a.png"), "image/png");
  EXPECT_EQ(http_internal::UiContentType("a.json"), "application/json");
  EXPECT_EQ(http_internal::UiContentType("a.bin"), "application/octet-stream");
}

TEST_F(ConsoleHandlersTest, StatusDescribesThisNode) {
  HttpReply status = Handle(http::verb::get, "/v1/status");
  EXPECT_EQ(status.status, 200);
  EXPECT_EQ(status.body,
            "{\"node_id\":null,\"version\":\"1.2.3\",\"uptime_seconds\":90,\"started_at\":" +
                std::to_string(clock_.NowNs() / kSec - 90) +
                ",\"config_version\":1,\"domains\":1,\"keys\":0,\"bytes\":0,"
                "\"cap_bytes\":1048576,\"cluster\":false,\"draining\":false}");
  EXPECT_THAT(Handle(http::verb::get, "/v1/status", "", /*draining=*/true).body,
              HasSubstr("\"draining\":true}"));
}

TEST_F(ConsoleHandlersTest, TopListsTheRefusedDescriptors) {
  for (int i = 0; i < 4; ++i) {
    Handle(http::verb::get, "/v1/check?domain=api&user=alice");  // 1 allowed, 3 refused
  }
  Handle(http::verb::get, "/v1/check?domain=api&user=bob");
  Handle(http::verb::get, "/v1/check?domain=api&user=bob");
  HttpReply top = Handle(http::verb::get, "/v1/top?n=1");
  EXPECT_EQ(top.status, 200) << top.body;
  EXPECT_EQ(top.body,
            "{\"window_seconds\":60,\"nodes\":[],\"missing\":[],\"keys\":[{\"domain\":\"api\","
            "\"descriptor\":\"user=alice\",\"refused\":3,\"error\":0}],\"refusals\":4}");
  EXPECT_THAT(Handle(http::verb::get, "/v1/top").body, HasSubstr("user=bob"));
  for (std::string_view bad : {"/v1/top?n=0", "/v1/top?n=101", "/v1/top?n=x", "/v1/top?m=1"}) {
    EXPECT_EQ(Handle(http::verb::get, bad).status, 400) << bad;
  }
  clock_.Advance(70 * kSec);
  EXPECT_THAT(Handle(http::verb::get, "/v1/top").body, HasSubstr("\"keys\":[]"));
}

TEST_F(ConsoleHandlersTest, SimulateReplaysATrace) {
  HttpReply reply = Handle(http::verb::post, "/v1/simulate",
                           R"({"limit":10,"period_seconds":60,"shape":"edge","rate":20,)"
                           R"("duration_seconds":120,"step_seconds":60})");
  EXPECT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.body,
            "{\"steps\":[0,60],\"offered\":[20,20],\"algorithms\":{"
            "\"fixed_window\":{\"admitted\":[10,10],\"total\":20},"
            "\"sliding_window\":{\"admitted\":[10,0],\"total\":10},"
            "\"token_bucket\":{\"admitted\":[10,0],\"total\":10},"
            "\"leaky_bucket\":{\"admitted\":[10,0],\"total\":10}}}");
  HttpReply bad = Handle(http::verb::post, "/v1/simulate", R"({"limit":10,"shape":"zigzag"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("unknown shape 'zigzag'"));
  bad = Handle(http::verb::post, "/v1/simulate", R"({"limit":10,"colour":1})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("period_seconds"));  // the fields as the caller writes them
  bad = Handle(http::verb::post, "/v1/simulate",
               R"({"limit":10,"period_seconds":1,"shape":"steady","rate":100000,)"
               R"("duration_seconds":60})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("at most 100000"));
}

TEST_F(ConsoleHandlersTest, ValidateChecksWithoutApplying) {
  HttpReply ok = Handle(http::verb::post, "/v1/validate/api",
                        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, "
                        "requests_per_unit: 1}\n");
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.body, "{\"valid\":true,\"domain\":\"api\",\"descriptors\":1}");
  EXPECT_EQ(limiter_->config()->version, 1u);  // nothing applied

  HttpReply bad = Handle(http::verb::post, "/v1/validate/api",
                         "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: "
                         "fortnight, requests_per_unit: 1}\n");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, StartsWith("{\"valid\":false,\"error\":\"body:4: "));
  EXPECT_THAT(bad.body, HasSubstr(",\"line\":4}"));

  HttpReply other = Handle(http::verb::post, "/v1/validate/api", "domain: web\n");
  EXPECT_EQ(other.status, 400);
  EXPECT_THAT(other.body, HasSubstr("does not match the path's 'api'"));
  EXPECT_THAT(other.body, ::testing::Not(HasSubstr("\"line\"")));
  EXPECT_EQ(Handle(http::verb::get, "/v1/validate/api").status, 405);
}

}  // namespace
}  // namespace floodgate::frontends
