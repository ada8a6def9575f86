#pragma once
// Symbol visibility for libmq. Everything is hidden by default; the SDK's interfaces,
// data types and error classes are exported so plugins can use them across the
// shared-library boundary (typeinfo for exceptions and dynamic_cast included).

#define MQ_API __attribute__((visibility("default")))
