/* Unit tests for lr_sbuf: growth under printf and the JSON string escaper.
 *
 * The status JSON is read by other programs (lorelayctl --json, scripts), so
 * the escaper is checked by decoding its output with an independent strict
 * JSON-string decoder rather than by comparing against one spelling: any
 * valid escaping passes, anything a JSON parser would reject fails. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_sbuf.h"

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes one JSON string literal spanning exactly s[0..n). Returns the
 * decoded length, or -1 if it is not a valid literal. \u escapes become
 * UTF-8 (BMP only, which is all an escaper of bytes needs). */
static long json_decode(const char *s, size_t n, char *out, size_t cap) {
  size_t i = 1, o = 0;
  if (n < 2 || s[0] != '"' || s[n - 1] != '"') return -1;
  while (i < n - 1) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20) return -1; /* raw control characters are invalid JSON */
    if (c == '"') return -1; /* unescaped quote inside */
    if (o + 4 >= cap) return -1;
    if (c != '\\') {
      out[o++] = (char)c;
      i++;
      continue;
    }
    if (i + 1 >= n - 1) return -1;
    char e = s[i + 1];
    i += 2;
    switch (e) {
      case '"': out[o++] = '"'; break;
      case '\\': out[o++] = '\\'; break;
      case '/': out[o++] = '/'; break;
      case 'b': out[o++] = '\b'; break;
      case 'f': out[o++] = '\f'; break;
      case 'n': out[o++] = '\n'; break;
      case 'r': out[o++] = '\r'; break;
      case 't': out[o++] = '\t'; break;
      case 'u': {
        if (i + 4 > n - 1) return -1;
        unsigned v = 0;
        for (int k = 0; k < 4; k++) {
          int h = hexval(s[i + k]);
          if (h < 0) return -1;
          v = v * 16 + (unsigned)h;
        }
        i += 4;
        if (v < 0x80) {
          out[o++] = (char)v;
        } else if (v < 0x800) {
          out[o++] = (char)(0xC0 | (v >> 6));
          out[o++] = (char)(0x80 | (v & 0x3F));
        } else {
          out[o++] = (char)(0xE0 | (v >> 12));
          out[o++] = (char)(0x80 | ((v >> 6) & 0x3F));
          out[o++] = (char)(0x80 | (v & 0x3F));
        }
        break;
      }
      default: return -1;
    }
  }
  out[o] = 0;
  return (long)o;
}

static void assert_json_roundtrip(const char *in) {
  lr_sbuf_t b;
  char dec[1024];
  lr_sbuf_init(&b);
  lr_sbuf_json_str(&b, in);
  assert_int_equal(b.err, 0);
  assert_non_null(b.p);
  assert_int_equal(strlen(b.p), b.len);
  long n = json_decode(b.p, b.len, dec, sizeof dec);
  if (n < 0) fail_msg("not a valid JSON string literal: %s", b.p);
  assert_int_equal((size_t)n, strlen(in));
  assert_memory_equal(dec, in, (size_t)n);
  lr_sbuf_free(&b);
}

static void test_init_empty(void **state) {
  (void)state;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.err, 0);
  lr_sbuf_free(&b);
  /* free must leave a reusable, empty buffer (callers free then reuse) */
  assert_int_equal(b.len, 0);
  lr_sbuf_free(&b);
}

static void test_append_and_puts(void **state) {
  (void)state;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_puts(&b, "abc");
  lr_sbuf_append(&b, "defXXX", 3);
  lr_sbuf_puts(&b, "");
  lr_sbuf_append(&b, "g", 1);
  assert_int_equal(b.err, 0);
  assert_int_equal(b.len, 7);
  assert_string_equal(b.p, "abcdefg");
  lr_sbuf_free(&b);
}

static void test_printf_basic(void **state) {
  (void)state;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_printf(&b, "%s:%d", "port", 8000);
  lr_sbuf_printf(&b, "/%u/%lu", 7u, 4294967295ul);
  assert_int_equal(b.err, 0);
  assert_string_equal(b.p, "port:8000/7/4294967295");
  assert_int_equal(b.len, strlen(b.p));
  lr_sbuf_free(&b);
}

/* One printf far bigger than any initial capacity, then thousands of small
 * ones: the buffer must grow (possibly several times) and keep every byte. */
