/*
 * UDP echo load generator and reference C echo server for bench/udp.py.
 *
 *   udpload client HOST PORT SENDERS SECONDS WARMUP SIZE SRCBASE
 *       SENDERS connected sockets, each bound to 127.0.0.(SRCBASE+i) when
 *       SRCBASE > 0, each keeping one SIZE-byte datagram in flight (closed
 *       loop).  A sender that waits more than 200 ms re-sends (counted as a
 *       timeout).  Prints one JSON line: round trips per second measured
 *       over SECONDS after WARMUP seconds, and the timeouts.
 *   udpload server HOST PORT
 *       A plain recvmmsg/sendmmsg echo, the "what the kernel allows"
 *       reference.  PORT 0: any; prints {"port": N} once bound.
 *
 * Build: make -C bench (bench/Makefile)
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
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int client(const char *host, int port, int senders, double seconds,
                  double warmup, int size, int srcbase) {
    int ep = epoll_create1(0);
    int *fds = calloc(senders, sizeof(int));
    double *sent = calloc(senders, sizeof(double));
    char *buf = calloc(1, size > 0 ? size : 1);
    char in[65536];
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &to.sin_addr);
    memset(buf, 'x', size);
    for (int i = 0; i < senders; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (srcbase > 0) {
            struct sockaddr_in me = {.sin_family = AF_INET};
            char a[32];
            snprintf(a, sizeof a, "127.0.0.%d", srcbase + i);
            inet_pton(AF_INET, a, &me.sin_addr);
            if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) {
                perror("bind");
                return 1;
            }
        }
        if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
            perror("connect");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        fds[i] = fd;
    }
    double start = now();
    double measureFrom = start + warmup, end = measureFrom + seconds;
    long counted = 0, timeouts = 0;
    for (int i = 0; i < senders; i++) {
        send(fds[i], buf, size, 0);
        sent[i] = start;
    }
    struct epoll_event events[64];
    double lastCheck = start;
    for (;;) {
        int n = epoll_wait(ep, events, 64, 10);
        double t = now();
        if (t >= end)
            break;
        for (int k = 0; k < n; k++) {
            int i = events[k].data.u32;
            int got = 0;
            while (recv(fds[i], in, sizeof in, 0) >= 0)
                got++;
            if (got) {
                /* One datagram in flight per sender, even after a re-send
                 * whose original reply came late. */
                if (t >= measureFrom)
                    counted++;
                send(fds[i], buf, size, 0);
                sent[i] = t;
            }
        }
        if (t - lastCheck > 0.05) {
            lastCheck = t;
            for (int i = 0; i < senders; i++) {
                if (t - sent[i] > 0.2) {
                    timeouts++;
                    send(fds[i], buf, size, 0);
                    sent[i] = t;
                }
            }
        }
    }
    printf("{\"round_trips_per_second\": %.1f, \"round_trips\": %ld, "
           "\"timeouts\": %ld}\n",
           counted / seconds, counted, timeouts);
    return 0;
}

static int server(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &me.sin_addr);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) {
        perror("bind");
        return 1;
    }
    socklen_t len = sizeof me;
    getsockname(fd, (struct sockaddr *)&me, &len);
    printf("{\"port\": %d}\n", ntohs(me.sin_port));
    fflush(stdout);
    enum { N = 64 };
    static char bufs[N][2048];
    struct mmsghdr msgs[N];
    struct iovec iov[N];
    struct sockaddr_in from[N];
    for (;;) {
        for (int i = 0; i < N; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(fd, msgs, N, MSG_WAITFORONE, NULL);
        if (n <= 0)
            continue;
        for (int i = 0; i < n; i++)
            iov[i].iov_len = msgs[i].msg_len;
        sendmmsg(fd, msgs, n, 0);
    }
}

int main(int argc, char **argv) {
    if (argc == 9 && strcmp(argv[1], "client") == 0)
        return client(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]),
                      atof(argv[6]), atoi(argv[7]), atoi(argv[8]));
    if (argc == 4 && strcmp(argv[1], "server") == 0)
        return server(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: udpload client HOST PORT SENDERS SECONDS WARMUP "
                    "SIZE SRCBASE | udpload server HOST PORT\n");
    return 2;
}
