/*
 * wasmlet_extism.h: a small, header-only C PDK for Extism plugins run by wasmlet.
 *
 * Written for this project from the Extism host ABI (the `extism:host/env` import
 * namespace): the plugin reaches the host's *kernel memory* only through the imported
 * functions declared below, and every value crossing the boundary is a 64-bit handle or
 * length. A handle is the address of the first byte of a block; byte k of block h is at
 * h + k. Handle 0 means "none" (empty, absent or allocation failed).
 *
 * Build a plugin as a WASI reactor with Zig (no WASI imports as long as the plugin only
 * uses malloc/free and the <string.h> functions):
 *
 *   python -m ziglang cc --target=wasm32-wasi -mexec-model=reactor -Os -s \
 *       -Wl,-z,stack-size=65536 -I examples/pdk -o plugin.wasm plugin.c
 *
 * An entry point takes no arguments and returns an int32_t: 0 for success, anything else
 * for failure (set a message with wx_error() first, or the host reports the code).
 *
 *   WX_EXPORT("greet") int32_t greet(void) { ... }
 *
 * Ownership: handles given to output_set / error_set and to the built-in host functions
 * (config_get, var_get, var_set, http_request, log_*) belong to the host afterwards;
 * handles the host returns belong to the plugin. The host wipes kernel memory before each
 * call, so a leaked handle costs nothing past the end of the call.
 */
#ifndef WASMLET_EXTISM_H
#define WASMLET_EXTISM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t wx_handle;

#define WX_EXPORT(name) __attribute__((export_name(name)))
#define WX_ENV_IMPORT(name) \
    __attribute__((import_module("extism:host/env"), import_name(name)))
#define WX_USER_IMPORT(name) \
    __attribute__((import_module("extism:host/user"), import_name(name)))

#define WX_HELPER static inline __attribute__((unused))

/* ---- kernel functions (extism:host/env) ------------------------------------------------ */

/* A new block of n bytes (contents unspecified); 0 when n is 0 or memory is exhausted. */
WX_ENV_IMPORT("alloc") extern wx_handle wx_alloc(uint64_t n);
/* Release a block. 0, unknown and already-freed handles are ignored. */
WX_ENV_IMPORT("free") extern void wx_free(wx_handle h);
/* Length of the live block starting exactly at h; 0 for anything else. */
WX_ENV_IMPORT("length") extern uint64_t wx_length(wx_handle h);
/* Same for valid handles, without validation (host-dependent for anything else). */
WX_ENV_IMPORT("length_unsafe") extern uint64_t wx_length_unsafe(wx_handle h);
/* Raw access to kernel memory; out-of-range loads give 0, out-of-range stores are dropped. */
WX_ENV_IMPORT("load_u8") extern uint8_t wx_load_u8(uint64_t addr);
WX_ENV_IMPORT("load_u64") extern uint64_t wx_load_u64(uint64_t addr);
WX_ENV_IMPORT("store_u8") extern void wx_store_u8(uint64_t addr, uint8_t value);
WX_ENV_IMPORT("store_u64") extern void wx_store_u64(uint64_t addr, uint64_t value);
/* The call's input: its length, its handle, and loads relative to its start. */
WX_ENV_IMPORT("input_length") extern uint64_t wx_input_length(void);
WX_ENV_IMPORT("input_offset") extern wx_handle wx_input_offset(void);
WX_ENV_IMPORT("input_load_u8") extern uint8_t wx_input_load_u8(uint64_t i);
WX_ENV_IMPORT("input_load_u64") extern uint64_t wx_input_load_u64(uint64_t i);
/* Host side: mark [h, h + len) as the input. Plugins have no reason to call it. */
WX_ENV_IMPORT("input_set") extern void wx_input_set(wx_handle h, uint64_t len);
/* Declare [h, h + len) as the call's output (the last call wins). */
WX_ENV_IMPORT("output_set") extern void wx_output_set(wx_handle h, uint64_t len);
WX_ENV_IMPORT("output_length") extern uint64_t wx_output_length(void);
WX_ENV_IMPORT("output_offset") extern wx_handle wx_output_offset(void);
/* Set (0: clear) the call's error message, a UTF-8 block. A set error fails the call. */
WX_ENV_IMPORT("error_set") extern void wx_error_set(wx_handle h);
WX_ENV_IMPORT("error_get") extern wx_handle wx_error_get(void);
/* Drop every block and clear input, output and error. */
WX_ENV_IMPORT("reset") extern void wx_reset(void);
/* Bytes currently managed by the kernel's allocator (diagnostics). */
WX_ENV_IMPORT("memory_bytes") extern uint64_t wx_memory_bytes(void);

