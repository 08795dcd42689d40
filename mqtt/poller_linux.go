package mqtt

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller watches parked clients' sockets with one epoll instance, so an
// idle connection costs its socket and its state, not a goroutine: the
// way Mosquitto keeps a connection in under a kilobyte. Each watch is one
// shot: a readable socket is reported once, its client's serve takes
// over, and the client asks again when it parks again. A socket stays in
// Go's own netpoller too; that one serves the client while it is busy.
type poller struct {
	epfd, wakefd int
	log          *slog.Logger

	mu      sync.Mutex
	clients map[uint64]*client // by client.key
	next    uint64
	done    chan struct{}
}

// errCannotPark: the connection has no socket of its own (WebSocket).
var errCannotPark = errors.New("mqtt: connection cannot be parked")

func newPoller(log *slog.Logger) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("mqtt: epoll: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("mqtt: eventfd: %w", err)
	}
	// Key 0 is the eventfd that stops run.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("mqtt: epoll: %w", err)
	}
	p := &poller{epfd: epfd, wakefd: wakefd, log: log, clients: make(map[uint64]*client), done: make(chan struct{})}
	go p.run()
	return p, nil
}

// watch parks c until its socket is readable (or closed).
func (p *poller) watch(c *client) error {
	rc := c.sock
	if rc == nil {
		return errCannotPark
	}
	p.mu.Lock()
	op := unix.EPOLL_CTL_MOD
	key := c.key
	if key == 0 {
		p.next++
		key = p.next
		c.key = key
		p.clients[key] = c
		op = unix.EPOLL_CTL_ADD
	}
	p.mu.Unlock()
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd:     int32(uint32(key)),
		Pad:    int32(uint32(key >> 32)),
	}
	var cerr error
	// Control holds the descriptor open: a socket closed meanwhile fails
	// here instead of touching a number the kernel gave to another.
	err := rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil && op == unix.EPOLL_CTL_ADD {
		p.forget(c)
	}
	return err
}

// forget drops a finished client. Its socket left the epoll set when it
// closed.
func (p *poller) forget(c *client) {
	p.mu.Lock()
	if c.key != 0 {
		delete(p.clients, c.key)
		c.key = 0
	}
	p.mu.Unlock()
}

func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.log.Error("mqtt: epoll wait failed; idle clients are no longer watched", "err", err)
			return
		}
		for _, ev := range events[:n] {
			key := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if key == 0 {
				return
			}
			p.mu.Lock()
			c := p.clients[key]
			p.mu.Unlock()
			if c != nil {
				c.wake()
			}
		}
	}
}

// close stops the poller; the clients are closed by their server.
func (p *poller) close() {
	unix.Write(p.wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-p.done
	unix.Close(p.epfd)
	unix.Close(p.wakefd)
}

// writeNow writes what the socket takes of b without waiting for room.
func writeNow(rc syscall.RawConn, b []byte) int {
	n := 0
	rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := unix.Write(int(fd), b[n:])
			if err != nil || m <= 0 {
				break
			}
			n += m
		}
		return true // done, whatever the socket took: never wait
	})
	return n
}
