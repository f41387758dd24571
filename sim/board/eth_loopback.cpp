// The UDP echo board (eth_loopback.v: the generated LiteEth core + an echo) under Verilator,
// on the simulated network of ethernet.h: the stand-alone test of the simulated board's Ethernet.
//
// Usage: ethloop [--ip A.B.C.D] [--mac HEX] [--port N] [--host-port N [--sticky]] [--bind N]
//                [--queue FRAMES] [--pcap FILE] [--verbose]
// --ip/--mac/--port: the device's address (fpga.build.liteeth's core.ip_address, mac_address,
// udp_port); --host-port, --sticky: the host port translation (ethernet.h); --bind: the UDP
// socket's port on 127.0.0.1 (default any); --pcap: every frame both ways to FILE. Prints
// "UDP <port>" once bound. Runs until SIGTERM/SIGINT or until the process that started it is
// gone; then prints the network's counters ("ETH ...") and "CYCLES <n> SECONDS <s> ECHOED <n>
// DROPPED <n> ERRORS <n>" on stderr (SECONDS: the time spent simulating, not asleep in poll()).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "Veth_loopback.h"
#include "ethernet.h"
#include "verilated.h"

static volatile sig_atomic_t stop = 0;
static void on_signal(int) { stop = 1; }

int main(int argc, char** argv) {
    pid_t parent = getppid();
    simeth::Config cfg;
    for (int i = 1; i < argc; i++) {
        auto arg = [&](const char* name) { return std::strcmp(argv[i], name) == 0 && i + 1 < argc; };
        if (arg("--ip")) cfg.device_ip = simeth::parse_ip(argv[++i]);
        else if (arg("--mac")) cfg.device_mac = std::strtoull(argv[++i], nullptr, 16);
        else if (arg("--port")) cfg.device_port = std::atoi(argv[++i]);
        else if (arg("--host-port")) cfg.host_port = std::atoi(argv[++i]);
        else if (std::strcmp(argv[i], "--sticky") == 0) cfg.host_port_sticky = true;
        else if (arg("--bind")) cfg.bind_port = std::atoi(argv[++i]);
        else if (arg("--queue")) cfg.rx_queue_frames = std::atoi(argv[++i]);
        else if (arg("--pcap")) cfg.pcap = argv[++i];
        else if (std::strcmp(argv[i], "--verbose") == 0) cfg.verbose = true;
        else {
            std::fprintf(stderr, "ethloop: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    simeth::Network* net;
    try {
        net = new simeth::Network(cfg);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ethloop: %s\n", e.what());
        return 1;
    }
    std::printf("UDP %d\n", net->port());
    std::fflush(stdout);

    Verilated::commandArgs(argc, argv);
    Veth_loopback* top = new Veth_loopback;
    top->clk = 0;
    top->rst = 1;
    for (int i = 0; i < 8; i++) {
        SIMETH_STEP(*net, top, eth_mii_);
        top->clk = !top->clk;
        top->eval();
    }
    top->rst = 0;

    auto started = std::chrono::steady_clock::now();
    double busy = 0;  // seconds spent simulating (not sleeping in poll())
    auto since = started;
    while (!stop) {
        if (top->idle && net->quiet_cycles() > 4096) {
            busy += std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
            bool woke = net->wait(100);
            since = std::chrono::steady_clock::now();
            if (getppid() != parent) break;
            if (!woke) continue;
        }
        SIMETH_STEP(*net, top, eth_mii_);
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        if ((net->cycles() & 0xFFFF) == 0 && getppid() != parent) break;
    }
    busy += std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
    net->print_stats(stderr);
    std::fprintf(stderr, "CYCLES %llu SECONDS %.3f ECHOED %u DROPPED %u ERRORS %u\n",
                 (unsigned long long)net->cycles(), busy, top->echoed, top->dropped, top->errors);
    top->final();
    delete top;
    delete net;
    return 0;
}