/* ---- built-in host functions (extism:host/env) ----------------------------------------- */

/* Manifest config value for a key block (consumed), or 0 when absent or empty. */
WX_ENV_IMPORT("config_get") extern wx_handle wx_config_get(wx_handle key);
/* Plugin variable for a key block (consumed), or 0 when absent. */
WX_ENV_IMPORT("var_get") extern wx_handle wx_var_get(wx_handle key);
/* Store a copy of value under key (both consumed); value 0 deletes the key. */
WX_ENV_IMPORT("var_set") extern void wx_var_set(wx_handle key, wx_handle value);
/* Request: JSON {"url", "method", "headers"} block; body block or 0. Both consumed.
   Returns the response body block (0 when empty). A denied host traps the plugin. */
WX_ENV_IMPORT("http_request") extern wx_handle wx_http_request(wx_handle req, wx_handle body);
/* Status of the last http_request (0 before any). */
WX_ENV_IMPORT("http_status_code") extern int32_t wx_http_status_code(void);
/* JSON object of the last response's headers, or 0 when the host does not expose them. */
WX_ENV_IMPORT("http_headers") extern wx_handle wx_http_headers(void);
/* Log a UTF-8 message block (consumed). */
WX_ENV_IMPORT("log_trace") extern void wx_log_trace(wx_handle msg);
WX_ENV_IMPORT("log_debug") extern void wx_log_debug(wx_handle msg);
WX_ENV_IMPORT("log_info") extern void wx_log_info(wx_handle msg);
WX_ENV_IMPORT("log_warn") extern void wx_log_warn(wx_handle msg);
WX_ENV_IMPORT("log_error") extern void wx_log_error(wx_handle msg);
/* Lowest enabled level (WX_LEVEL_*), or WX_LEVEL_OFF. */
WX_ENV_IMPORT("get_log_level") extern int32_t wx_get_log_level(void);

enum {
    WX_LEVEL_TRACE = 0,
    WX_LEVEL_DEBUG = 1,
    WX_LEVEL_INFO = 2,
    WX_LEVEL_WARN = 3,
    WX_LEVEL_ERROR = 4,
    WX_LEVEL_OFF = 2147483647,
};

/* ---- moving bytes between plugin memory and kernel memory ------------------------------ */

/* Copy len bytes from kernel address src to plugin memory dst. */
WX_HELPER void wx_read(uint64_t src, void *dst, size_t len)
{
    unsigned char *out = (unsigned char *)dst;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word = wx_load_u64(src + i);
        memcpy(out + i, &word, 8);
    }
    for (; i < len; i++)
        out[i] = wx_load_u8(src + i);
}

/* Copy len bytes from plugin memory src to kernel address dst. */
WX_HELPER void wx_write(uint64_t dst, const void *src, size_t len)
{
    const unsigned char *in = (const unsigned char *)src;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word;
        memcpy(&word, in + i, 8);
        wx_store_u64(dst + i, word);
    }
    for (; i < len; i++)
        wx_store_u8(dst + i, in[i]);
}

/* A new kernel block holding a copy of data; 0 when len is 0 or allocation fails. */
WX_HELPER wx_handle wx_block(const void *data, size_t len)
{
    wx_handle h = len ? wx_alloc(len) : 0;
    if (h)
        wx_write(h, data, len);
    return h;
}

/* A new kernel block holding a C string (without its NUL). */
WX_HELPER wx_handle wx_block_str(const char *s)
{
    return wx_block(s, strlen(s));
}

/* The contents of block h in a malloc'd, NUL-terminated buffer (length in *len when len
   is not NULL); the block is freed. NULL when h is 0 or malloc fails. */
