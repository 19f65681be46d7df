/*
 * hello: a WASI command that greets someone, CGI style.
 *
 * ABI "wasi-cgi". The name comes from, in order:
 *   1. the `name` parameter of QUERY_STRING (URL-decoded: %XX and '+'),
 *   2. the request body read from stdin, with surrounding whitespace trimmed,
 *   3. the default "world".
 * A POST with neither a name parameter nor a body is answered with 400.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode src[0..len) (application/x-www-form-urlencoded) into a new string. */
static char *url_decode(const char *src, size_t len)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '+') {
            out[o++] = ' ';
        } else if (src[i] == '%' && i + 2 < len &&
                   hexval((unsigned char)src[i + 1]) >= 0 &&
                   hexval((unsigned char)src[i + 2]) >= 0) {
            out[o++] = (char)(hexval((unsigned char)src[i + 1]) * 16 +
                              hexval((unsigned char)src[i + 2]));
            i += 2;
        } else {
            out[o++] = src[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* Return the decoded value of the first non-empty `name` parameter, or NULL. */
static char *query_name(const char *qs)
{
    const char *p = qs;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq) {
            char *key = url_decode(p, (size_t)(eq - p));
            int match = key && strcmp(key, "name") == 0;
            free(key);
            if (match) {
                char *val = url_decode(eq + 1, len - (size_t)(eq + 1 - p));
                if (val && *val)
                    return val;
                free(val);
            }
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

/* Read all of stdin into a NUL-terminated heap buffer. */
static char *read_body(size_t *out_len)
{
    size_t cap = 1024, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (cap - len < 512) {
            char *nbuf = realloc(buf, cap * 2);
            if (!nbuf) { free(buf); return NULL; }
            buf = nbuf;
            cap *= 2;
        }
        ssize_t n = read(0, buf + len, cap - len - 1);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            free(buf);
            return NULL;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out_len = len;
    return buf;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Log line for stderr, written with a single call: stderr is unbuffered, so
   per-character output would cost one WASI fd_write per byte. Control
   characters are shown as '?' and long names are shortened. */
static void log_name(const char *name)
{
    enum { MAX_SHOWN = 200 };
    char line[sizeof "hello: greeted " + MAX_SHOWN + sizeof "...\n"];
    size_t o = sizeof "hello: greeted " - 1;
    memcpy(line, "hello: greeted ", o);
    const unsigned char *p = (const unsigned char *)name;
    for (size_t i = 0; p[i] && i < MAX_SHOWN; i++)
        line[o++] = (p[i] < 0x20 || p[i] == 0x7f) ? '?' : (char)p[i];
    if (strlen(name) > MAX_SHOWN) {
        memcpy(line + o, "...", 3);
        o += 3;
    }
    line[o++] = '\n';
    fwrite(line, 1, o, stderr);
}

int main(void)
{
    const char *method = getenv("REQUEST_METHOD");
    const char *qs = getenv("QUERY_STRING");
    char *name = query_name(qs);
    size_t body_len = 0;
    char *body = read_body(&body_len);

    if (!body) {
        fputs("hello: cannot read request body\n", stderr);
        return 1;
    }
    if (!name) {
        char *start = body, *end = body + body_len;
        while (start < end && is_space(*start)) start++;
        while (end > start && is_space(end[-1])) end--;
        *end = '\0';
        if (*start) {
            name = strdup(start);
        } else if (method && strcmp(method, "POST") == 0) {
            fputs("Content-Type: text/plain; charset=utf-8\n"
                  "Status: 400 Bad Request\n"
                  "\n"
                  "missing name\n", stdout);
            fputs("hello: missing name\n", stderr);
            free(body);
            return 0;
        } else {
            name = strdup("world");
        }
        if (!name) {
            fputs("hello: out of memory\n", stderr);
            return 1;
        }
    }
    free(body);

    printf("Content-Type: text/plain; charset=utf-8\n"
           "Status: 200 OK\n"
           "\n"
           "Hello, %s!\n", name);
    log_name(name);
    free(name);
    return 0;
}
