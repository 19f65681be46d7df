/*
 * geo: a geolocation service as an Otoroshi plugin (ABI "otoroshi", export call_backend).
 *
 * GET /search?q=<address> is answered by an upstream address API (for example one shaped
 * like api-adresse.data.gouv.fr) at <config upstream_url><path>?<query>, fetched with
 * proxy_http_call. Each 2xx answer is cached in the plugin map under the request URI,
 * so the same search again is served from memory without reaching the upstream:
 *
 *   {"status": <upstream status>,
 *    "headers": {"Content-Type": "application/json", "X-Cache": "MISS" | "HIT"},
 *    "body_base64": "<the upstream's body>"}
 *
 * Other paths answer 404 and a search without q answers 400 (JSON {"error": ...}).
 * The function needs the `http` and `kv` capabilities. Cached entries live in the
 * in-memory store of the server process (they do not survive a restart).
 */
#include "otoroshi.h"

#define DEFAULT_UPSTREAM "http://127.0.0.1:8099"
/* Longer request URIs are fetched every time rather than used as cache keys. */
enum { MAX_KEY = 256 };

/* The answer for an upstream body already in base64. */
static int32_t answer(int64_t status, const char *cache, const char *b64, size_t b64_len)
{
    wx_buf out = {0};
    wx_buf_puts(&out, "{\"status\": ");
    wx_buf_u64(&out, (uint64_t)status);
    wx_buf_puts(&out, ", \"headers\": {\"Content-Type\": \"application/json\", \"X-Cache\": ");
    wx_buf_json_cstr(&out, cache);
    wx_buf_puts(&out, "}, \"body_base64\": ");
    wx_buf_json_str(&out, b64, b64_len);
    wx_buf_putc(&out, '}');
    int failed = wx_buf_output(&out);
    wx_buf_free(&out);
    return failed ? wx_error("out of memory") : 0;
}

/* A JSON error answer of our own. */
static int32_t refuse(int status, const char *message)
{
    wx_buf out = {0};
    wx_buf_puts(&out, "{\"status\": ");
    wx_buf_u64(&out, (uint64_t)status);
    wx_buf_puts(&out, ", \"headers\": {\"Content-Type\": \"application/json\"}, ");
    wx_buf_puts(&out, "\"body_json\": {\"error\": ");
    wx_buf_json_cstr(&out, message);
    wx_buf_puts(&out, "}}");
    int failed = wx_buf_output(&out);
    wx_buf_free(&out);
    return failed ? wx_error("out of memory") : 0;
}

/* A cache entry is "<status> <base64 body>". */
static int32_t from_cache(const char *entry)
{
    const char *space = strchr(entry, ' ');
    int64_t status = 0;
    if (!space || !ot_json_int(entry, space, &status))
        return wx_error("corrupt cache entry");
    return answer(status, "HIT", space + 1, strlen(space + 1));
}

static int32_t fetch_and_cache(const char *upstream, const char *uri, size_t uri_len,
                               int cacheable)
{
    wx_buf url = {0}, req = {0};
    wx_buf_puts(&url, upstream);
    wx_buf_put(&url, uri, uri_len);
    wx_buf_puts(&req, "{\"url\": ");
    if (!url.failed)
        wx_buf_json_str(&req, url.data, url.len);
    wx_buf_puts(&req, ", \"method\": \"GET\", \"headers\": {\"Accept\": \"application/json\"}}");
    if (url.failed || req.failed) {
        wx_buf_free(&url);
        wx_buf_free(&req);
        return wx_error("out of memory");
    }
    wx_buf note = {0};
    wx_buf_puts(&note, "geo: cache miss, fetching ");
    wx_buf_puts(&note, url.data);
    if (!note.failed)
        ot_log(OT_INFO, note.data);
    wx_buf_free(&note);
    wx_buf_free(&url);

    size_t resp_len = 0;
    char *resp = ot_http_call(req.data, req.len, &resp_len);
    wx_buf_free(&req);
    if (!resp)
        return wx_error("proxy_http_call returned nothing");
    const char *end = resp + resp_len;
    int64_t status = 0;
    size_t b64_len = 0;
    char *b64 = ot_json_string(ot_json_get(resp, end, "body_base64"), end, &b64_len);
    if (!ot_json_int(ot_json_get(resp, end, "status"), end, &status) || !b64) {
        free(resp);
        free(b64);
        return wx_error("unexpected proxy_http_call response");
    }
    free(resp);

    if (cacheable && status >= 200 && status < 300) {
        wx_buf entry = {0};
        wx_buf_u64(&entry, (uint64_t)status);
        wx_buf_putc(&entry, ' ');
        wx_buf_put(&entry, b64, b64_len);
        if (entry.failed || ot_map_set(uri, uri_len, entry.data, entry.len)) {
            wx_buf_free(&entry);
            free(b64);
            return wx_error("out of memory");
        }
        wx_buf_free(&entry);
    }
    int32_t rc = answer(status, "MISS", b64, b64_len);
    free(b64);
    return rc;
}

WX_EXPORT("call_backend") int32_t call_backend(void)
{
    size_t len = 0;
    char *context = wx_input(&len);
    if (!context)
        return wx_error("out of memory");
    const char *end = context + len;
    const char *raw = ot_json_get(context, end, "raw_request");
    size_t uri_len = 0;
    char *path = ot_json_string(ot_json_get(raw, end, "path"), end, NULL);
    char *uri = ot_json_string(ot_json_get(raw, end, "uri"), end, &uri_len);
    const char *query = ot_json_get(raw, end, "query");
    char *upstream = ot_json_string(
        ot_json_get(ot_json_get(context, end, "config"), end, "upstream_url"), end, NULL);
    int32_t rc;

    if (!path || !uri) {
        rc = wx_error("the request context has no raw_request.path / uri");
    } else if (strcmp(path, "/search") != 0) {
        rc = refuse(404, "not found: ask GET /search?q=<address>");
    } else if (!ot_json_get(query, end, "q")) {
        rc = refuse(400, "missing query parameter q");
    } else {
        const char *base = upstream && *upstream ? upstream : DEFAULT_UPSTREAM;
        size_t base_len = strlen(base);
        while (base_len && base[base_len - 1] == '/')
            base_len--; /* the URI brings its own leading slash */
        char *trimmed = (char *)malloc(base_len + 1);
        int cacheable = uri_len <= MAX_KEY;
        char *cached = cacheable ? ot_map_get(uri, uri_len, NULL) : NULL;
        if (!trimmed) {
            rc = wx_error("out of memory");
        } else if (cached) {
            ot_log(OT_DEBUG, "geo: cache hit");
            rc = from_cache(cached);
        } else {
            memcpy(trimmed, base, base_len);
            trimmed[base_len] = '\0';
            rc = fetch_and_cache(trimmed, uri, uri_len, cacheable);
        }
        free(trimmed);
        free(cached);
    }
    free(path);
    free(uri);
    free(upstream);
    free(context);
    return rc;
}