WX_HELPER char *wx_take(wx_handle h, size_t *len)
{
    if (!h)
        return NULL;
    size_t n = (size_t)wx_length(h);
    char *buf = (char *)malloc(n + 1);
    if (buf) {
        wx_read(h, buf, n);
        buf[n] = '\0';
        if (len)
            *len = n;
    }
    wx_free(h);
    return buf;
}

/* ---- input, output, errors ------------------------------------------------------------- */

/* The call's input in a malloc'd, NUL-terminated buffer (the input may itself contain NUL
   bytes: use *len). Empty input gives "". NULL only when malloc fails. */
WX_HELPER char *wx_input(size_t *len)
{
    size_t n = (size_t)wx_input_length();
    char *buf = (char *)malloc(n + 1);
    if (!buf)
        return NULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word = wx_input_load_u64(i);
        memcpy(buf + i, &word, 8);
    }
    for (; i < n; i++)
        buf[i] = (char)wx_input_load_u8(i);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Make data the call's output. Returns 0, or 1 when kernel memory is exhausted. */
WX_HELPER int wx_output(const void *data, size_t len)
{
    wx_handle h = wx_block(data, len);
    if (len && !h)
        return 1;
    wx_output_set(h, len);
    return 0;
}

WX_HELPER int wx_output_str(const char *s)
{
    return wx_output(s, strlen(s));
}

/* Set the call's error message; returns 1 so that `return wx_error("...");` fails the call. */
WX_HELPER int32_t wx_error(const char *msg)
{
    wx_error_set(wx_block_str(*msg ? msg : "error"));
    return 1;
}

/* ---- config and variables -------------------------------------------------------------- */

/* Config value for key in a malloc'd C string, or NULL when absent (or empty). */
WX_HELPER char *wx_config(const char *key, size_t *len)
{
    wx_handle k = wx_block_str(key);
    return k ? wx_take(wx_config_get(k), len) : NULL;
}

/* Variable value for key in a malloc'd, NUL-terminated buffer, or NULL when absent. */
WX_HELPER char *wx_var(const char *key, size_t *len)
{
    wx_handle k = wx_block_str(key);
    return k ? wx_take(wx_var_get(k), len) : NULL;
}

/* Store len bytes under key (len 0 deletes the key). A full or disabled store traps. */
WX_HELPER void wx_var_put(const char *key, const void *value, size_t len)
{
    wx_handle k = wx_block_str(key);
    if (k)
        wx_var_set(k, wx_block(value, len));
}

WX_HELPER void wx_var_delete(const char *key)
{
    wx_var_put(key, NULL, 0);
}

/* ---- logs ------------------------------------------------------------------------------ */

/* Log a C string at a level (WX_LEVEL_*); skipped when the host has the level off. */
WX_HELPER void wx_log(int32_t level, const char *msg)
{
    if (level < wx_get_log_level())
        return;
    wx_handle h = wx_block_str(msg);
    switch (level) {
    case WX_LEVEL_TRACE: wx_log_trace(h); break;
    case WX_LEVEL_DEBUG: wx_log_debug(h); break;
    case WX_LEVEL_INFO: wx_log_info(h); break;
    case WX_LEVEL_WARN: wx_log_warn(h); break;
    default: wx_log_error(h); break;
    }
}

/* ---- a growable byte buffer with JSON helpers ------------------------------------------ */

typedef struct {
    char *data; /* always NUL-terminated once anything was added */
    size_t len;
    size_t cap;
    int failed; /* set when an allocation failed; later additions are ignored */
} wx_buf;

