package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab"
)

var _ = Describe("etcd with TLS (--etcd-tls)", Ordered, func() {
	const name = "e2etls"
	var st *lab.State
	BeforeAll(func() {
		r := run(labArgs(name, "up", "--hosts", "2", "--containers", "1", "--etcd-tls")...)
		Expect(r.code).To(Equal(0), r.String())
		DeferCleanup(func() { run(labArgs(name, "down")...) })
		st = status(name)
	})

	// get tries one read with the given client TLS.
	get := func(endpoints []string, t *tls.Config) error {
		cli, err := lab.Client(endpoints, st.Etcd.Netns, t)
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = cli.Get(ctx, "/coreos.com/network/config")
		return err
	}

	It("serves https and the agents use their client certificate", func() {
		Expect(st.Etcd.Endpoints).To(ConsistOf("https://192.168.77.250:2379"))
		Expect(st.Etcd.TLS).NotTo(BeNil())
		for _, h := range st.Hosts {
			Expect(h.Subnet).NotTo(BeEmpty())
			Expect(readFile(h.AgentLog)).To(ContainSubstring("lease acquired"))
		}
		checkMatrixAndWire(st, 0)
		key, err := os.Stat(st.Etcd.TLS.ClientKey)
		Expect(err).NotTo(HaveOccurred())
		Expect(key.Mode().Perm()).To(Equal(os.FileMode(0o600)))
	})

	It("accepts a client with the lab's certificate", func() {
		t, err := st.ClientTLS()
		Expect(err).NotTo(HaveOccurred())
		Expect(get(st.Etcd.Endpoints, t)).To(Succeed())
	})

	It("refuses a client without a certificate", func() {
		ca, err := os.ReadFile(st.Etcd.TLS.CA)
		Expect(err).NotTo(HaveOccurred())
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		err = get(st.Etcd.Endpoints, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		Expect(err).To(HaveOccurred())
	})

	It("refuses plain http", func() {
		plain := []string{strings.Replace(st.Etcd.Endpoints[0], "https://", "http://", 1)}
		Expect(get(plain, nil)).To(HaveOccurred())
	})
})
