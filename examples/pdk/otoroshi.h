/*
 * otoroshi.h: Otoroshi's host functions for C plugins run by wasmlet's `otoroshi` ABI,
 * on top of wasmlet_extism.h, plus a small reader for the JSON context they receive.
 *
 * An Otoroshi plugin is an Extism plugin whose export (default `call_backend`) gets the
 * JSON description of the request as its input and outputs a JSON answer:
 *   {"status": 200, "headers": {...}, "body_str" | "body_json" | "body_base64" | ...}
 *
 * Host functions come from the import module `env`. An input is (handle, length) of a
 * kernel block the plugin allocated; the host reads it and does NOT free it (the helpers
 * below free their own blocks). Results are either a new block the plugin owns (0 for
 * none) or a raw number. Each group needs a capability on the function: `http` for
 * proxy_http_call, `kv` for the plugin map and datastore, `kv:global` for the global
 * ones; a plugin importing a function it is not granted fails to deploy.
 * Only the functions a plugin actually calls become imports.
 */
#ifndef WASMLET_OTOROSHI_H
#define WASMLET_OTOROSHI_H

#include "wasmlet_extism.h"

#define OT_IMPORT(name) __attribute__((import_module("env"), import_name(name)))

/* ---- host functions (namespace env) ------------------------------------------------------ */

/* Log size bytes at msg; levels 0 trace, 1 debug, 2 info, 3 warn, 4 error. Returns 0. */
OT_IMPORT("proxy_log") extern int32_t proxy_log(int32_t level, wx_handle msg, uint64_t size);
/* JSON {function, message, level} analytics event. */
OT_IMPORT("proxy_log_event") extern uint64_t proxy_log_event(wx_handle ev, uint64_t size);
/* JSON {url, method, headers, query, request_timeout, follow_redirects, body_str | ...}
   -> block of JSON {status, headers, body_base64}; a host not allowed answers status 403. */
OT_IMPORT("proxy_http_call") extern wx_handle proxy_http_call(wx_handle req, uint64_t size);

/* In-memory maps (per process, lost on restart): set takes JSON {key, value} (returns 0);
   get returns the value block (0: absent); del returns a block "StatusOK"; the whole-map
   call returns JSON {key: base64(value)} (0: empty). */
OT_IMPORT("proxy_plugin_map_set") extern uint64_t proxy_plugin_map_set(wx_handle, uint64_t);
OT_IMPORT("proxy_plugin_map_get") extern wx_handle proxy_plugin_map_get(wx_handle, uint64_t);
OT_IMPORT("proxy_plugin_map_del") extern wx_handle proxy_plugin_map_del(wx_handle, uint64_t);
OT_IMPORT("proxy_plugin_map") extern wx_handle proxy_plugin_map(uint64_t unused);
OT_IMPORT("proxy_global_map_set") extern uint64_t proxy_global_map_set(wx_handle, uint64_t);
OT_IMPORT("proxy_global_map_get") extern wx_handle proxy_global_map_get(wx_handle, uint64_t);
OT_IMPORT("proxy_global_map_del") extern wx_handle proxy_global_map_del(wx_handle, uint64_t);
OT_IMPORT("proxy_global_map") extern wx_handle proxy_global_map(uint64_t unused);

/* Persistent datastores. set/setnx: JSON {key, value | value_base64, ttl?} -> 1/0;
   get: key -> value block (0: absent); exists: key -> 1/0; del: JSON {keys: [...]} ->
   count; incrby: JSON {key, incr} -> new value; pttl: key -> ms (-1 no TTL, -2 absent);
   pexpire: JSON {key, pttl} -> 1/0; keys / all_matching: glob -> JSON array of keys /
   of base64 values. */
