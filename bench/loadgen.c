/*
 * loadgen: the netdemo benchmark's load generator.
 *
 * One thread, one epoll set, N sockets to HOST:PORT on loopback.
 *
 *   tcp (default)   N TCP connections, each a closed loop of ping-pong:
 *                   send S bytes, read S bytes back (checked against what
 *                   was sent), repeat.  After --warmup seconds the counters
 *                   are reset and the run is measured for --duration
 *                   seconds.
 *   --udp           the same with N connected UDP sockets and S-byte
 *                   datagrams; a reply not back within --udp-timeout is
 *                   counted as lost and the datagram is sent again.
 *   --connect-only  open N TCP connections, check that the server serves
 *                   each (one 1-byte echo), print a JSON line, then hold
 *                   them idle until stdin reaches EOF, SIGTERM, or --hold
 *                   seconds pass.
 *
 * Connections are spread over --sources loopback source addresses
 * (127.0.0.1, 127.0.0.2, ...) so that a per-peer-address limit on the
 * server does not refuse a benchmark that opens many connections.
 *
 * The result is one JSON object on stdout: round trips per second, a
 * latency histogram summary (HDR-style buckets, < 1.6 % error), errors,
 * and this process's CPU use during the measured window (user + system
 * seconds over wall seconds: near 1.0 means the load generator, not the
 * server, is the bottleneck).
 *
 * Everything is bounded: connect phase by --connect-timeout, the run by
 * --warmup + --duration, the hold by --hold.  Loopback only: HOST must be
 * a 127.0.0.0/8 address.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Latency histogram: values in ns; exact below 128, then 64 linear
 * sub-buckets per power of two. */

#define SUB 64
#define MAX_EXP 42
#define NBUCKETS (128 + (MAX_EXP - 7 + 1) * SUB)

static uint64_t hist[NBUCKETS];
static uint64_t histCount, histSum, histMax;

static int bucketOf(uint64_t v) {
    if (v < 128)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    if (e > MAX_EXP)
        return NBUCKETS - 1;
    int shift = e - 6;
    return 128 + (e - 7) * SUB + (int)((v >> shift) - SUB);
}

static uint64_t bucketValue(int i) {
    /* The middle of the bucket. */
    if (i < 128)
        return (uint64_t)i;
    int e = (i - 128) / SUB + 7;
    int shift = e - 6;
    uint64_t m = (uint64_t)((i - 128) % SUB + SUB);
    return (m << shift) + ((1ULL << shift) >> 1);
}

static void record(uint64_t ns) {
    hist[bucketOf(ns)]++;
    histCount++;
    histSum += ns;
    if (ns > histMax)
        histMax = ns;
}

static void resetHistogram(void) {
    memset(hist, 0, sizeof hist);
    histCount = histSum = histMax = 0;
}

static double percentileUs(double p) {
    if (!histCount)
        return 0.0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)histCount);
    if (rank >= histCount)
        rank = histCount - 1;
    uint64_t seen = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += hist[i];
        if (seen > rank)
            return (double)bucketValue(i) / 1000.0;
    }
    return (double)histMax / 1000.0;
}

/* ------------------------------------------------------------------ */

static uint64_t nowNs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static double cpuSeconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port PORT [--host 127.0.0.1] [--conns N] "
            "[--size BYTES]\n"
            "               [--duration S] [--warmup S] [--sources K] "
            "[--connect-timeout S]\n"
            "               [--udp [--udp-timeout S]] "
            "[--connect-only N [--hold S]]\n");
    exit(2);
}

enum { CONNECTING, IDLE, RUNNING, DONE, FAILED };

typedef struct {
    int fd;
    int state;
    int wantOut;   /* EPOLLOUT registered */
    size_t sent;   /* bytes of the current message written */
    size_t got;    /* bytes of the current reply read */
    uint64_t t0;   /* when the current message was first written */
} Conn;

static Conn *conns;
static int nconns;
static int epfd;
static unsigned char *pattern, *scratch;
static size_t msgSize = 64;
static int udpMode;
static volatile sig_atomic_t stopping;

