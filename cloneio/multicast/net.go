package multicast

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Defaults of the rendezvous.
const (
	DefaultGroup = "239.255.42.42" // organisation-local scope (RFC 2365)
	DefaultPort  = 42420
	DefaultMTU   = 1500
)

// endpoint is where a session meets.
type endpoint struct {
	group netip.AddrPort
	ifi   *net.Interface // nil: let the routing table choose
}

func resolveEndpoint(group string, port int, iface string) (endpoint, error) {
	var ep endpoint
	if group == "" {
		group = DefaultGroup
	}
	if port == 0 {
		port = DefaultPort
	}
	a, err := netip.ParseAddr(group)
	if err != nil {
		return ep, fmt.Errorf("multicast: group %q: %w", group, err)
	}
	if !a.Is4() || !a.IsMulticast() {
		return ep, fmt.Errorf("multicast: group %s is not an IPv4 multicast address", a)
	}
	if port < 1 || port > 65535 {
		return ep, fmt.Errorf("multicast: port %d out of range", port)
	}
	ep.group = netip.AddrPortFrom(a, uint16(port))
	if iface != "" {
		ifi, err := findInterface(iface)
		if err != nil {
			return ep, err
		}
		ep.ifi = ifi
	}
	return ep, nil
}

// findInterface accepts an interface name or one of its IPv4 addresses.
func findInterface(s string) (*net.Interface, error) {
	if ifi, err := net.InterfaceByName(s); err == nil {
		return ifi, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil, fmt.Errorf("multicast: no interface %q", s)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("multicast: list interfaces: %w", err)
	}
	for i := range ifs {
		addrs, _ := ifs[i].Addrs()
		for _, ad := range addrs {
			if pfx, err := netip.ParsePrefix(ad.String()); err == nil && pfx.Addr() == a {
				return &ifs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("multicast: no interface has address %s", a)
}

func ifIndex(ifi *net.Interface) int32 {
	if ifi == nil {
		return 0
	}
	return int32(ifi.Index)
}

// setBuffer sets SO_SNDBUF/SO_RCVBUF, forcing past the sysctl limit when
// the process may (CAP_NET_ADMIN); a receiver's buffer is what absorbs
// bursts while it writes to disk.
func setBuffer(fd uintptr, force, plain, size int) {
	if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, force, size) != nil {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, plain, size)
	}
}

// control runs fn on the socket's descriptor.
func control(c *net.UDPConn, fn func(fd uintptr) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(fd) }); err != nil {
		return err
	}
	return ferr
}

// Socket buffer sizes.
const (
	// senderSndBuf is deliberately modest: when the sender outruns its own
	// link, a small send buffer makes the kernel block the sender (free
	// pacing) instead of letting a deep queue drop packets.
	senderSndBuf = 512 << 10
	senderRcvBuf = 4 << 20
	rxRcvBuf     = 16 << 20
)

// openSenderSocket opens the sender's socket: unicast port for receivers'
// replies, multicast out of the chosen interface with the given TTL.
func openSenderSocket(ep endpoint, ttl int) (*net.UDPConn, error) {
	laddr := &net.UDPAddr{IP: net.IPv4zero}
	c, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		return nil, fmt.Errorf("multicast: open socket: %w", err)
	}
	err = control(c, func(fd uintptr) error {
		setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, senderSndBuf)
		setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, senderRcvBuf)
		if ep.ifi != nil {
			mreq := &unix.IPMreqn{Ifindex: ifIndex(ep.ifi)}
			if err := unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreq); err != nil {
				return fmt.Errorf("IP_MULTICAST_IF %s: %w", ep.ifi.Name, err)
			}
		}
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, ttl); err != nil {
			return fmt.Errorf("IP_MULTICAST_TTL: %w", err)
		}
		// Loop back to local members: a receiver on the sender's host (and
		// tests on lo) must hear the group.
		return unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 1)
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("multicast: sender socket: %w", err)
	}
	return c, nil
}

// openGroupSocket opens a receiver's data socket: bound to group:port (so
// it hears only this group), shared with other receivers on the host, and
// joined on the interface.
func openGroupSocket(ctx context.Context, ep endpoint) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rxRcvBuf)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", ep.group.String())
	if err != nil {
		return nil, fmt.Errorf("multicast: listen on %s: %w", ep.group, err)
	}
	c := pc.(*net.UDPConn)
	err = control(c, func(fd uintptr) error {
		mreq := &unix.IPMreqn{Multiaddr: ep.group.Addr().As4(), Ifindex: ifIndex(ep.ifi)}
		if err := unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
			if errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("join %s: no multicast route (give --interface): %w", ep.group.Addr(), err)
			}
			return fmt.Errorf("join %s: %w", ep.group.Addr(), err)
		}
		// Only this socket's own memberships, not every group the host joined.
		return unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("multicast: %w", err)
	}
	return c, nil
}

// openReplySocket opens a receiver's unicast socket to talk to the sender.
func openReplySocket() (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		return nil, fmt.Errorf("multicast: open reply socket: %w", err)
	}
	return c, nil
}

// datagramRoom is the largest packet the sender builds for a path MTU.
func datagramRoom(mtu int) int { return mtu - 28 } // IPv4 + UDP headers

// symbolSizeFor is the symbol size that keeps data packets within one
// frame of the given MTU (room for the HMAC tag only in keyed sessions).
func symbolSizeFor(mtu int, keyed bool) int {
	n := datagramRoom(mtu) - dataHdrLen
	if keyed {
		n -= tagLen
	}
	return n
}
