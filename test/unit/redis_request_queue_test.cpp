#include "stargazer/core/error.hpp"
#include "stargazer/redis/reply.hpp"

// Private to src/redis, which is not on the tests' include path.
#include "../../src/redis/request_queue.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <string>
#include <vector>

using namespace stargazer;
using namespace stargazer::redis;
using namespace std::chrono_literals;
using detail::request_queue;

namespace {

using disposition = request_queue::reply_disposition;
using strings = std::vector<std::string>;

// What a request's completion callback was told.
struct outcome {
  int calls = 0;
  std::error_code ec;
  std::vector<reply> replies;
};

// Records completions by request name, in the order they happen.
struct recorder {
  std::map<std::string, outcome> by_name;
  strings order;

  // A request whose payload is its name (the queue never looks into payloads).
  request_queue::item item(const std::string& name, std::size_t expected = 1) {
    request_queue::item it;
    it.payload = name;
    it.expected = expected;
    it.on_complete = [this, name](std::error_code ec, std::vector<reply> replies) {
      auto& o = by_name[name];
      ++o.calls;
      o.ec = ec;
      o.replies = std::move(replies);
      order.push_back(name);
    };
    return it;
  }
  bool done(const std::string& name) const { return by_name.count(name) != 0; }
  const outcome& at(const std::string& name) const { return by_name.at(name); }
};

std::error_code code(errc e) { return make_error_code(e); }

strings payloads(const request_queue::write_batch& b) {
  strings out;
  for (std::size_t i = 0; i < b.size(); ++i) out.push_back(b.payload(i));
  return out;
}

// Takes what is writable and reports the write as done; returns what was written.
strings write(request_queue& q) {
  auto batch = q.take_writable();
  auto out = payloads(batch);
  q.written(std::move(batch));
  return out;
}

disposition feed(request_queue& q, reply r) { return q.on_reply(r); }

reply status(std::string s) { return reply::make_status(std::move(s)); }

reply array_of(const strings& bulks) {
  std::vector<reply> e;
  for (const auto& b : bulks) e.push_back(reply::make_bulk(b));
  return reply::make_array(std::move(e));
}

strings texts(const std::vector<reply>& replies) {
  strings out;
  for (const auto& r : replies) out.push_back(r.str());
  return out;
}

// A queue on a link past its handshake.
void bring_up(request_queue& q) {
  q.connected();
  q.handshake_done();
}

}  // namespace

TEST_CASE("pipelined requests are written together and complete in order with their own replies", "[redis][queue]") {
  recorder rec;
  request_queue q;
  bring_up(q);
  CHECK(q.enqueue(rec.item("A")));
  CHECK(q.enqueue(rec.item("B")));
  CHECK(q.enqueue(rec.item("C")));
  CHECK(q.waiting() == 3);

  CHECK(write(q) == strings{"A", "B", "C"});
  CHECK(q.waiting() == 0);
  CHECK(q.in_flight() == 3);
  CHECK(rec.order.empty());

  CHECK(feed(q, status("a")) == disposition::matched);
  CHECK(rec.order == strings{"A"});
  CHECK(feed(q, status("b")) == disposition::matched);
  CHECK(feed(q, status("c")) == disposition::matched);
  CHECK(rec.order == strings{"A", "B", "C"});
  for (const auto& [name, text] : std::map<std::string, std::string>{{"A", "a"}, {"B", "b"}, {"C", "c"}}) {
    INFO(name);
    CHECK(rec.at(name).calls == 1);
    CHECK_FALSE(rec.at(name).ec);
    CHECK(texts(rec.at(name).replies) == strings{text});
  }
  CHECK(q.in_flight() == 0);
  CHECK(q.take_writable().empty());
}

TEST_CASE("a request of several commands completes on its last reply", "[redis][queue]") {
  recorder rec;
  request_queue q;
  bring_up(q);
  q.enqueue(rec.item("A", 3));
  q.enqueue(rec.item("B"));
  CHECK(write(q) == strings{"A", "B"});

  CHECK(feed(q, status("a1")) == disposition::matched);
  CHECK(feed(q, status("a2")) == disposition::matched);
  CHECK_FALSE(rec.done("A"));
  CHECK(q.in_flight() == 2);
  CHECK(feed(q, status("a3")) == disposition::matched);
  REQUIRE(rec.done("A"));
  CHECK(texts(rec.at("A").replies) == strings{"a1", "a2", "a3"});
  CHECK_FALSE(rec.done("B"));

  CHECK(feed(q, status("b")) == disposition::matched);
  CHECK(texts(rec.at("B").replies) == strings{"b"});
}

