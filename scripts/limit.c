/*
 * The bench's speed limit: an epoll loop in C that answers every request
 * head with a canned "Hello, world!" response, byte for byte the size of
 * http-cluster's, without parsing HTTP. It finds the end of each head and
 * looks for the two words that decide whether the connection stays open
 * (HTTP/1.0 keep-alive for ab -k, Connection: close for S4), and nothing
 * else: no request line, no header validation, no bodies, no limits, no
 * timeouts. It is not a server; it is what one core of this machine does
 * when the server's own work is as small as it can be, so a ratio that
 * it cannot reach either is the machine's (or the client's) limit, not a
 * server's.
 *
 * Usage: limit PORT WORKERS. Each worker is a process with its own
 * SO_REUSEPORT socket (TCP_DEFER_ACCEPT of 1 s) on 127.0.0.1:PORT, one thread, level-triggered
 * epoll, one read per readiness event, one write per batch of answers.
 * Each prints "listening on 127.0.0.1:PORT" once it is (PORT 0 picks a
 * free one: useful with one worker). Built and run by scripts/bench,
 * killed with its process group; tests/bench_limit.rs checks that its
 * answers stay the size of http-cluster's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUF 8192
#define MAX_EVENTS 512

struct conn {
    size_t have;          /* bytes of input not yet answered */
    size_t out_len, out_off; /* output a short write left behind */
    int closing;          /* close once the output is out */
    char in[BUF];
    /* Room for the answers to a full input buffer of the shortest heads
     * (18 bytes each, 139 bytes answered). */
    char out[BUF * 8];
};

/* The three answers (HTTP/1.1 keep-alive, HTTP/1.0 keep-alive, close),
 * rebuilt when the second changes: a request costs one memcpy. */
enum { KEEP, KEEP10, CLOSE };
static char canned[3][192];
static size_t canned_len[3];
static time_t date_at;

static void refresh_date(void) {
    time_t now = time(NULL);
    if (now == date_at)
        return;
    struct tm tm;
    char date[64];
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    static const char *connection[3] = {"", "Connection: keep-alive\r\n", "Connection: close\r\n"};
    for (int i = 0; i < 3; i++)
        canned_len[i] = (size_t)snprintf(canned[i], sizeof canned[i],
                                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: %s\r\n"
                                         "Content-Length: 13\r\n%s\r\nHello, world!",
                                         date, connection[i]);
    date_at = now;
}

/* Case-insensitive search for `needle` (lowercase) in the head [p, end). */
static int has(const char *p, const char *end, const char *needle) {
    size_t n = strlen(needle);
    for (; p + n <= end; p++)
        if ((*p | 0x20) == needle[0] && strncasecmp(p, needle, n) == 0)
            return 1;
    return 0;
}

/* Closing the last descriptor also takes the socket out of the epoll set. */
static void drop(int fd, struct conn **conns) {
    close(fd);
    free(conns[fd]);
    conns[fd] = NULL;
}

/* Writes what is pending; 0 when all of it left, 1 when the socket is full,
 * -1 on error. */
static int flush_out(int ep, int fd, struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
            return 1;
        }
        if (n <= 0)
            return -1;
        c->out_off += (size_t)n;
    }
    c->out_len = c->out_off = 0;
    return 0;
}

/* Answers every complete head in the input; returns -1 to close. */
static int answer(struct conn *c) {
    char *p = c->in, *end = c->in + c->have;
    for (;;) {
        char *stop = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!stop)
            break;
        stop += 4;
        int http10 = memmem(p, (size_t)(stop - p), "HTTP/1.0\r\n", 10) != NULL;
        int keep = http10 ? has(p, stop, "keep-alive") : !has(p, stop, "connection: close");
        int which = !keep ? CLOSE : http10 ? KEEP10 : KEEP;
        if (c->out_len + canned_len[which] > sizeof c->out)
            return -1;
        memcpy(c->out + c->out_len, canned[which], canned_len[which]);
        c->out_len += canned_len[which];
        p = stop;
        if (!keep) {
            c->closing = 1;
            p = end;
            break;
        }
    }
    c->have = (size_t)(end - p);
    memmove(c->in, p, c->have);
    return c->have == BUF ? -1 : 0;
}

static void serve(int port) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(ls, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(ls, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* As http-cluster (--defer-accept) and nginx (listen ... deferred) in
     * the bench: a connection is accepted with its request already there. */
    setsockopt(ls, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) || listen(ls, 4096)) {
        perror("limit: bind/listen");
        exit(1);
    }
    socklen_t len = sizeof addr;
    getsockname(ls, (struct sockaddr *)&addr, &len);
    printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, events[MAX_EVENTS];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    static struct conn *conns[1 << 16];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        refresh_date();
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    /* Not zeroed: only the counters need a value. */
                    if (c >= (1 << 16) || !(conns[c] = malloc(sizeof(struct conn)))) {
                        close(c);
                        continue;
                    }
                    conns[c]->have = conns[c]->out_len = conns[c]->out_off = 0;
                    conns[c]->closing = 0;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct conn *c = conns[fd];
            if (!c)
                continue;
            if (c->out_len) { /* writable again */
                int r = flush_out(ep, fd, c);
                if (r < 0 || (r == 0 && c->closing)) {
                    drop(fd, conns);
                } else if (r == 0) {
                    struct epoll_event in = {.events = EPOLLIN, .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &in);
                }
                continue;
            }
            ssize_t got = read(fd, c->in + c->have, BUF - c->have);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (got <= 0 || (c->have += (size_t)got, answer(c) < 0)) {
                drop(fd, conns);
                continue;
            }
            int r = c->out_len ? flush_out(ep, fd, c) : 0;
            if (r < 0 || (r == 0 && c->closing))
                drop(fd, conns);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: limit PORT WORKERS\n");
        return 2;
    }
    int port = atoi(argv[1]), workers = atoi(argv[2]);
    for (int i = 0; i < workers; i++)
        if (fork() == 0)
            serve(port);
    while (wait(NULL) > 0)
        ;
    return 0;
}
