package devstack

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
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
	// Cluster, when set, makes the server a node of a JetStream cluster:
	// its name, the port its routes listen on, and every node's route URL
	// (StartNATSCluster fills them in).
	Name        string
	ClusterPort int
	Routes      []string
}

// StartNATS starts an embedded NATS server with JetStream and waits until it
// accepts connections.
func StartNATS(o NATSOptions) (*NATS, error) {
	port := o.Port
	if port == 0 {
		port = -1 // the server picks a random free port
	}
	name := o.Name
	if name == "" {
		name = "tideline"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(o.Dir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
	if len(o.Routes) > 0 {
		opts.Cluster = server.ClusterOpts{Name: "tideline", Host: "127.0.0.1", Port: o.ClusterPort}
		for _, r := range o.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("cannot configure embedded NATS route %s: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
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

// NATSCluster is a JetStream cluster of embedded servers, one directory
// each, for tests of tideline on a cluster.
type NATSCluster struct {
	Nodes []*NATS
	Opts  []NATSOptions // to start a stopped node again, on its data
}

// StartNATSCluster starts n embedded servers routed to each other with
// JetStream, in dir/node<i>, and waits until JetStream has a leader.
func StartNATSCluster(dir string, n int) (*NATSCluster, error) {
	c := &NATSCluster{}
	routes := make([]string, n)
	for i := range n {
		ports := make([]int, 2)
		for j := range ports {
			var err error
			if ports[j], err = StablePort(); err != nil { // a node is started again on the same ports
				return nil, err
			}
		}
		c.Opts = append(c.Opts, NATSOptions{Dir: filepath.Join(dir, fmt.Sprintf("node%d", i)), Port: ports[0], Name: fmt.Sprintf("node%d", i), ClusterPort: ports[1]})
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[1])
	}
	for i := range c.Opts {
		c.Opts[i].Routes = routes
		ns, err := StartNATS(c.Opts[i])
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, ns)
	}
	// Ready when the meta leader counts every node as a JetStream peer
	// with stats: before that, a stream of n replicas has no placement.
	deadline := time.Now().Add(30 * time.Second)
	for !c.ready(n) {
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("cannot start a NATS cluster: JetStream's leader does not see all %d nodes after 30s", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c, nil
}

// ready reports whether some node leads JetStream and sees n peers.
func (c *NATSCluster) ready(n int) bool {
	for _, node := range c.Nodes {
		if node.Server.JetStreamIsLeader() && len(node.Server.JetStreamClusterPeers()) == n {
			return true
		}
	}
	return false
}

// URL lists every node, as clients take it: they reconnect to another
// when one goes.
func (c *NATSCluster) URL() string {
	urls := make([]string, len(c.Opts))
	for i, o := range c.Opts {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	}
	return strings.Join(urls, ",")
}

// StopNode stops node i; StartNode starts it again on its data.
func (c *NATSCluster) StopNode(i int) {
	if c.Nodes[i] != nil {
		c.Nodes[i].Stop()
		c.Nodes[i] = nil
	}
}

// StartNode starts node i again, on its data.
func (c *NATSCluster) StartNode(i int) error {
	ns, err := StartNATS(c.Opts[i])
	if err != nil {
		return err
	}
	c.Nodes[i] = ns
	return nil
}

// Stop stops every node.
func (c *NATSCluster) Stop() {
	for i := range c.Nodes {
		c.StopNode(i)
	}
}
