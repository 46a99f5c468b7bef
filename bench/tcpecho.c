/*
 * tcpecho: the C reference TCP echo of bench/tcp_echo.py (server "c").
 *
 *   tcpecho HOST PORT      listen on HOST:PORT (0: any free port), print
 *                          {"port": N} on stdout, echo every connection
 *                          until killed.
 *
 * What the kernel allows a readiness-based echo on one thread: one
 * level-triggered epoll set, one recv and one send per readable event, the
 * same system calls per round trip as netdemo's echo on --reactor=netdemo,
 * with no interpreter around them.  A reply the kernel does not take whole
 * is kept (at most one read's worth per connection) and the connection
 * stops reading until it is sent (flow control, as every server of the
 * benchmark has).  No limits, no logging: a reference point, not a server
 * to run.  Loopback only by use (bench/catalog.py passes 127.0.0.1).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { BUF = 65536, EVENTS = 1024 };

typedef struct {
    int fd;
    size_t pending, offset; /* unsent bytes of the last read, and where */
    char buf[BUF];
} Conn;

static int epfd;

static void closeConn(Conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Send what is pending; returns -1 if the connection failed. */
static int flush(Conn *c) {
    while (c->pending) {
        ssize_t n = send(c->fd, c->buf + c->offset, c->pending, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        c->offset += (size_t)n;
        c->pending -= (size_t)n;
    }
    return 0;
}

static void watch(Conn *c, unsigned events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: tcpecho HOST PORT\n");
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &me.sin_addr) != 1) {
        fprintf(stderr, "tcpecho: not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&me, sizeof me) < 0 || listen(lfd, 1024) < 0) {
        perror("tcpecho: bind");
        return 1;
    }
    socklen_t len = sizeof me;
    getsockname(lfd, (struct sockaddr *)&me, &len);
    printf("{\"port\": %d}\n", ntohs(me.sin_port));
    fflush(stdout);

    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    static struct epoll_event events[EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("tcpecho: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    Conn *nc = malloc(sizeof *nc);
                    if (nc == NULL) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    nc->pending = nc->offset = 0;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            if (c->pending) {
                /* Writable again: send the rest, then read again. */
                if (flush(c) < 0) {
                    closeConn(c);
                } else if (!c->pending) {
                    watch(c, EPOLLIN);
                }
                continue;
            }
            ssize_t got = recv(c->fd, c->buf, BUF, 0);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
                closeConn(c);
                continue;
            }
            if (got < 0)
                continue;
            c->offset = 0;
            c->pending = (size_t)got;
            if (flush(c) < 0) {
                closeConn(c);
            } else if (c->pending) {
                watch(c, EPOLLOUT);
            }
        }
    }
}