TEST_CASE("replies that arrive before the write is reported complete are matched", "[redis][queue]") {
  recorder rec;
  request_queue q;
  bring_up(q);
  q.enqueue(rec.item("A"));
  q.enqueue(rec.item("S", 0));  // expects no reply (SUBSCRIBE in subscriber mode)

  auto batch = q.take_writable();
  CHECK(payloads(batch) == strings{"A", "S"});
  CHECK(q.in_flight() == 1);  // A only: S awaits no reply

  CHECK(feed(q, status("a")) == disposition::matched);
  REQUIRE(rec.done("A"));
  CHECK(texts(rec.at("A").replies) == strings{"a"});
  CHECK_FALSE(rec.done("S"));  // completes when its write does

  q.written(std::move(batch));
  REQUIRE(rec.done("S"));
  CHECK_FALSE(rec.at("S").ec);
  CHECK(rec.at("S").replies.empty());
  CHECK(rec.at("A").calls == 1);
  CHECK(rec.order == strings{"A", "S"});
  CHECK(feed(q, status("stray")) == disposition::unsolicited);
}

TEST_CASE("an overdue unwritten request is removed with a timeout and never written", "[redis][queue]") {
  const auto t0 = request_queue::clock_type::now();
  recorder rec;
  request_queue q;  // no link yet: requests wait
  auto a = rec.item("A");
  a.deadline = t0 + 1s;
  auto b = rec.item("B");
  b.deadline = t0 + 10s;
  q.enqueue(std::move(a));
  q.enqueue(std::move(b));

  CHECK_FALSE(q.expire(t0 + 500ms));
  CHECK(rec.order.empty());
  CHECK_FALSE(q.expire(t0 + 1s));  // due at its deadline; not in flight, so no head reported
  REQUIRE(rec.done("A"));
  CHECK(rec.at("A").ec == code(errc::timeout));
  CHECK_FALSE(rec.done("B"));
  CHECK(q.waiting() == 1);

  bring_up(q);
  CHECK(write(q) == strings{"B"});
}

TEST_CASE("a timed-out written request is abandoned: its late replies are absorbed", "[redis][queue]") {
  const auto t0 = request_queue::clock_type::now();
  recorder rec;
  request_queue q;
  bring_up(q);
  auto x = rec.item("X");
  x.deadline = t0 + 10s;
  auto a = rec.item("A", 2);
  a.deadline = t0 + 1s;
  auto b = rec.item("B");
  b.deadline = t0 + 10s;
  q.enqueue(std::move(x));
  q.enqueue(std::move(a));
  q.enqueue(std::move(b));
  CHECK(write(q) == strings{"X", "A", "B"});

  CHECK_FALSE(q.expire(t0 + 2s));  // A is not the head: the link is not known to be stuck
  REQUIRE(rec.done("A"));
  CHECK(rec.at("A").ec == code(errc::timeout));
  CHECK(rec.at("A").replies.empty());
  CHECK(q.in_flight() == 3);  // A keeps its place until its replies come

  CHECK(feed(q, status("x")) == disposition::matched);
  CHECK(texts(rec.at("X").replies) == strings{"x"});
  CHECK(feed(q, status("a1")) == disposition::absorbed);
  CHECK(feed(q, status("a2")) == disposition::absorbed);
  CHECK(rec.at("A").calls == 1);
  CHECK(q.in_flight() == 1);
  CHECK_FALSE(rec.done("B"));

  CHECK(feed(q, status("b")) == disposition::matched);
  CHECK_FALSE(rec.at("B").ec);
  CHECK(texts(rec.at("B").replies) == strings{"b"});
  CHECK(rec.order == strings{"A", "X", "B"});
}

