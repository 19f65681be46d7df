/*
 * count-vowels: an Extism plugin that counts vowels and keeps a running total.
 *
 * ABI "extism", export `count_vowels`. Counts the bytes of the input that belong to the
 * vowel set, which is the config value `vowels` (default "aeiouAEIOU"; bytes, so only
 * ASCII vowels make sense). The running total over all successful calls is kept in the
 * plugin variable `total` (decimal text). Output:
 *   {"count": N, "total": T, "vowels": "..."}
 */
#include "wasmlet_extism.h"

static uint64_t parse_u64(const char *s)
{
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint64_t)(*s++ - '0');
    return v;
}

WX_EXPORT("count_vowels") int32_t count_vowels(void)
{
    size_t len = 0, nvowels = 0;
    char *input = wx_input(&len);
    if (!input)
        return wx_error("out of memory");

    char *vowels = wx_config("vowels", &nvowels);
    const char *set = vowels ? vowels : "aeiouAEIOU";
    if (!vowels)
        nvowels = strlen(set);

    unsigned char member[256] = {0};
    for (size_t i = 0; i < nvowels; i++)
        member[(unsigned char)set[i]] = 1;
    uint64_t count = 0;
    for (size_t i = 0; i < len; i++)
        count += member[(unsigned char)input[i]];
    free(input);

    char *stored = wx_var("total", NULL);
    uint64_t total = (stored ? parse_u64(stored) : 0) + count;
    free(stored);

    wx_buf text = {0};
    wx_buf_u64(&text, total);
    if (text.failed) {
        free(vowels);
        return wx_error("out of memory");
    }
    wx_var_put("total", text.data, text.len);
    wx_buf_free(&text);

    wx_buf out = {0};
    wx_buf_puts(&out, "{\"count\": ");
    wx_buf_u64(&out, count);
    wx_buf_puts(&out, ", \"total\": ");
    wx_buf_u64(&out, total);
    wx_buf_puts(&out, ", \"vowels\": ");
    wx_buf_json_str(&out, set, nvowels);
    wx_buf_putc(&out, '}');
    free(vowels);

    int failed = wx_buf_output(&out);
    wx_buf_free(&out);
    return failed ? wx_error("out of memory") : 0;
}