#define OT_DATASTORE(prefix)                                                                  \
    OT_IMPORT(#prefix "_get") extern wx_handle prefix##_get(wx_handle, uint64_t);             \
    OT_IMPORT(#prefix "_set") extern uint64_t prefix##_set(wx_handle, uint64_t);              \
    OT_IMPORT(#prefix "_setnx") extern uint64_t prefix##_setnx(wx_handle, uint64_t);          \
    OT_IMPORT(#prefix "_exists") extern uint64_t prefix##_exists(wx_handle, uint64_t);        \
    OT_IMPORT(#prefix "_del") extern uint64_t prefix##_del(wx_handle, uint64_t);              \
    OT_IMPORT(#prefix "_incrby") extern int64_t prefix##_incrby(wx_handle, uint64_t);         \
    OT_IMPORT(#prefix "_pttl") extern int64_t prefix##_pttl(wx_handle, uint64_t);             \
    OT_IMPORT(#prefix "_pexpire") extern uint64_t prefix##_pexpire(wx_handle, uint64_t);      \
    OT_IMPORT(#prefix "_keys") extern wx_handle prefix##_keys(wx_handle, uint64_t);           \
    OT_IMPORT(#prefix "_all_matching") extern wx_handle prefix##_all_matching(wx_handle, uint64_t);
OT_DATASTORE(proxy_plugin_datastore)
OT_DATASTORE(proxy_datastore)
#undef OT_DATASTORE

/* Request attributes (this call only): all as JSON, clear, one as JSON (0: absent),
   set from JSON {key, value} (1), delete (1 if it existed). */
OT_IMPORT("proxy_get_attrs") extern wx_handle proxy_get_attrs(uint64_t unused);
OT_IMPORT("proxy_clear_attrs") extern uint64_t proxy_clear_attrs(uint64_t unused);
OT_IMPORT("proxy_get_attr") extern wx_handle proxy_get_attr(wx_handle, uint64_t);
OT_IMPORT("proxy_set_attr") extern uint64_t proxy_set_attr(wx_handle, uint64_t);
OT_IMPORT("proxy_del_attr") extern uint64_t proxy_del_attr(wx_handle, uint64_t);
/* The function's config as JSON. */
OT_IMPORT("proxy_config") extern wx_handle proxy_config(uint64_t unused);

enum { OT_TRACE = 0, OT_DEBUG = 1, OT_INFO = 2, OT_WARN = 3, OT_ERROR = 4 };

/* ---- calling them -------------------------------------------------------------------------- */

typedef uint64_t (*ot_input_fn)(wx_handle, uint64_t);

/* Call a host function on a copy of data[0..len) in a block of its own (freed after).
   *ok (when not NULL) is set to 0 when kernel memory ran out and nothing was called. */
WX_HELPER uint64_t ot_call(ot_input_fn fn, const void *data, size_t len, int *ok)
{
    wx_handle h = wx_block(data, len);
    if (ok)
        *ok = !(len && !h);
    if (len && !h)
        return 0;
    uint64_t result = fn(h, len);
    wx_free(h);
    return result;
}

WX_HELPER void ot_log(int32_t level, const char *msg)
{
    size_t len = strlen(msg);
    wx_handle h = wx_block(msg, len);
    if (h || !len)
        proxy_log(level, h, len);
    wx_free(h);
}

/* The plugin map's value for key (malloc'd, NUL-terminated), or NULL when absent. */
WX_HELPER char *ot_map_get(const char *key, size_t key_len, size_t *len)
{
    return wx_take(ot_call(proxy_plugin_map_get, key, key_len, NULL), len);
}

/* Store value under key in the plugin map. Returns 0, or 1 when memory ran out. */
WX_HELPER int ot_map_set(const char *key, size_t key_len, const char *value, size_t value_len)
{
    wx_buf req = {0};
    int ok = 0;
    wx_buf_puts(&req, "{\"key\":");
    wx_buf_json_str(&req, key, key_len);
    wx_buf_puts(&req, ",\"value\":");
    wx_buf_json_str(&req, value, value_len);
    wx_buf_putc(&req, '}');
    if (!req.failed)
        ot_call(proxy_plugin_map_set, req.data, req.len, &ok);
    wx_buf_free(&req);
    return ok ? 0 : 1;
}

/* proxy_http_call with a JSON request; the JSON response (malloc'd), NULL if out of memory. */
WX_HELPER char *ot_http_call(const char *request, size_t request_len, size_t *len)
{
    return wx_take(ot_call(proxy_http_call, request, request_len, NULL), len);
}

/* ---- reading the JSON context -------------------------------------------------------------- */
/* A forgiving reader for well-formed JSON (which the host always sends): pointers into the
   text, no allocation except for decoded strings. Every function takes the end of the text
   and returns NULL when what it looks for is not there. */

WX_HELPER const char *ot_json_ws(const char *p, const char *end)
{
    while (p && p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Past the string whose opening quote is at p. */
WX_HELPER const char *ot_json_skip_string(const char *p, const char *end)
{
    if (!p || p >= end || *p != '"')
        return NULL;
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Past the value starting at p (after whitespace). */
WX_HELPER const char *ot_json_skip(const char *p, const char *end)
{
    p = ot_json_ws(p, end);
    if (!p || p >= end)
        return NULL;
    if (*p == '"')
        return ot_json_skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = ot_json_skip_string(p, end);
                if (!p)
                    return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\r' && *p != '\t')
        p++; /* a number, true, false or null */
    return p;
}

/* The value of `key` in the object starting at obj (keys compared as written). */
WX_HELPER const char *ot_json_get(const char *obj, const char *end, const char *key)
{
    const char *p = ot_json_ws(obj, end);
    size_t key_len = strlen(key);
    if (!p || p >= end || *p != '{')
        return NULL;
    p++;
    for (;;) {
        p = ot_json_ws(p, end);
        if (!p || p >= end || *p != '"')
            return NULL; /* '}' (not found) or malformed */
        const char *name = p + 1;
        const char *after = ot_json_skip_string(p, end);
        if (!after)
            return NULL;
        p = ot_json_ws(after, end);
        if (p >= end || *p != ':')
            return NULL;
        p = ot_json_ws(p + 1, end);
        if ((size_t)(after - 1 - name) == key_len && memcmp(name, key, key_len) == 0)
            return p;
        p = ot_json_ws(ot_json_skip(p, end), end);
        if (!p || p >= end || *p != ',')
            return NULL;
        p++;
    }
}

WX_HELPER int ot_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

WX_HELPER int ot_u16(const char *p, const char *end, uint32_t *out)
{
    uint32_t v = 0;
    if (end - p < 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        int d = ot_hex(p[i]);
        if (d < 0)
            return 0;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 1;
}

WX_HELPER void ot_buf_utf8(wx_buf *b, uint32_t cp)
{
    char s[4];
    size_t n;
    if (cp < 0x80) { s[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { s[0] = (char)(0xC0 | cp >> 6); s[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | cp >> 12); s[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        s[0] = (char)(0xF0 | cp >> 18); s[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        s[2] = (char)(0x80 | (cp >> 6 & 0x3F)); s[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    wx_buf_put(b, s, n);
}

/* The string value at p, unescaped (malloc'd, NUL-terminated; length in *len), or NULL
   when p is not a string. \uXXXX escapes (surrogate pairs too) become UTF-8; a lone
   surrogate becomes U+FFFD. */
WX_HELPER char *ot_json_string(const char *p, const char *end, size_t *len)
{
    wx_buf out = {0};
    if (!p || p >= end || *p != '"')
        return NULL;
    if (!wx_buf_reserve(&out, 16))
        return NULL;
    out.data[0] = '\0'; /* "" stays a valid C string */
    for (p++; p < end && *p != '"'; p++) {
        if (*p != '\\') {
            wx_buf_putc(&out, *p);
            continue;
        }
        if (++p >= end)
            break;
        switch (*p) {
        case 'b': wx_buf_putc(&out, '\b'); break;
        case 'f': wx_buf_putc(&out, '\f'); break;
        case 'n': wx_buf_putc(&out, '\n'); break;
        case 'r': wx_buf_putc(&out, '\r'); break;
        case 't': wx_buf_putc(&out, '\t'); break;
        case 'u': {
            uint32_t cp, low;
            if (!ot_u16(p + 1, end, &cp))
                goto bad;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && end - p > 6 && p[1] == '\\' && p[2] == 'u' &&
                ot_u16(p + 3, end, &low) && low >= 0xDC00 && low <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            ot_buf_utf8(&out, cp);
            break;
        }
        default: wx_buf_putc(&out, *p); break; /* \" \\ \/ */
        }
    }
    if (p >= end || out.failed)
        goto bad;
    if (len)
        *len = out.len;
    return out.data;
bad:
    wx_buf_free(&out);
    return NULL;
}

/* The integer at p (a JSON number without fraction); 1 on success. */
WX_HELPER int ot_json_int(const char *p, const char *end, int64_t *out)
{
    int negative = 0;
    int64_t v = 0;
    if (!p || p >= end)
        return 0;
    if (*p == '-') {
        negative = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return 0;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    *out = negative ? -v : v;
    return 1;
}

#endif /* WASMLET_OTOROSHI_H */
