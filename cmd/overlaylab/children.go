package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/overlaylab/overlaylab/lab"
)

// The lab's long-lived children are this binary re-executed: an embedded
// etcd member inside its namespace, and the proxy to an external etcd.

func etcdMemberCmd() *cobra.Command {
	var o lab.EtcdOptions
	cmd := &cobra.Command{
		Use:    "etcd-member",
		Short:  "Run one member of a lab's embedded etcd (started by up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, ip := range o.ClientIPs {
				if _, err := netip.ParseAddr(ip); err != nil {
					return fmt.Errorf("--client-ip %q: %w", ip, err)
				}
			}
			return lab.RunEtcd(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "default", "member name")
	f.StringVar(&o.DataDir, "data-dir", "", "data directory")
	f.StringSliceVar(&o.ClientIPs, "client-ip", nil, "address to serve clients on, port 2379 (repeatable)")
	f.StringVar(&o.PeerIP, "peer-ip", "127.0.0.1", "address for the peer URL, port 2380")
	f.StringVar(&o.InitialCluster, "initial-cluster", "", "every member as name=http://ip:2380, comma-separated")
	f.StringVar(&o.CertFile, "cert-file", "", "server certificate (enables client TLS)")
	f.StringVar(&o.KeyFile, "key-file", "", "server key")
	f.StringVar(&o.TrustedCAFile, "trusted-ca-file", "", "CA that client certificates must be signed by")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

func etcdProxyCmd() *cobra.Command {
	var nsName, listen, target string
	cmd := &cobra.Command{
		Use:    "etcd-proxy",
		Short:  "Forward the lab's etcd address to an external etcd (started by up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.RunProxy(nsName, listen, target)
		},
	}
	cmd.Flags().StringVar(&nsName, "netns", "", "namespace to listen in")
	cmd.Flags().StringVar(&listen, "listen", "", "address:port to listen on")
	cmd.Flags().StringVar(&target, "target", "", "external etcd host:port")
	return cmd
}
