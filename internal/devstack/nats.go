package devstack

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS is an embedded nats-server with JetStream on file storage.
type NATS struct {
	Server *server.Server
	URL    string // nats://127.0.0.1:port
}

// NATSOptions configures StartNATS.
type NATSOptions struct {
	Dir  string // JetStream store is Dir/jetstream
	Port int    // 0 picks a free port
}

// StartNATS starts an embedded NATS server with JetStream and waits until it
// accepts connections.
func StartNATS(o NATSOptions) (*NATS, error) {
	port := o.Port
	if port == 0 {
		port = -1 // the server picks a random free port
	}
	opts := &server.Options{
		ServerName: "tideline",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(o.Dir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cannot configure embedded NATS: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("cannot start embedded NATS on 127.0.0.1:%d within 30s: is the port taken, or %s not writable?", o.Port, opts.StoreDir)
	}
	return &NATS{Server: ns, URL: ns.ClientURL()}, nil
}

// Stop shuts the server down and waits for it.
func (n *NATS) Stop() {
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
}