static struct {
    uint64_t allRoundTrips, roundTrips, closed, refused, mismatched, readErrors, lost,
        truncated;
} stats;

static void onSignal(int sig) {
    (void)sig;
    stopping = 1;
}

static void setEvents(Conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
    c->wantOut = (events & EPOLLOUT) != 0;
}

static void fail(Conn *c) {
    if (c->state == FAILED)
        return;
    c->state = FAILED;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

/* Write what is left of the current message; returns 0, or -1 on error. */
static int pump(Conn *c) {
    while (c->sent < msgSize) {
        ssize_t n = send(c->fd, pattern + c->sent, msgSize - c->sent,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c->wantOut)
                    setEvents(c, EPOLLIN | EPOLLOUT);
                return 0;
            }
            if (errno == EINTR)
                continue;
            if (udpMode && errno == ECONNREFUSED) {
                /* An ICMP error from an earlier datagram: sent again
                 * after the timeout. */
                stats.refused++;
                return 0;
            }
            return -1;
        }
        if (udpMode && (size_t)n != msgSize) {
            stats.truncated++;
        }
        c->sent += (size_t)n;
    }
    if (c->wantOut)
        setEvents(c, EPOLLIN);
    return 0;
}

static void startMessage(Conn *c, uint64_t now) {
    c->sent = 0;
    c->got = 0;
    c->t0 = now;
    if (pump(c) < 0) {
        stats.readErrors++;
        fail(c);
    }
}

