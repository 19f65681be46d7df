/*
 * echo: a WASI command that answers a CGI-style request by echoing it back.
 *
 * ABI "wasi-cgi": the request body arrives on stdin, request metadata in the
 * environment (REQUEST_METHOD, PATH_INFO, QUERY_STRING, CONTENT_TYPE).
 * The response goes to stdout as CGI headers, a blank line, then the body.
 *
 * The body is streamed through a fixed buffer, so it is binary-safe and
 * bodies of any size work without growing linear memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <errno.h>

/* Print an environment value as a header value; CR/LF would split the
   header block, so they are replaced by spaces. */
static void put_header(const char *name, const char *value)
{
    fputs(name, stdout);
    fputs(": ", stdout);
    for (const char *p = value; p && *p; p++)
        putchar((*p == '\r' || *p == '\n') ? ' ' : *p);
    putchar('\n');
}

static const char *env_or(const char *key, const char *fallback)
{
    const char *v = getenv(key);
    return (v && *v) ? v : fallback;
}

int main(void)
{
    static char buf[32768];
    unsigned long long total = 0;

    put_header("Content-Type", env_or("CONTENT_TYPE", "application/octet-stream"));
    put_header("X-Echo-Method", env_or("REQUEST_METHOD", ""));
    put_header("X-Echo-Path", env_or("PATH_INFO", ""));
    put_header("X-Echo-Query", env_or("QUERY_STRING", ""));
    putchar('\n');

    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("echo: read");
            return 1;
        }
        if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) {
            perror("echo: write");
            return 1;
        }
        total += (unsigned long long)n;
    }
    if (fflush(stdout) != 0) {
        perror("echo: flush");
        return 1;
    }
    fprintf(stderr, "echo: %llu bytes\n", total);
    return 0;
}