static void test_printf_growth(void **state) {
  (void)state;
  enum { BIG = 70000 };
  char *big = malloc(BIG + 1);
  assert_non_null(big);
  for (size_t i = 0; i < BIG; i++) big[i] = (char)('a' + i % 26);
  big[BIG] = 0;

  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_printf(&b, "<%s>", big);
  assert_int_equal(b.err, 0);
  assert_int_equal(b.len, BIG + 2);
  assert_int_equal(b.p[0], '<');
  assert_memory_equal(b.p + 1, big, BIG);
  assert_int_equal(b.p[BIG + 1], '>');
  assert_int_equal(b.p[BIG + 2], 0);
  assert_true(b.cap > b.len);

  lr_sbuf_t c;
  lr_sbuf_init(&c);
  char expect[16];
  for (int i = 0; i < 5000; i++) lr_sbuf_printf(&c, "%04d,", i);
  assert_int_equal(c.err, 0);
  assert_int_equal(c.len, 5000 * 5);
  for (int i = 0; i < 5000; i += 997) {
    snprintf(expect, sizeof expect, "%04d,", i);
    assert_memory_equal(c.p + i * 5, expect, 5);
  }
  assert_int_equal(c.p[c.len], 0);
  lr_sbuf_free(&c);
  lr_sbuf_free(&b);
  free(big);
}

/* Exactly crossing a power-of-two boundary is where off-by-one growth bugs
 * (forgetting the NUL) show; valgrind/asan report the overflow. */
static void test_growth_boundaries(void **state) {
  (void)state;
  for (size_t n = 1; n <= 600; n++) {
    lr_sbuf_t b;
    lr_sbuf_init(&b);
    for (size_t i = 0; i < n; i++) lr_sbuf_append(&b, "x", 1);
    assert_int_equal(b.len, n);
    assert_int_equal(b.p[n], 0);
    assert_int_equal(b.p[n - 1], 'x');
    lr_sbuf_free(&b);
  }
}

static void test_json_plain(void **state) {
  (void)state;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_json_str(&b, "0.0.0.0:8000");
  assert_string_equal(b.p, "\"0.0.0.0:8000\"");
  lr_sbuf_free(&b);

  lr_sbuf_init(&b);
  lr_sbuf_json_str(&b, "");
  assert_string_equal(b.p, "\"\"");
  lr_sbuf_free(&b);
}

static void test_json_quote_backslash(void **state) {
  (void)state;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_json_str(&b, "a\"b\\c");
  /* there is only one valid spelling for these two */
  assert_string_equal(b.p, "\"a\\\"b\\\\c\"");
  lr_sbuf_free(&b);
  assert_json_roundtrip("\"\"\\\\\"");
  assert_json_roundtrip("C:\\Users\\me\\lorelay.ini");
  assert_json_roundtrip("\\\\.\\pipe\\lorelayd");
}

static void test_json_control_chars(void **state) {
  (void)state;
  char all[32];
  for (int i = 1; i < 32; i++) all[i - 1] = (char)i;
  all[31] = 0;
  assert_json_roundtrip(all);
  assert_json_roundtrip("line1\nline2\r\n\ttab");
  assert_json_roundtrip("\x7f del is allowed raw");
  assert_json_roundtrip("caf\xc3\xa9 \xe2\x9c\x93"); /* UTF-8 kept meaning */

  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_json_str(&b, "\x01");
  /* \u0001 is the only valid spelling of U+0001 */
  assert_true(strcmp(b.p, "\"\\u0001\"") == 0);
  lr_sbuf_free(&b);
}

static void test_json_appends(void **state) {
  (void)state;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_puts(&b, "{\"name\":");
  lr_sbuf_json_str(&b, "ns\"1");
  lr_sbuf_printf(&b, ",\"n\":%d}", 3);
  assert_string_equal(b.p, "{\"name\":\"ns\\\"1\",\"n\":3}");
  lr_sbuf_free(&b);
}

static void test_json_long(void **state) {
  (void)state;
  /* Escaping expands up to 6x: a long string of control bytes must grow
   * the buffer correctly through the escaper too. */
  char in[700];
  for (size_t i = 0; i < sizeof in - 1; i++) in[i] = (i % 3 == 0) ? '\x02' : (i % 3 == 1 ? '"' : 'z');
  in[sizeof in - 1] = 0;
  lr_sbuf_t b;
  char *dec = malloc(8192);
  assert_non_null(dec);
  lr_sbuf_init(&b);
  lr_sbuf_json_str(&b, in);
  long n = json_decode(b.p, b.len, dec, 8192);
  assert_int_equal(n, (long)strlen(in));
  assert_memory_equal(dec, in, (size_t)n);
  lr_sbuf_free(&b);
  free(dec);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_empty),
      cmocka_unit_test(test_append_and_puts),
      cmocka_unit_test(test_printf_basic),
      cmocka_unit_test(test_printf_growth),
      cmocka_unit_test(test_growth_boundaries),
      cmocka_unit_test(test_json_plain),
      cmocka_unit_test(test_json_quote_backslash),
      cmocka_unit_test(test_json_control_chars),
      cmocka_unit_test(test_json_appends),
      cmocka_unit_test(test_json_long),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