/* Read the reply; returns 1 when it is complete. */
static int readReply(Conn *c) {
    for (;;) {
        ssize_t n;
        if (udpMode) {
            n = recv(c->fd, scratch, msgSize + 1, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                if (errno == EINTR)
                    continue;
                if (errno == ECONNREFUSED) {
                    stats.refused++;
                    return 0; /* resent after the timeout */
                }
                stats.readErrors++;
                fail(c);
                return 0;
            }
            if (c->sent < msgSize)
                continue; /* a late reply to an earlier, resent datagram */
            if ((size_t)n != msgSize || memcmp(scratch, pattern, msgSize)) {
                stats.mismatched++;
                continue;
            }
            c->got = msgSize;
            return 1;
        }
        size_t want = msgSize - c->got;
        if (want == 0) {
            /* The server sent more than was asked for. */
            n = recv(c->fd, scratch, 1, MSG_DONTWAIT);
            if (n > 0) {
                stats.mismatched++;
                fail(c);
            }
            return 0;
        }
        n = recv(c->fd, scratch + c->got, want, 0);
        if (n == 0) {
            stats.closed++;
            fail(c);
            return 0;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            stats.readErrors++;
            fail(c);
            return 0;
        }
        if (memcmp(scratch + c->got, pattern + c->got, (size_t)n)) {
            stats.mismatched++;
            fail(c);
            return 0;
        }
        c->got += (size_t)n;
        if (c->got == msgSize)
            return 1;
    }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0, sources = 1, connectOnly = 0;
    double duration = 5, warmup = 1, connectTimeout = 10, hold = 60,
           udpTimeout = 0.2;
    nconns = 50;

    static struct option opts[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"conns", required_argument, 0, 'c'},
        {"size", required_argument, 0, 's'},
        {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},
        {"sources", required_argument, 0, 'S'},
        {"connect-timeout", required_argument, 0, 'T'},
        {"udp", no_argument, 0, 'u'},
        {"udp-timeout", required_argument, 0, 'U'},
        {"connect-only", required_argument, 0, 'C'},
        {"hold", required_argument, 0, 'H'},
        {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 's': msgSize = (size_t)atol(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'S': sources = atoi(optarg); break;
        case 'T': connectTimeout = atof(optarg); break;
        case 'u': udpMode = 1; break;
        case 'U': udpTimeout = atof(optarg); break;
        case 'C': connectOnly = 1; nconns = atoi(optarg); break;
        case 'H': hold = atof(optarg); break;
        default: usage();
        }
    }
    struct in_addr dst;
    if (port <= 0 || port > 65535 || nconns <= 0 || nconns > 100000 ||
        msgSize == 0 || msgSize > 65507 || sources < 1 || sources > 250 ||
        duration <= 0 || duration > 3600 || warmup < 0 || warmup > 600 ||
        hold < 0 || hold > 3600 || connectTimeout <= 0 ||
        connectTimeout > 600 || udpTimeout <= 0 ||
        inet_pton(AF_INET, host, &dst) != 1)
        usage();
    if ((ntohl(dst.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: %s is not a loopback address\n", host);
        exit(2);
    }
    if (connectOnly) {
        msgSize = 1;
        udpMode = 0;
    }

    signal(SIGTERM, onSignal);
    signal(SIGINT, onSignal);
    signal(SIGPIPE, SIG_IGN);

    pattern = malloc(msgSize);
    scratch = malloc(msgSize + 1);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!pattern || !scratch || !conns)
        die("malloc");
    for (size_t i = 0; i < msgSize; i++)
        pattern[i] = (unsigned char)('a' + i % 26);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");

    /* Connect phase. */
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr = dst};
    int connected = 0, pending = 0;
    for (int i = 0; i < nconns; i++) {
        Conn *c = &conns[i];
        c->fd = socket(AF_INET,
                       (udpMode ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK |
                           SOCK_CLOEXEC,
                       0);
        if (c->fd < 0)
            die("socket (raise the open file limit?)");
        if (sources > 1) {
            struct sockaddr_in from = {.sin_family = AF_INET};
            from.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % sources));
            if (bind(c->fd, (struct sockaddr *)&from, sizeof from) < 0)
                die("bind");
        }
        if (!udpMode) {
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
        c->wantOut = 1;
        if (connect(c->fd, (struct sockaddr *)&to, sizeof to) < 0 &&
            errno != EINPROGRESS)
            die("connect");
        c->state = CONNECTING;
        pending++;
    }

    struct epoll_event events[1024];
    uint64_t deadline = nowNs() + (uint64_t)(connectTimeout * 1e9);
    while (pending && !stopping && nowNs() < deadline) {
        int n = epoll_wait(epfd, events, 1024, 100);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            if (c->state != CONNECTING)
                continue;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            pending--;
            if (err) {
                stats.refused++;
                fail(c);
            } else {
                c->state = IDLE;
                connected++;
                setEvents(c, EPOLLIN);
            }
        }
    }

    if (connectOnly) {
        /* Check that the server serves each connection: one byte each. */
        int served = 0;
        uint64_t now = nowNs();
        for (int i = 0; i < nconns; i++)
            if (conns[i].state == IDLE) {
                conns[i].state = RUNNING;
                startMessage(&conns[i], now);
            }
        int waiting = 0;
        for (int i = 0; i < nconns; i++)
            waiting += conns[i].state == RUNNING;
        deadline = nowNs() + (uint64_t)(connectTimeout * 1e9);
        while (waiting && !stopping && nowNs() < deadline) {
            int n = epoll_wait(epfd, events, 1024, 100);
            if (n < 0 && errno != EINTR)
                die("epoll_wait");
            for (int i = 0; i < n; i++) {
                Conn *c = events[i].data.ptr;
                if (c->state != RUNNING)
                    continue;
                if (events[i].events & EPOLLOUT && pump(c) < 0) {
                    fail(c);
                    waiting--;
                    continue;
                }
                if (readReply(c)) {
                    c->state = DONE;
                    served++;
                    waiting--;
                } else if (c->state == FAILED) {
                    waiting--;
                }
            }
        }
        printf("{\"mode\": \"connect-only\", \"connections\": %d, "
               "\"connected\": %d, \"served\": %d, \"closed\": %llu, "
               "\"refused\": %llu}\n",
               nconns, connected, served, (unsigned long long)stats.closed,
               (unsigned long long)stats.refused);
        fflush(stdout);
        /* Hold until stdin closes, a signal, or the hold time. */
        uint64_t until = nowNs() + (uint64_t)(hold * 1e9);
        while (!stopping && nowNs() < until) {
            struct pollfd p = {.fd = 0, .events = POLLIN};
            int r = poll(&p, 1, 200);
            if (r > 0) {
                char b[64];
                ssize_t n = read(0, b, sizeof b);
                if (n <= 0)
                    break;
            }
        }
        return served == nconns ? 0 : 1;
    }

    /* Ping-pong. */
    uint64_t start = nowNs();
    uint64_t measureFrom = start + (uint64_t)(warmup * 1e9);
    uint64_t end = measureFrom + (uint64_t)(duration * 1e9);
    uint64_t udpTimeoutNs = (uint64_t)(udpTimeout * 1e9);
    uint64_t lastScan = start;
    int measuring = warmup == 0;
    double cpu0 = cpuSeconds();
    uint64_t wall0 = start;
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == IDLE) {
            conns[i].state = RUNNING;
            startMessage(&conns[i], start);
        }

    for (;;) {
        int n = epoll_wait(epfd, events, 1024, 10);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        uint64_t now = nowNs();
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            if (c->state != RUNNING)
                continue;
            if (events[i].events & EPOLLOUT) {
                if (pump(c) < 0) {
                    stats.readErrors++;
                    fail(c);
                    continue;
                }
            }
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (readReply(c)) {
                    stats.allRoundTrips++;
                    if (measuring) {
                        record(now - c->t0);
                        stats.roundTrips++;
                    }
                    startMessage(c, now);
                }
            }
        }
        if (!measuring && now >= measureFrom) {
            measuring = 1;
            resetHistogram();
            stats.roundTrips = stats.lost = 0;
            cpu0 = cpuSeconds();
            wall0 = now;
        }
        if (udpMode && now - lastScan > 10000000ULL) {
            lastScan = now;
            for (int i = 0; i < nconns; i++) {
                Conn *c = &conns[i];
                if (c->state == RUNNING && now - c->t0 > udpTimeoutNs) {
                    if (measuring)
                        stats.lost++;
                    startMessage(c, now);
                }
            }
        }
        if (now >= end || stopping)
            break;
    }
    uint64_t wall1 = nowNs();
    double cpu = cpuSeconds() - cpu0;
    double wall = (double)(wall1 - wall0) / 1e9;
    int alive = 0;
    for (int i = 0; i < nconns; i++)
        alive += conns[i].state == RUNNING;

    printf("{\"mode\": \"%s\", \"connections\": %d, \"connected\": %d, "
           "\"alive\": %d, \"size\": %zu, \"sources\": %d, "
           "\"duration\": %.3f, \"round_trips\": %llu, "
           "\"all_round_trips\": %llu, "
           "\"rate\": %.1f, \"latency_us\": {\"mean\": %.1f, \"p50\": %.1f, "
           "\"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}, "
           "\"cpu\": {\"seconds\": %.3f, \"share\": %.3f}, "
           "\"errors\": {\"closed\": %llu, \"refused\": %llu, "
           "\"mismatched\": %llu, \"io\": %llu, \"lost\": %llu, "
           "\"truncated\": %llu}}\n",
           udpMode ? "udp" : "tcp", nconns, connected, alive, msgSize,
           sources, wall, (unsigned long long)stats.roundTrips,
           (unsigned long long)stats.allRoundTrips,
           wall > 0 ? (double)stats.roundTrips / wall : 0.0,
           histCount ? (double)histSum / (double)histCount / 1000.0 : 0.0,
           percentileUs(50), percentileUs(90), percentileUs(99),
           percentileUs(99.9), (double)histMax / 1000.0, cpu,
           wall > 0 ? cpu / wall : 0.0, (unsigned long long)stats.closed,
           (unsigned long long)stats.refused,
           (unsigned long long)stats.mismatched,
           (unsigned long long)stats.readErrors,
           (unsigned long long)stats.lost,
           (unsigned long long)stats.truncated);
    return stopping ? 1 : 0;
}
