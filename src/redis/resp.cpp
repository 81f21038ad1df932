#include "stargazer/redis/resp.hpp"

#include "stargazer/core/error.hpp"

#include <hiredis/read.h>

#include <fmt/format.h>

namespace stargazer::redis {

// ---------------------------------------------------------------------------------------
// Encoder

void command_encoder::length_line(char prefix, std::size_t n) {
  char buf[24];
  buf[0] = prefix;
  const auto [end, ec] = std::to_chars(buf + 1, buf + sizeof buf - 2, n);
  char* p = end;
  *p++ = '\r';
  *p++ = '\n';
  out_.append(buf, static_cast<std::size_t>(p - buf));
}

void command_encoder::begin(std::size_t argc) { length_line('*', argc); }

void command_encoder::arg(std::string_view a) {
  length_line('$', a.size());
  out_.append(a.data(), a.size());
  out_.append("\r\n", 2);
}

// ---------------------------------------------------------------------------------------
// Parser: hiredis builds our reply tree directly through its object functions. The root
// of each reply is heap-allocated; children are appended to their parent's elements.
// hiredis creates siblings in order and holds pointers only to the ancestors of the
// element being built, whose vectors do not grow meanwhile, so appending is safe.
// Each reply's memory is charged to the parser; past the limit, creation fails and
// hiredis reports an error, so a hostile "*<huge>" header or an endless array cannot
// exhaust memory.

struct parser_budget {
  std::size_t limit = 0;
  std::size_t used = 0;
  bool exceeded = false;
  bool charge(std::size_t bytes) {
    used += bytes;
    if (used > limit) exceeded = true;
    return !exceeded;
  }
};

namespace {

reply* slot_for(const redisReadTask* task, std::size_t extra_bytes) {
  auto* budget = static_cast<parser_budget*>(task->privdata);
  if (!budget->charge(sizeof(reply) + extra_bytes)) return nullptr;
  if (task->parent == nullptr) return new reply();
  auto& siblings = static_cast<reply*>(task->parent->obj)->elements();
  siblings.emplace_back();
  return &siblings.back();
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
  reply* r = slot_for(task, len);
  if (r == nullptr) return nullptr;
  r->set_kind(task->type == REDIS_REPLY_ERROR    ? reply::kind::error
              : task->type == REDIS_REPLY_STATUS ? reply::kind::status
                                                 : reply::kind::bulk);
  r->str().assign(str, len);
  return r;
}

void* create_array(const redisReadTask* task, int elements) {
  reply* r = slot_for(task, 0);
  if (r == nullptr) return nullptr;
  r->set_kind(reply::kind::array);
  r->elements().reserve(static_cast<std::size_t>(std::min(elements, 1024)));
  return r;
}

void* create_integer(const redisReadTask* task, long long value) {
  reply* r = slot_for(task, 0);
  if (r == nullptr) return nullptr;
  r->set_kind(reply::kind::integer);
  r->set_integer(value);
  return r;
}

void* create_nil(const redisReadTask* task) {
  reply* r = slot_for(task, 0);
  if (r == nullptr) return nullptr;
  r->set_kind(reply::kind::nil);
  return r;
}

// hiredis frees only roots (completed replies we did not take, or on error).
void free_object(void* obj) { delete static_cast<reply*>(obj); }

redisReplyObjectFunctions reply_functions = {create_string, create_array, create_integer, create_nil, free_object};

}  // namespace

resp_parser::resp_parser(std::size_t max_buffered)
    : reader_(redisReaderCreateWithFunctions(&reply_functions)),
      budget_(std::make_unique<parser_budget>()),
      max_buffered_(max_buffered) {
  if (reader_ == nullptr) throw std::bad_alloc();
  budget_->limit = max_buffered;
  reader_->privdata = budget_.get();
}

resp_parser::~resp_parser() { redisReaderFree(reader_); }

std::size_t resp_parser::buffered() const { return reader_->len - reader_->pos; }

void resp_parser::feed(const char* data, std::size_t size) {
  if (error_) return;
  if (buffered() + size > max_buffered_) {
    error_ = errc::reply_too_large;
    error_message_ = fmt::format("reply larger than {} bytes", max_buffered_);
    return;
  }
  if (redisReaderFeed(reader_, data, size) != REDIS_OK) {
    error_ = errc::protocol_error;
    error_message_ = reader_->errstr;
  }
}

std::optional<reply> resp_parser::next() {
  if (error_) return std::nullopt;
  void* obj = nullptr;
  if (redisReaderGetReply(reader_, &obj) != REDIS_OK) {
    if (budget_->exceeded) {
      error_ = errc::reply_too_large;
      error_message_ = fmt::format("reply larger than {} bytes", max_buffered_);
    } else {
      error_ = errc::protocol_error;
      error_message_ = reader_->errstr;
    }
    return std::nullopt;
  }
  if (obj == nullptr) return std::nullopt;
  budget_->used = 0;
  std::unique_ptr<reply> owned(static_cast<reply*>(obj));
  return std::move(*owned);
}

}  // namespace stargazer::redis
