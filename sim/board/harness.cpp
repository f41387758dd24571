// The simulated board: the SoC top (stream link) under Verilator, bridged to a TCP socket.
//
// Python is never in the per-cycle loop: this harness clocks the model, feeds received socket
// bytes into rx (valid/ready) and sends tx bytes back, polling the socket every few hundred
// cycles. When the SoC is idle and nothing is pending it blocks in poll() instead of spinning.
// Usage: simboard [port] (0 = any free port); prints "PORT <n>" once listening on 127.0.0.1.
// Exits when the client disconnects, or when the process that started it is gone (a killed
// Ray actor, an interrupted host: an orphaned board never lingers, even before a client
// connects). Prints "CYCLES <n>" on exit.
//
// Built with SIM_ETHERNET (sim.board.build(ethernet=True)): the SoC has LiteEth's UDP core and the
// board talks UDP instead: ethernet.h plays the PHY on the eth_mii_* pins and the network behind
// it, with a UDP socket on 127.0.0.1 (prints "UDP <n>"; a datagram from 127.0.0.1:P reaches the
// device from the simulated host 192.168.1.100 at the board's port, and the answer goes back to
// 127.0.0.1:P). It runs until SIGTERM or its parent is gone, then prints "CYCLES <n>" and the
// network's counters.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "Vsoc.h"
#include "verilated.h"
#ifdef SIM_ETHERNET
#include "ethernet.h"
#endif

static void die(const char* what) {
    std::perror(what);
    std::exit(1);
}

// the parent at start; a different one later means ours has ended (we were re-parented)
static pid_t parent;
static bool orphaned() { return getppid() != parent; }

// The SoC, held in reset for two clock cycles.
static Vsoc* power_on(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    Vsoc* top = new Vsoc;
    top->clk = 0;
    top->rst = 1;
    for (int i = 0; i < 4; i++) {
        top->clk = !top->clk;
        top->eval();
    }
    top->rst = 0;
    return top;
}

#ifdef SIM_ETHERNET
static volatile sig_atomic_t stopping = 0;
static void stop(int) { stopping = 1; }

// The board over UDP (see the top): no TCP client, the stream link idle.
static int run_ethernet(int argc, char** argv) {
    signal(SIGTERM, stop);
    simeth::Config cfg;  // the device's address and port: the -D defines of the build
    simeth::Network net(cfg);
    std::printf("UDP %d\n", net.port());
    std::fflush(stdout);
    Vsoc* top = power_on(argc, argv);
    top->rx_valid = 0;
    top->tx_ready = 1;
    unsigned long long cycles = 0;
    unsigned idle_cycles = 0;
    while (!stopping) {
        // nothing to simulate: the SoC idle and the wire quiet (nothing half-received or still
        // to send): sleep in poll() until a datagram comes, checking on our parent
        if (idle_cycles > 16 && net.quiet_cycles() > 4096) {
            if (!net.wait(100)) {
                if (orphaned()) break;
                continue;
            }
        }
        if ((cycles & 1023) == 0 && orphaned()) break;
        SIMETH_STEP(net, top, eth_mii_);
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        cycles++;
        idle_cycles = top->idle ? idle_cycles + 1 : 0;
    }
    std::fprintf(stderr, "CYCLES %llu\n", cycles);
    net.print_stats(stderr);
    top->final();
    delete top;
    return 0;
}
#endif

int main(int argc, char** argv) {
    parent = getppid();
    signal(SIGPIPE, SIG_IGN);
#ifdef SIM_ETHERNET
    return run_ethernet(argc, argv);
#endif
    int port = argc > 1 ? std::atoi(argv[1]) : 0;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    if (server < 0) die("socket");
    int one = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (bind(server, (sockaddr*)&addr, sizeof addr) < 0) die("bind");
    if (listen(server, 1) < 0) die("listen");
    socklen_t len = sizeof addr;
    getsockname(server, (sockaddr*)&addr, &len);
    std::printf("PORT %d\n", ntohs(addr.sin_port));
    std::fflush(stdout);
    for (;;) {  // wait for the host, checking on our parent every 100 ms
        pollfd p{server, POLLIN, 0};
        int ready = poll(&p, 1, 100);
        if (ready > 0) break;
        if (ready < 0 && errno != EINTR) die("poll");
        if (orphaned()) return 0;
    }
    int client = accept(server, nullptr, nullptr);
    if (client < 0) die("accept");
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    Vsoc* top = power_on(argc, argv);

    std::vector<unsigned char> rx;  // bytes from the host not yet accepted by the SoC
    size_t rx_pos = 0;
    std::vector<unsigned char> tx;  // bytes from the SoC not yet sent
    unsigned long long cycles = 0;
    unsigned char buffer[65536];
    bool open = true;
    unsigned idle_cycles = 0;

    while (open) {
        // -- socket I/O every 1024 cycles (a syscall per cycle would dominate the run time), or
        //    blocking in poll() when the SoC is idle and nothing is pending ----------------------
        bool starved = rx_pos == rx.size() && top->idle && idle_cycles > 16;
        if ((cycles & 1023) == 0 || starved) {
            if (!tx.empty()) {
                ssize_t n = send(client, tx.data(), tx.size(), MSG_DONTWAIT);
                if (n > 0) tx.erase(tx.begin(), tx.begin() + n);
                else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;
            }
            bool quiet = starved && tx.empty();
            pollfd p{client, POLLIN, 0};
            int ready = poll(&p, 1, quiet ? 100 : 0);
            if (ready > 0) {
                ssize_t n = recv(client, buffer, sizeof buffer, MSG_DONTWAIT);
                if (n == 0) open = false;
                else if (n > 0) {
                    if (rx_pos == rx.size()) { rx.clear(); rx_pos = 0; }
                    rx.insert(rx.end(), buffer, buffer + n);
                } else if (errno != EAGAIN && errno != EWOULDBLOCK) open = false;
            }
            if (orphaned()) break;  // a syscall beside poll()'s, every 1024 cycles at most
            if (quiet && ready == 0) continue;  // nothing to simulate yet
        }
        // -- one clock cycle --------------------------------------------------------------------
        bool have = rx_pos < rx.size();
        top->rx_valid = have;
        top->rx_data = have ? rx[rx_pos] : 0;
        top->tx_ready = 1;
        top->clk = 0;
        top->eval();
        bool rx_fire = have && top->rx_ready;
        bool tx_fire = top->tx_valid;
        unsigned char out = top->tx_data;
        top->clk = 1;
        top->eval();
        cycles++;
        if (rx_fire) rx_pos++;
        if (tx_fire) tx.push_back(out);
        idle_cycles = top->idle ? idle_cycles + 1 : 0;
    }
    // flush what is left
    while (!tx.empty()) {
        ssize_t n = send(client, tx.data(), tx.size(), 0);
        if (n <= 0) break;
        tx.erase(tx.begin(), tx.begin() + n);
    }
    std::fprintf(stderr, "CYCLES %llu\n", cycles);
    close(client);
    close(server);
    top->final();
    delete top;
    return 0;
}