WX_HELPER int wx_buf_reserve(wx_buf *b, size_t extra)
{
    if (b->failed)
        return 0;
    if (b->len + extra + 1 <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *data = (char *)realloc(b->data, cap);
    if (!data) {
        b->failed = 1;
        return 0;
    }
    b->data = data;
    b->cap = cap;
    return 1;
}

WX_HELPER void wx_buf_put(wx_buf *b, const void *data, size_t len)
{
    if (!wx_buf_reserve(b, len))
        return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

WX_HELPER void wx_buf_puts(wx_buf *b, const char *s)
{
    wx_buf_put(b, s, strlen(s));
}

WX_HELPER void wx_buf_putc(wx_buf *b, char c)
{
    wx_buf_put(b, &c, 1);
}

WX_HELPER void wx_buf_u64(wx_buf *b, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        wx_buf_putc(b, digits[--n]);
}

WX_HELPER void wx_buf_free(wx_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 if it is not one. */
WX_HELPER size_t wx_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t min, cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) { len = 2; min = 0x80; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; min = 0x800; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; min = 0x10000; cp = c & 0x07; }
    else return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* Append s[0..n) as a quoted JSON string. Control characters, quotes and backslashes are
   escaped; bytes that are not well-formed UTF-8 become U+FFFD. */
WX_HELPER void wx_buf_json_str(wx_buf *b, const void *data, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)data;
    wx_buf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            wx_buf_put(b, esc, 2);
            i++;
        } else if (c == '\n') {
            wx_buf_puts(b, "\\n"); i++;
        } else if (c == '\r') {
            wx_buf_puts(b, "\\r"); i++;
        } else if (c == '\t') {
            wx_buf_puts(b, "\\t"); i++;
        } else if (c < 0x20 || c == 0x7F) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            wx_buf_put(b, esc, 6);
            i++;
        } else {
            size_t len = wx_utf8_seq(s + i, n - i);
            if (len) {
                wx_buf_put(b, s + i, len);
                i += len;
            } else {
                wx_buf_puts(b, "\\ufffd");
                i++;
            }
        }
    }
    wx_buf_putc(b, '"');
}

WX_HELPER void wx_buf_json_cstr(wx_buf *b, const char *s)
{
    wx_buf_json_str(b, s, strlen(s));
}

/* Make the buffer the call's output (1 if the buffer or kernel memory ran out). */
WX_HELPER int wx_buf_output(wx_buf *b)
{
    if (b->failed)
        return 1;
    return wx_output(b->data, b->len);
}

/* ---- HTTP ------------------------------------------------------------------------------ */

typedef struct {
    int32_t status; /* HTTP status; 0 when the request did not complete */
    char *body;     /* malloc'd, NUL-terminated (may contain NUL bytes: use len) */
    size_t len;
} wx_response;

/* Perform an HTTP request through the host. method NULL means GET; headers is NULL or a
   NULL-terminated list of name, value, name, value, ...; body may be NULL. Returns 0, or 1
   when memory ran out. A request to a host the function may not reach traps the plugin. */
WX_HELPER int wx_http(const char *method, const char *url, const char *const *headers,
                      const void *body, size_t body_len, wx_response *resp)
{
    wx_buf req = {0};
    resp->status = 0;
    resp->body = NULL;
    resp->len = 0;
    wx_buf_puts(&req, "{\"url\":");
    wx_buf_json_cstr(&req, url);
    wx_buf_puts(&req, ",\"method\":");
    wx_buf_json_cstr(&req, method ? method : "GET");
    wx_buf_puts(&req, ",\"headers\":{");
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2) {
        if (i)
            wx_buf_putc(&req, ',');
        wx_buf_json_cstr(&req, headers[i]);
        wx_buf_putc(&req, ':');
        wx_buf_json_cstr(&req, headers[i + 1]);
    }
    wx_buf_puts(&req, "}}");
    if (req.failed) {
        wx_buf_free(&req);
        return 1;
    }
    wx_handle r = wx_block(req.data, req.len);
    wx_buf_free(&req);
    if (!r)
        return 1;
    wx_handle b = body ? wx_block(body, body_len) : 0;
    wx_handle h = wx_http_request(r, b);
    resp->status = wx_http_status_code();
    if (!h) {
        resp->body = (char *)calloc(1, 1);
        return resp->body ? 0 : 1;
    }
    resp->body = wx_take(h, &resp->len);
    return resp->body ? 0 : 1;
}

/* ---- wasmlet's user functions (extism:host/user) --------------------------------------- */

/* Wall-clock time in milliseconds since the Unix epoch. */
WX_USER_IMPORT("wasmlet_now_ms") extern uint64_t wasmlet_now_ms(void);
/* A new block of n (1..65536) random bytes. */
WX_USER_IMPORT("wasmlet_random_bytes") extern wx_handle wasmlet_random_bytes(uint64_t n);

#endif /* WASMLET_EXTISM_H */
