/* leaky_cgi: a WASI CGI command that writes its request body to stderr (which becomes the
   invocation's logs), raw and percent-encoded, and answers "ok". */
#include <stdio.h>

int main(void)
{
    static const char hex[] = "0123456789ABCDEF";
    char body[4096];
    size_t n = fread(body, 1, sizeof body - 1, stdin);
    body[n] = '\0';
    fprintf(stderr, "raw %s\nencoded ", body);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)body[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            fputc(c, stderr);
        else
            fprintf(stderr, "%%%c%c", hex[c >> 4], hex[c & 15]);
    }
    fputc('\n', stderr);
    printf("Content-Type: text/plain\n\nok");
    return 0;
}