TEST_CASE("an overdue head of the in-flight queue is reported once", "[redis][queue]") {
  const auto t0 = request_queue::clock_type::now();
  recorder rec;
  request_queue q;
  bring_up(q);
  auto a = rec.item("A", 2);
  a.deadline = t0 + 1s;
  auto b = rec.item("B");
  b.deadline = t0 + 1s;
  q.enqueue(std::move(a));
  q.enqueue(std::move(b));
  write(q);
  CHECK(feed(q, status("a1")) == disposition::matched);  // half answered

  CHECK_FALSE(q.expire(t0 + 999ms));
  CHECK(rec.order.empty());
  CHECK(q.expire(t0 + 1s));
  CHECK(rec.at("A").ec == code(errc::timeout));
  CHECK(rec.at("A").replies.empty());  // no partial replies with an error
  CHECK(rec.at("B").ec == code(errc::timeout));
  CHECK_FALSE(q.expire(t0 + 5s));  // already abandoned: not reported again

  CHECK(feed(q, status("a2")) == disposition::absorbed);  // completes A's count of replies
  CHECK(feed(q, status("b")) == disposition::absorbed);
  CHECK(q.in_flight() == 0);
  CHECK(feed(q, status("late")) == disposition::unsolicited);
  CHECK(rec.at("A").calls == 1);
  CHECK(rec.at("B").calls == 1);
}

TEST_CASE("a lost connection fails written requests and keeps unwritten ones", "[redis][queue]") {
  const auto t0 = request_queue::clock_type::now();
  recorder rec;
  request_queue q;
  bring_up(q);

  SECTION("plain requests") {
    auto t = rec.item("T");
    t.deadline = t0 + 1s;
    q.enqueue(rec.item("A"));
    q.enqueue(std::move(t));
    write(q);
    CHECK_FALSE(q.expire(t0 + 2s));  // T abandoned
    q.enqueue(rec.item("W"));        // not written yet

    q.connection_lost(code(errc::protocol_error));
    CHECK_FALSE(q.ready());
    CHECK_FALSE(q.link_up());
    CHECK(rec.at("A").ec == code(errc::connection_lost));
    CHECK(rec.at("T").calls == 1);  // abandoned earlier: not completed again
    CHECK(rec.at("T").ec == code(errc::timeout));
    CHECK_FALSE(rec.done("W"));
    CHECK(q.in_flight() == 0);
    CHECK(q.waiting() == 1);
    CHECK(q.take_writable().empty());  // no link, nothing to write on

    q.connection_lost(code(errc::protocol_error));  // already down: nothing changes
    CHECK(q.waiting() == 1);

    bring_up(q);
    CHECK(write(q) == strings{"W"});
    CHECK(feed(q, status("w")) == disposition::matched);
    CHECK(texts(rec.at("W").replies) == strings{"w"});
  }

  SECTION("retry_if_sent requests go back to the front of the queue") {
    auto r = rec.item("R", 2);
    r.retry_if_sent = true;
    q.enqueue(std::move(r));
    q.enqueue(rec.item("P"));
    write(q);
    q.enqueue(rec.item("U"));
    CHECK(feed(q, status("r1-old")) == disposition::matched);

    q.connection_lost(code(errc::connection_lost));
    CHECK_FALSE(rec.done("R"));
    CHECK(rec.at("P").ec == code(errc::connection_lost));
    CHECK(q.waiting() == 2);

    bring_up(q);
    CHECK(write(q) == strings{"R", "U"});  // resent first, payload intact
    CHECK(feed(q, status("r1")) == disposition::matched);
    CHECK(feed(q, status("r2")) == disposition::matched);
    REQUIRE(rec.done("R"));
    CHECK_FALSE(rec.at("R").ec);
    CHECK(texts(rec.at("R").replies) == strings{"r1", "r2"});  // the lost link's reply is gone
    CHECK(feed(q, status("u")) == disposition::matched);
    CHECK(texts(rec.at("U").replies) == strings{"u"});
  }

  SECTION("fail_if_disconnected requests never wait for a link") {
    auto written = rec.item("F-written");
    written.fail_if_disconnected = true;
    q.enqueue(std::move(written));
    write(q);
    auto waiting = rec.item("F-waiting");
    waiting.fail_if_disconnected = true;
    CHECK(q.enqueue(std::move(waiting)));
    q.enqueue(rec.item("W"));

    q.connection_lost(code(errc::timeout));
    CHECK(rec.at("F-written").ec == code(errc::connection_lost));
    CHECK(rec.at("F-waiting").ec == code(errc::not_connected));
    CHECK_FALSE(rec.done("W"));
    CHECK(q.waiting() == 1);

    auto down = rec.item("F-down");
    down.fail_if_disconnected = true;
    CHECK_FALSE(q.enqueue(std::move(down)));
    CHECK(rec.at("F-down").ec == code(errc::not_connected));

    q.connected();  // handshaking is not ready either
    auto handshaking = rec.item("F-handshaking");
    handshaking.fail_if_disconnected = true;
    CHECK_FALSE(q.enqueue(std::move(handshaking)));
    CHECK(rec.at("F-handshaking").ec == code(errc::not_connected));
    CHECK(q.waiting() == 1);
  }
}

