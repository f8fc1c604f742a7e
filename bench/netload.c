/*
 * netload: a loopback load generator and echo server for the relay benchmarks, in C so that
 * neither end of a measurement is slower than the relay it measures.
 *
 *   netload serve PORT               echo every byte back (epoll, one thread) until killed
 *   netload rtt PORT CONNS SECONDS   CONNS connections; each sends 64 bytes and waits for them
 *                                    back, again and again; prints round trips per second
 *   netload accept PORT SECONDS      connect, send 100 bytes, read them back, close, again;
 *                                    prints connections per second
 *
 * With a last argument TARGET, rtt and accept take PORT for a SOCKS5 proxy: every connection
 * first asks it for 127.0.0.1:TARGET (no authentication, CONNECT, the reply awaited at each
 * step, as curl does), and is then used as above.
 *
 * Every address is 127.0.0.1. Errors exit 1 with a line on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE 64
#define GREETING 100
#define MAX_EVENTS 256

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

static int socks_target; /* nonzero: dial() goes through the SOCKS5 proxy to this port */

static void write_all(int fd, const char *data, size_t size);
static void read_all(int fd, char *data, size_t size);

static void socks_connect(int fd, int target) {
    const char greeting[3] = {5, 1, 0};
    const char request[10] = {5, 1, 0, 1, 127, 0, 0, 1, (char)(target >> 8), (char)(target & 0xff)};
    char reply[10];
    write_all(fd, greeting, sizeof greeting);
    read_all(fd, reply, 2);
    if (reply[0] != 5 || reply[1] != 0) {
        fprintf(stderr, "socks: no acceptable method\n");
        exit(1);
    }
    write_all(fd, request, sizeof request);
    read_all(fd, reply, sizeof reply); /* an IPv4 bound address: every proxy here sends one */
    if (reply[1] != 0) {
        fprintf(stderr, "socks: reply %d\n", reply[1]);
        exit(1);
    }
}

static int dial(int port) {
    struct sockaddr_in addr = loopback(port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0) die("socket");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    if (socks_target) socks_connect(fd, socks_target);
    return fd;
}

static void write_all(int fd, const char *data, size_t size) {
    while (size) {
        ssize_t n = write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        data += n;
        size -= n;
    }
}

static void read_all(int fd, char *data, size_t size) {
    while (size) {
        ssize_t n = read(fd, data, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("read");
        data += n;
        size -= n;
    }
}

static int echo_back(int fd, const char *data, size_t size) {
    while (size) {
        ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        data += n;
        size -= n;
    }
    return 0;
}

static _Noreturn void serve(int port) {
    struct sockaddr_in addr = loopback(port);
    int one = 1, listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int ep = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN}, events[MAX_EVENTS];
    static char buffer[1 << 16];
    if (listener < 0 || ep < 0) die("socket");
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 1024) < 0) die("listen");
    event.data.fd = listener;
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &event);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int count = epoll_wait(ep, events, MAX_EVENTS, -1);
        for (int i = 0; i < count; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int conn;
                while ((conn = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    event.data.fd = conn;
                    epoll_ctl(ep, EPOLL_CTL_ADD, conn, &event);
                }
                continue;
            }
            ssize_t n = read(fd, buffer, sizeof buffer);
            if (n <= 0) {
                if (n < 0 && errno == EAGAIN) continue;
                close(fd);
                continue;
            }
            /* Small messages: the socket takes them whole; block briefly if it does not. A
             * client that is gone costs only its own connection. */
            int flags = fcntl(fd, F_GETFL);
            fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
            if (echo_back(fd, buffer, n) < 0) {
                close(fd);
                continue;
            }
            fcntl(fd, F_SETFL, flags);
        }
    }
}

struct peer {
    int fd;
    size_t got;
};

static int rtt(int port, int conns, double seconds) {
    struct peer *peers = calloc(conns, sizeof *peers);
    int ep = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN}, events[MAX_EVENTS];
    char message[MESSAGE], buffer[MESSAGE];
    long trips = 0;
    memset(message, 'r', sizeof message);
    for (int i = 0; i < conns; i++) {
        peers[i].fd = dial(port);
        event.data.ptr = &peers[i];
        epoll_ctl(ep, EPOLL_CTL_ADD, peers[i].fd, &event);
    }
    /* One round trip on each first: the tunnels' first-use costs stay out of the figure. */
    for (int i = 0; i < conns; i++) {
        write_all(peers[i].fd, message, MESSAGE);
        read_all(peers[i].fd, buffer, MESSAGE);
    }
    double began = now(), end = began + seconds;
    for (int i = 0; i < conns; i++) write_all(peers[i].fd, message, MESSAGE);
    while (now() < end) {
        int count = epoll_wait(ep, events, MAX_EVENTS, 100);
        for (int i = 0; i < count; i++) {
            struct peer *p = events[i].data.ptr;
            ssize_t n = read(p->fd, buffer, MESSAGE - p->got);
            if (n <= 0) die("read");
            p->got += n;
            if (p->got == MESSAGE) {
                p->got = 0;
                trips++;
                write_all(p->fd, message, MESSAGE);
            }
        }
    }
    printf("%.1f\n", trips / (now() - began));
    return 0;
}

static int accept_rate(int port, double seconds) {
    char greeting[GREETING], buffer[GREETING];
    long done = 0;
    memset(greeting, 'a', sizeof greeting);
    double began = now(), end = began + seconds;
    while (now() < end) {
        int fd = dial(port);
        write_all(fd, greeting, GREETING);
        read_all(fd, buffer, GREETING);
        close(fd);
        done++;
    }
    printf("%.1f\n", done / (now() - began));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "serve") == 0) serve(atoi(argv[2]));
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "rtt") == 0) {
        socks_target = argc == 6 ? atoi(argv[5]) : 0;
        return rtt(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
    }
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "accept") == 0) {
        socks_target = argc == 5 ? atoi(argv[4]) : 0;
        return accept_rate(atoi(argv[2]), atof(argv[3]));
    }
    fprintf(stderr,
            "usage: netload serve PORT | rtt PORT CONNS SECONDS [TARGET] | "
            "accept PORT SECONDS [TARGET]\n");
    return 2;
}
