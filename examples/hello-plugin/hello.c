/*
 * hello-plugin: an Extism plugin that greets someone.
 *
 * ABI "extism", export `greet`. The input is the name (any bytes; empty means "world");
 * the output is JSON: {"message": "Hello <name>"}, with the name JSON-escaped (bytes that
 * are not UTF-8 become U+FFFD).
 */
#include "wasmlet_extism.h"

WX_EXPORT("greet") int32_t greet(void)
{
    size_t len = 0;
    char *name = wx_input(&len);
    if (!name)
        return wx_error("out of memory");

    wx_buf out = {0};
    wx_buf_puts(&out, "{\"message\": ");
    wx_buf_putc(&out, '"');
    /* "Hello " + name, escaped as one JSON string: escape the name, then drop its quotes */
    wx_buf_puts(&out, "Hello ");
    wx_buf name_json = {0};
    if (len)
        wx_buf_json_str(&name_json, name, len);
    else
        wx_buf_json_cstr(&name_json, "world");
    free(name);
    if (name_json.failed) {
        wx_buf_free(&out);
        return wx_error("out of memory");
    }
    wx_buf_put(&out, name_json.data + 1, name_json.len - 2);
    wx_buf_free(&name_json);
    wx_buf_puts(&out, "\"}");

    int failed = wx_buf_output(&out);
    wx_buf_free(&out);
    return failed ? wx_error("out of memory") : 0;
}