TEST_CASE("the handshake is written first and user requests wait until it is done", "[redis][queue]") {
  const auto t0 = request_queue::clock_type::now();
  recorder rec;
  request_queue q;
  q.enqueue(rec.item("U1"));  // queued while disconnected
  q.enqueue(rec.item("U2"));

  q.connected();
  CHECK_FALSE(q.ready());
  auto setup = rec.item("SETUP", 2);
  setup.setup = true;
  setup.deadline = t0 + 1s;
  CHECK(q.enqueue(std::move(setup)));
  q.enqueue(rec.item("U3"));  // during the handshake
  CHECK_FALSE(q.expire(t0 + 2s));  // a waiting handshake is not expired
  CHECK(rec.order.empty());

  SECTION("user requests follow the handshake, connect-time commands first") {
    CHECK(write(q) == strings{"SETUP"});
    CHECK(q.take_writable().empty());  // nothing else before handshake_done()
    CHECK(q.waiting() == 3);
    CHECK(feed(q, status("OK")) == disposition::matched);
    CHECK(feed(q, status("PONG")) == disposition::matched);
    REQUIRE(rec.done("SETUP"));
    CHECK(texts(rec.at("SETUP").replies) == strings{"OK", "PONG"});
    CHECK(q.take_writable().empty());  // the caller checks the replies, then says so

    q.handshake_done();
    CHECK(q.ready());
    auto on_connect = rec.item("RESUBSCRIBE", 0);
    on_connect.ahead = true;
    q.enqueue(std::move(on_connect));
    CHECK(write(q) == strings{"RESUBSCRIBE", "U1", "U2", "U3"});
  }

  SECTION("a handshake lost with the link fails with the link's error") {
    auto batch = q.take_writable();
    CHECK(payloads(batch) == strings{"SETUP"});
    auto again = rec.item("SETUP-2");
    again.setup = true;  // a handshake still waiting fails too
    q.enqueue(std::move(again));
    q.connection_lost(code(errc::no_master));
    CHECK(rec.at("SETUP").ec == code(errc::no_master));
    CHECK(rec.at("SETUP-2").ec == code(errc::no_master));
    CHECK_FALSE(rec.done("U1"));
    CHECK(q.waiting() == 3);
  }
}

TEST_CASE("stop fails every request and refuses new ones", "[redis][queue]") {
  recorder rec;
  request_queue q;

  SECTION("with the link up, written requests fail as if the link was lost, without resending") {
    bring_up(q);
    q.enqueue(rec.item("A"));
    auto r = rec.item("R");
    r.retry_if_sent = true;
    q.enqueue(std::move(r));
    write(q);
    auto f = rec.item("F");
    f.fail_if_disconnected = true;
    q.enqueue(std::move(f));
    q.enqueue(rec.item("W"));

    q.stop();
    CHECK(rec.at("A").ec == code(errc::connection_lost));
    CHECK(rec.at("R").ec == code(errc::connection_lost));
    CHECK(rec.at("F").ec == code(errc::not_connected));
    CHECK(rec.at("W").ec == code(errc::shutting_down));
  }

  SECTION("with the link down, waiting requests fail with shutting_down") {
    q.enqueue(rec.item("W1"));
    q.enqueue(rec.item("W2"));
    q.stop();
    CHECK(rec.at("W1").ec == code(errc::shutting_down));
    CHECK(rec.at("W2").ec == code(errc::shutting_down));
  }

  CHECK(q.stopped());
  CHECK(q.waiting() == 0);
  CHECK(q.in_flight() == 0);
  CHECK_FALSE(q.enqueue(rec.item("late")));
  CHECK(rec.at("late").ec == code(errc::shutting_down));
  q.connected();
  CHECK_FALSE(q.link_up());
  q.stop();  // twice is harmless
  for (const auto& [name, o] : rec.by_name) {
    INFO(name);
    CHECK(o.calls == 1);
  }
}

