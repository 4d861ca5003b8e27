package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// Upstream flanneld joins an overlaylab network as a peer: same etcd keys,
// same lease JSON, same wire format. Runs only when FLANNELD names its
// binary (FLANNELD_BACKENDS picks backends, default "vxlan").
var _ = Describe("interop with upstream flanneld", func() {
	backends := strings.Fields(strings.ReplaceAll(os.Getenv("FLANNELD_BACKENDS"), ",", " "))
	if len(backends) == 0 {
		backends = []string{"vxlan"}
	}
	for _, backend := range backends {
		Describe(backend, Ordered, func() {
			name := "e2efl" + map[string]string{"vxlan": "vx", "udp": "ud", "host-gw": "hg"}[backend]
			BeforeAll(func() {
				flanneld := os.Getenv("FLANNELD")
				if flanneld == "" {
					Skip("set FLANNELD to an upstream flanneld binary to run the interop specs")
				}
				r := run(labArgs(name, "up", "--hosts", "2", "--containers", "1", "--backend", backend)...)
				Expect(r.code).To(Equal(0), r.String())
				DeferCleanup(func() { run(labArgs(name, "down")...) })
				st, err := lab.Load(stateRoot, name)
				Expect(err).NotTo(HaveOccurred())
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				_, err = lab.AddHost(ctx, st, bin, lab.HostOptions{Containers: 1, Command: []string{flanneld,
					"--etcd-endpoints={etcd}", "--iface={iface}", "--subnet-file={subnet-file}",
					"--ip-masq=false", "--iptables-forward-rules=false"}})
				if err != nil {
					dumpLab(name)
				}
				Expect(err).NotTo(HaveOccurred())
			})
			AfterEach(func() {
				if CurrentSpecReport().Failed() {
					dumpLab(name)
				}
			})

			It("reads flanneld's lease in overlaylab's schema", func() {
				st := status(name)
				h := st.Hosts[2]
				Expect(h.Foreign).NotTo(BeEmpty())
				v := etcdKeys(st)["/coreos.com/network/subnets/"+subnet.SubnetKey(netip.MustParsePrefix(h.Subnet))]
				var attrs subnet.LeaseAttrs
				Expect(json.Unmarshal([]byte(v), &attrs)).To(Succeed(), v)
				Expect(attrs.PublicIP.String()).To(Equal(h.UnderlayIP))
				if backend == "udp" {
					// Upstream's udp backend publishes no BackendType at all;
					// overlaylab's udp peers must (and do) accept that.
					Expect(attrs.BackendType).To(BeElementOf("udp", ""))
				} else {
					Expect(attrs.BackendType).To(Equal(backend))
				}
			})

			It("exchanges pings between flanneld's containers and overlaylab's, encapsulated on the wire", func() {
				st := status(name)
				checkMatrixAndWire(st, 2) // the flanneld host's wire
				checkMatrixAndWire(st, 0) // an overlaylab host's wire
			})

			if backend == "udp" {
				// flanneld sends one datagram per packet and reads one at a
				// time: the fast datapath's merging (of flanneld's datagrams)
				// and cutting (of TSO batches into datagrams flanneld reads
				// one by one) must carry bulk data byte-exact both ways.
				It("carries TCP and UDP byte-exact between flanneld's host and a fast overlaylab host", func() {
					st := status(name)
					Expect(readFile(st.Hosts[0].AgentLog)).To(ContainSubstring("fast udp datapath"))
					ufBulkBothWays(st, st.Hosts[0], st.Hosts[2], "flanneld interop")
				})
			}
		})
	}
})
