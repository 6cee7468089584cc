/* syntax.c: a strict JSON (RFC 8259) syntax check that says exactly where
 * a document goes wrong, and why.
 *
 * cJSON builds the tree, but its error position is off by one for the most
 * common mistake in hand-edited files (a trailing comma, a key without
 * quotes: it points past the character), and it accepts some things JSON
 * does not (leading zeros, raw control characters in strings). So the
 * document is checked here first; cJSON then only sees valid JSON.
 *
 * Accepts any bytes (NUL included) and never reads past |len|. Nesting is
 * limited below cJSON's own limit, so that what passes here parses there. */
#include <stddef.h>
#include <stdint.h>

#include "conf/internal.h"

#define MAX_DEPTH 512

typedef struct {
  const char *s;
  size_t len, pos;
  unsigned depth;
  size_t err_pos;
  const char *err;
} scan_t;

static int fail(scan_t *sc, size_t pos, const char *why) {
  sc->err_pos = pos;
  sc->err = why;
  return -1;
}

static int at_end(const scan_t *sc) { return sc->pos >= sc->len; }
static char cur(const scan_t *sc) { return sc->s[sc->pos]; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

static void skip_ws(scan_t *sc) {
  while (!at_end(sc) && (cur(sc) == ' ' || cur(sc) == '\t' || cur(sc) == '\n' || cur(sc) == '\r')) {
    sc->pos++;
  }
}

static int is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int scan_string(scan_t *sc) {
  size_t start = sc->pos++;
  while (!at_end(sc)) {
    unsigned char c = (unsigned char)cur(sc);
    if (c == '"') {
      sc->pos++;
      return 0;
    }
    if (c < 0x20) return fail(sc, sc->pos, "control character in a string; escape it");
    if (c != '\\') {
      sc->pos++;
      continue;
    }
    if (sc->len - sc->pos < 2) break;
    char e = sc->s[sc->pos + 1];
    if (e == 'u') {
      if (sc->len - sc->pos < 6) break;
      for (size_t i = 2; i < 6; i++) {
        if (!is_hex(sc->s[sc->pos + i])) return fail(sc, sc->pos, "bad \\u escape");
      }
      /* cJSON would end the string at a NUL, silently. */
      if (sc->s[sc->pos + 2] == '0' && sc->s[sc->pos + 3] == '0' && sc->s[sc->pos + 4] == '0' &&
          sc->s[sc->pos + 5] == '0') {
        return fail(sc, sc->pos, "\\u0000 in a string");
      }
      sc->pos += 6;
    } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
               e == 'r' || e == 't') {
      sc->pos += 2;
    } else {
      return fail(sc, sc->pos, "bad escape");
    }
  }
  return fail(sc, start, "unterminated string");
}

static int scan_digits(scan_t *sc) {
  if (at_end(sc) || !is_digit(cur(sc))) {
    return fail(sc, sc->pos, at_end(sc) ? "unexpected end of input" : "bad number");
  }
  while (!at_end(sc) && is_digit(cur(sc))) sc->pos++;
  return 0;
}

static int scan_number(scan_t *sc) {
  if (cur(sc) == '-') sc->pos++;
  if (!at_end(sc) && cur(sc) == '0') {
    sc->pos++;
    if (!at_end(sc) && is_digit(cur(sc))) return fail(sc, sc->pos, "bad number (leading zero)");
  } else if (scan_digits(sc) != 0) {
    return -1;
  }
  if (!at_end(sc) && cur(sc) == '.') {
    sc->pos++;
    if (scan_digits(sc) != 0) return -1;
  }
  if (!at_end(sc) && (cur(sc) == 'e' || cur(sc) == 'E')) {
    sc->pos++;
    if (!at_end(sc) && (cur(sc) == '+' || cur(sc) == '-')) sc->pos++;
    if (scan_digits(sc) != 0) return -1;
  }
  return 0;
}

static int scan_literal(scan_t *sc, const char *word) {
  size_t start = sc->pos;
  for (; *word; word++, sc->pos++) {
    if (at_end(sc) || cur(sc) != *word) return fail(sc, start, "expected a value");
  }
  return 0;
}

static int scan_value(scan_t *sc);

/* scan_members scans the inside of an object (|close| '}') or an array
 * (']'), the opening bracket already consumed. */
static int scan_members(scan_t *sc, char close) {
  int is_object = close == '}';
  if (++sc->depth > MAX_DEPTH) return fail(sc, sc->pos - 1, "nested too deeply");
  skip_ws(sc);
  if (!at_end(sc) && cur(sc) == close) {
    sc->pos++;
    sc->depth--;
    return 0;
  }
  for (;;) {
    skip_ws(sc);
    if (is_object) {
      if (at_end(sc)) return fail(sc, sc->pos, "unexpected end of input");
      if (cur(sc) != '"') return fail(sc, sc->pos, "expected a key in double quotes");
      if (scan_string(sc) != 0) return -1;
      skip_ws(sc);
      if (at_end(sc)) return fail(sc, sc->pos, "unexpected end of input");
      if (cur(sc) != ':') return fail(sc, sc->pos, "expected \":\"");
      sc->pos++;
    }
    if (scan_value(sc) != 0) return -1;
    skip_ws(sc);
    if (at_end(sc)) return fail(sc, sc->pos, "unexpected end of input");
    if (cur(sc) == close) {
      sc->pos++;
      sc->depth--;
      return 0;
    }
    if (cur(sc) != ',') {
      return fail(sc, sc->pos, is_object ? "expected \",\" or \"}\"" : "expected \",\" or \"]\"");
    }
    sc->pos++;
    skip_ws(sc);
    if (!at_end(sc) && cur(sc) == close) return fail(sc, sc->pos, "trailing comma");
  }
}

static int scan_value(scan_t *sc) {
  skip_ws(sc);
  if (at_end(sc)) return fail(sc, sc->pos, "unexpected end of input");
  char c = cur(sc);
  switch (c) {
    case '{':
    case '[':
      sc->pos++;
      return scan_members(sc, c == '{' ? '}' : ']');
    case '"':
      return scan_string(sc);
    case 't':
      return scan_literal(sc, "true");
    case 'f':
      return scan_literal(sc, "false");
    case 'n':
      return scan_literal(sc, "null");
    default:
      if (c == '-' || is_digit(c)) return scan_number(sc);
      return fail(sc, sc->pos, "expected a value");
  }
}

size_t conf__json_check(const char *text, size_t len, const char **out_reason) {
  scan_t sc = {.s = text, .len = len};
  if (scan_value(&sc) == 0) {
    skip_ws(&sc);
    if (at_end(&sc)) return SIZE_MAX;
    fail(&sc, sc.pos, "more text after the document");
  }
  *out_reason = sc.err;
  return sc.err_pos;
}