TEST_CASE("a reply with nothing in flight is reported as a protocol error", "[redis][queue]") {
  recorder rec;
  request_queue q;
  bring_up(q);
  reply surprise = status("surprise");
  CHECK(q.on_reply(surprise) == disposition::unsolicited);
  CHECK(surprise.str() == "surprise");  // left for the error message

  q.enqueue(rec.item("A"));
  write(q);
  CHECK(feed(q, status("a")) == disposition::matched);
  CHECK(feed(q, status("one too many")) == disposition::unsolicited);
  CHECK(rec.at("A").calls == 1);
}

TEST_CASE("empty requests complete at once and batches are capped", "[redis][queue]") {
  recorder rec;
  request_queue q;
  CHECK_FALSE(q.enqueue(rec.item("")));  // no commands: nothing to send, even without a link
  REQUIRE(rec.done(""));
  CHECK_FALSE(rec.at("").ec);
  CHECK(q.waiting() == 0);

  bring_up(q);
  q.enqueue(rec.item("A"));
  q.enqueue(rec.item("B"));
  q.enqueue(rec.item("C"));
  auto first = q.take_writable(2);
  CHECK(payloads(first) == strings{"A", "B"});
  CHECK(q.waiting() == 1);
  CHECK(payloads(q.take_writable(2)) == strings{"C"});
}

TEST_CASE("push messages are told apart from replies only in push mode", "[redis][queue]") {
  recorder rec;
  request_queue q;
  bring_up(q);
  const auto message = array_of({"message", "news", "hello"});
  const auto confirmation = reply::make_array({reply::make_bulk("subscribe"), reply::make_bulk("news"),
                                               reply::make_integer(1)});

  SECTION("push mode: interleaved pushes do not disturb the matching") {
    q.set_push_mode(true);
    q.enqueue(rec.item("A"));
    q.enqueue(rec.item("PING"));
    write(q);
    auto m = message;
    CHECK(q.on_reply(m) == disposition::push);
    CHECK(m.elements().size() == 3);  // not consumed: the caller delivers it
    CHECK(rec.order.empty());
    CHECK(feed(q, status("a")) == disposition::matched);
    CHECK(feed(q, confirmation) == disposition::push);
    // PING on a subscribed RESP2 connection answers ["pong", ""]: a reply, not a push.
    CHECK(feed(q, array_of({"pong", ""})) == disposition::matched);
    CHECK(texts(rec.at("A").replies) == strings{"a"});
    REQUIRE(rec.at("PING").replies.size() == 1);
    CHECK(rec.at("PING").replies[0].debug_string() == R"(["pong", ""])");
    CHECK(feed(q, message) == disposition::push);  // nothing in flight: still no error
  }

  SECTION("without push mode a message array is an ordinary reply") {
    CHECK(feed(q, message) == disposition::unsolicited);
    q.enqueue(rec.item("A"));
    write(q);
    CHECK(feed(q, message) == disposition::matched);
    REQUIRE(rec.at("A").replies.size() == 1);
    CHECK(rec.at("A").replies[0].debug_string() == R"(["message", "news", "hello"])");
  }

  CHECK(detail::is_push_message(message));
  CHECK(detail::is_push_message(array_of({"pmessage", "n*", "news", "hi"})));
  CHECK_FALSE(detail::is_push_message(array_of({"pong", ""})));
  CHECK_FALSE(detail::is_push_message(reply::make_array({})));
  CHECK_FALSE(detail::is_push_message(reply::make_array({reply::make_status("message")})));
  CHECK_FALSE(detail::is_push_message(reply::make_bulk("message")));
}
