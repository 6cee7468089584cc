/* chunked.c: see chunked.h. */
#include "proxy/chunked.h"

enum {
  CK_SIZE,      /* hex digits */
  CK_SIZE_BWS,  /* whitespace after the size: ";" or CR next */
  CK_EXT,       /* a chunk extension, up to CR */
  CK_SIZE_LF,   /* the LF of the size line */
  CK_DATA,
  CK_DATA_CR,
  CK_DATA_LF,
  CK_TR_START,  /* start of a trailer line, or the final CRLF */
  CK_TR_NAME,
  CK_TR_OWS,    /* whitespace after the colon */
  CK_TR_VALUE,
  CK_TR_LF,
  CK_FINAL_LF,
  CK_DONE,
  CK_ERROR,
};

/* Extensions are dropped; their line is still bounded. */
#define CK_MAX_EXT 4096

void px_chunked_init(px_chunked_t *ck) { memset(ck, 0, sizeof(*ck)); }

static int hexval(unsigned char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Field values and extensions: visible characters, space, tab, obs-text. */
static int is_vchar(unsigned char ch) { return ch == '\t' || (ch >= 0x20 && ch != 0x7f); }

px_ck_event_t px_chunked_next(px_chunked_t *ck, px_hdrs_t *trailers, size_t max_trailer_bytes,
                              const char **pp, size_t *plen, gh_str_t *out_data,
                              uint64_t *out_announced) {
  const char *p = *pp;
  size_t len = *plen, i = 0;
  px_ck_event_t ev = PX_CK_NEED;
  while (i < len && ev == PX_CK_NEED) {
    unsigned char ch = (unsigned char)p[i];
    switch (ck->state) {
      case CK_SIZE: {
        int v = hexval(ch);
        if (v >= 0) {
          if (ck->left > (PX_CHUNK_MAX >> 4)) {
            ck->state = CK_ERROR;
            ev = PX_CK_HUGE;
            break;
          }
          ck->left = ck->left * 16 + (uint64_t)v;
          if (ck->digits < 255) ck->digits++;
          i++;
          if (ck->left > PX_CHUNK_MAX) {
            ck->state = CK_ERROR;
            ev = PX_CK_HUGE;
          }
          break;
        }
        if (ck->digits == 0) goto bad;
        if (ch == ' ' || ch == '\t') ck->state = CK_SIZE_BWS;
        else if (ch == ';') ck->state = CK_EXT, ck->line_bytes = 0;
        else if (ch == '\r') ck->state = CK_SIZE_LF;
        else goto bad;
        i++;
        break;
      }
      case CK_SIZE_BWS:
        if (ch == ';') ck->state = CK_EXT, ck->line_bytes = 0;
        else if (ch == '\r') ck->state = CK_SIZE_LF;
        else if (ch != ' ' && ch != '\t') goto bad;
        i++;
        break;
      case CK_EXT:
        if (ch == '\r') ck->state = CK_SIZE_LF;
        else if (!is_vchar(ch) || ++ck->line_bytes > CK_MAX_EXT) goto bad;
        i++;
        break;
      case CK_SIZE_LF:
        if (ch != '\n') goto bad;
        i++;
        ck->digits = 0;
        *out_announced = ck->left;
        ck->state = ck->left == 0 ? CK_TR_START : CK_DATA;
        ev = PX_CK_CHUNK;
        break;
      case CK_DATA: {
        size_t n = len - i;
        if ((uint64_t)n > ck->left) n = (size_t)ck->left;
        *out_data = (gh_str_t){p + i, n};
        ck->left -= n;
        i += n;
        if (ck->left == 0) ck->state = CK_DATA_CR;
        ev = PX_CK_DATA;
        break;
      }
      case CK_DATA_CR:
        if (ch != '\r') goto bad;
        ck->state = CK_DATA_LF;
        i++;
        break;
      case CK_DATA_LF:
        if (ch != '\n') goto bad;
        ck->state = CK_SIZE;
        i++;
        break;
      case CK_TR_START:
        if (ch == '\r') {
          ck->state = CK_FINAL_LF;
          i++;
          break;
        }
        if (!px_is_tchar(ch)) goto bad;
        ck->state = CK_TR_NAME;
        if (trailers) trailers->in_value = 1; /* a new field */
        break;
      case CK_TR_NAME: {
        size_t start = i;
        while (i < len && px_is_tchar((unsigned char)p[i])) i++;
        if (trailers && i > start) px_hdrs_name(trailers, p + start, i - start);
        ck->trailer_bytes += i - start;
        if (ck->trailer_bytes > max_trailer_bytes) goto bad;
        if (i == len) break;
        if (p[i] != ':') goto bad;
        i++;
        ck->state = CK_TR_OWS;
        break;
      }
      case CK_TR_OWS:
        if (ch == ' ' || ch == '\t') {
          i++;
          break;
        }
        ck->state = CK_TR_VALUE;
        if (trailers) px_hdrs_value(trailers, "", 0);
        break;
      case CK_TR_VALUE: {
        size_t start = i;
        while (i < len && p[i] != '\r' && is_vchar((unsigned char)p[i])) i++;
        if (trailers && i > start) px_hdrs_value(trailers, p + start, i - start);
        ck->trailer_bytes += i - start;
        if (ck->trailer_bytes > max_trailer_bytes) goto bad;
        if (i == len) break;
        if (p[i] != '\r') goto bad;
        i++;
        ck->state = CK_TR_LF;
        break;
      }
      case CK_TR_LF:
        if (ch != '\n') goto bad;
        if (trailers) px_hdrs_trim_value(trailers);
        ck->state = CK_TR_START;
        i++;
        break;
      case CK_FINAL_LF:
        if (ch != '\n') goto bad;
        i++;
        ck->state = CK_DONE;
        ev = PX_CK_DONE;
        break;
      case CK_DONE:
        ev = PX_CK_DONE;
        break;
      default:
        goto bad;
    }
  }
  *pp = p + i;
  *plen = len - i;
  return ev;
bad:
  ck->state = CK_ERROR;
  *pp = p + i;
  *plen = len - i;
  return PX_CK_BAD;
}
