/*
 * http-plugin: an Extism plugin that fetches a URL through the host.
 *
 * ABI "extism", export `fetch`. The input is a URL; the plugin logs "fetching <url>" at
 * info level (and the outcome at debug), performs a GET with the host's http_request and
 * answers JSON:
 *   {"status": S, "length": L, "body": "<first 200 bytes of the response, JSON-escaped>"}
 * The function may only reach hosts listed in its allowed_hosts; any other request traps
 * the plugin and the call fails with the host's message.
 */
#include "wasmlet_extism.h"

enum { SHOWN = 200 };

WX_EXPORT("fetch") int32_t fetch(void)
{
    size_t len = 0;
    char *url = wx_input(&len);
    if (!url)
        return wx_error("out of memory");
    /* trim surrounding whitespace (curl -d 'http://...' is fine, so is a trailing newline) */
    char *start = url, *end = url + len;
    while (start < end && (*start == ' ' || *start == '\t' || *start == '\r' || *start == '\n'))
        start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' ||
                           end[-1] == '\n'))
        end--;
    *end = '\0';
    if (start == end) {
        free(url);
        return wx_error("input must be a URL");
    }

    wx_buf line = {0};
    wx_buf_puts(&line, "fetching ");
    wx_buf_puts(&line, start);
    if (!line.failed)
        wx_log(WX_LEVEL_INFO, line.data);
    wx_buf_free(&line);

    static const char *const headers[] = {"accept", "*/*", "user-agent", "wasmlet-fetch", NULL};
    wx_response resp;
    int failed = wx_http("GET", start, headers, NULL, 0, &resp);
    free(url);
    if (failed)
        return wx_error("out of memory");

    wx_buf note = {0};
    wx_buf_puts(&note, "status ");
    wx_buf_u64(&note, (uint64_t)(uint32_t)resp.status);
    wx_buf_puts(&note, ", ");
    wx_buf_u64(&note, resp.len);
    wx_buf_puts(&note, " bytes");
    if (!note.failed)
        wx_log(WX_LEVEL_DEBUG, note.data);
    wx_buf_free(&note);

    wx_buf out = {0};
    wx_buf_puts(&out, "{\"status\": ");
    wx_buf_u64(&out, (uint64_t)(uint32_t)resp.status);
    wx_buf_puts(&out, ", \"length\": ");
    wx_buf_u64(&out, resp.len);
    wx_buf_puts(&out, ", \"body\": ");
    wx_buf_json_str(&out, resp.body, resp.len < SHOWN ? resp.len : SHOWN);
    wx_buf_putc(&out, '}');
    free(resp.body);

    failed = wx_buf_output(&out);
    wx_buf_free(&out);
    return failed ? wx_error("out of memory") : 0;
}
