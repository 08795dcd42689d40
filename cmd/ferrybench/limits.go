package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// noFileLimit is the outcome of raiseNoFile.
type noFileLimit struct {
	soft, hard uint64
	// hardErr is why the hard limit could not be raised to what was
	// asked (EPERM: not root, or no CAP_SYS_RESOURCE, as in most
	// containers); nil when it was raised or did not need to be.
	hardErr error
}

// raiseNoFile raises this process's RLIMIT_NOFILE so that it, and the
// processes it starts afterwards (the brokers of --orchestrate, the child
// ferrybench runs), may open need files: the hard limit to max(need, hard),
// at most fs.nr_open, when that is permitted, and the soft limit to the
// hard limit. When raising the hard limit is refused it falls back to
// soft = hard, and says why in hardErr. It returns an error only when not
// even that works.
//
// It always calls Setrlimit, even when nothing changes: the Go runtime
// raises its own soft limit at start and restores the original one in
// processes it starts, unless the program set the limit itself.
func raiseNoFile(need uint64) (noFileLimit, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return noFileLimit{}, err
	}
	var out noFileLimit
	if need > lim.Max {
		want := need
		if nrOpen, err := readUintFile("/proc/sys/fs/nr_open"); err == nil && want > nrOpen {
			want = nrOpen
			out.hardErr = fmt.Errorf("fs.nr_open is %d", nrOpen)
		}
		if want > lim.Max {
			raised := syscall.Rlimit{Cur: want, Max: want}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
				lim = raised
			} else {
				out.hardErr = fmt.Errorf("raising the hard limit from %d to %d: %w", lim.Max, want, err)
				if errors.Is(err, syscall.EPERM) {
					out.hardErr = fmt.Errorf("%w (it needs root with CAP_SYS_RESOURCE)", out.hardErr)
				}
			}
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return noFileLimit{}, err
	}
	out.soft, out.hard = lim.Cur, lim.Max
	return out, nil
}

func readUintFile(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// procNoFile reads the soft "Max open files" limit of a process from
// /proc/<pid>/limits.
func procNoFile(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return 0, err
	}
	return parseNoFile(b)
}

func parseNoFile(limits []byte) (uint64, error) {
	for line := range bytes.Lines(limits) {
		rest, ok := bytes.CutPrefix(line, []byte("Max open files"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) < 1 {
			break
		}
		if f[0] == "unlimited" {
			return 1 << 62, nil
		}
		return strconv.ParseUint(f[0], 10, 64)
	}
	return 0, errors.New("no Max open files line")
}

// ephemeralPorts is the size of net.ipv4.ip_local_port_range: how many
// connections one source address can have open to one destination.
func ephemeralPorts() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 28232 // Linux's default, 32768-60999
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 28232
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 28232
	}
	return hi - lo + 1
}

// perSource is how many idle connections go out from one source address.
// One address has about 28,000 ephemeral ports per destination; staying
// well below leaves room for the sockets earlier runs left in TIME_WAIT and
// for other programs.
const perSource = 10000

// dialPlan says where idle connections go from: to an IPv4 loopback
// address, connection i leaves from 127.0.0.1 + i/perSource (the first
// perSource from the kernel's choice, 127.0.0.1), so 100,000 connections
// use 127.0.0.1 to 127.0.0.10. Any 127.x.y.z address is local on Linux.
type dialPlan struct {
	addr   string // host:port to dial, resolved
	spread bool
}

// newDialPlan resolves addr and checks that n connections to it can have
// distinct source ports.
func newDialPlan(addr string, n int) (dialPlan, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return dialPlan{}, err
	}
	p := dialPlan{addr: ta.String()}
	if ip4 := ta.IP.To4(); ip4 != nil && ip4.IsLoopback() {
		p.spread = true
		return p, nil
	}
	if ports := ephemeralPorts(); n > ports-1000 {
		return p, fmt.Errorf("%d connections to %s: one source address has only %d ephemeral ports (net.ipv4.ip_local_port_range), and only an IPv4 loopback broker address (127.x.y.z) lets ferrybench use more source addresses", n, addr, ports)
	}
	return p, nil
}

// source is connection i's local address, nil for the kernel's choice.
func (p dialPlan) source(i int) *net.TCPAddr {
	k := i / perSource
	if !p.spread || k == 0 {
		return nil
	}
	v := 0x7f000001 + uint32(k)
	return &net.TCPAddr{IP: net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))}
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (4.2+; not in
// package syscall): bind() with port 0 then leaves the port to connect(),
// which needs only the 4-tuple to be unique. Without it bind() picks a port
// unused on that address for any destination, including ports still in
// TIME_WAIT from an earlier run, so a second 100,000-connection run within
// a minute would run out.
const ipBindAddressNoPort = 24

func (p dialPlan) dialer(i int) *net.Dialer {
	d := &net.Dialer{Timeout: idleTimeout}
	if src := p.source(i); src != nil {
		d.LocalAddr = src
		d.Control = func(network, address string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("setsockopt IP_BIND_ADDRESS_NO_PORT: %w", serr)
			}
			return nil
		}
	}
	return d
}
