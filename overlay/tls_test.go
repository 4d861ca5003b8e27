package overlay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTestPKI writes a self-signed certificate and its key as PEM files and
// returns their paths; the certificate doubles as the CA.
func writeTestPKI(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "overlaylab test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadTLSErrors(t *testing.T) {
	cert, key := writeTestPKI(t)
	dir := t.TempDir()
	noPEM := filepath.Join(dir, "ca.txt")
	writeFile(t, noPEM, []byte("this is not a certificate\n"))
	empty := filepath.Join(dir, "empty.pem")
	writeFile(t, empty, nil)
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name             string
		ca, cert, key    string
		wants            []string // every one must appear in the error
		wantNotFoundFile bool
	}{
		{name: "missing CA file", ca: missing, wants: []string{"--etcd-cafile", missing}, wantNotFoundFile: true},
		{name: "CA file without PEM", ca: noPEM, wants: []string{"--etcd-cafile", noPEM, "no PEM certificate"}},
		{name: "empty CA file", ca: empty, wants: []string{"--etcd-cafile", "no PEM certificate"}},
		{name: "CA is a directory", ca: dir, wants: []string{"--etcd-cafile"}},
		{name: "cert without key", cert: cert, wants: []string{"--etcd-certfile", "--etcd-keyfile", "together"}},
		{name: "key without cert", key: key, wants: []string{"--etcd-certfile", "--etcd-keyfile", "together"}},
		{name: "missing cert file", cert: missing, key: key, wants: []string{"--etcd-certfile/--etcd-keyfile"}, wantNotFoundFile: true},
		{name: "key file is not a key", cert: cert, key: noPEM, wants: []string{"--etcd-certfile/--etcd-keyfile"}},
		{name: "cert and key swapped", cert: key, key: cert, wants: []string{"--etcd-certfile/--etcd-keyfile"}},
		{name: "good CA, bad pair", ca: cert, cert: cert, key: empty, wants: []string{"--etcd-certfile/--etcd-keyfile"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadTLS(tc.ca, tc.cert, tc.key)
			if err == nil {
				t.Fatalf("loadTLS(%q, %q, %q) = %v, want an error", tc.ca, tc.cert, tc.key, cfg)
			}
			if cfg != nil {
				t.Errorf("loadTLS returned a config with its error")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.wantNotFoundFile && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("error %q does not wrap the not-exist cause", err)
			}
		})
	}
}

func TestLoadTLSGood(t *testing.T) {
	cert, key := writeTestPKI(t)

	cfg, err := loadTLS(cert, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.MinVersion < tls.VersionTLS12 {
		t.Errorf("config: RootCAs %v, %d certificates, MinVersion %#x", cfg.RootCAs != nil, len(cfg.Certificates), cfg.MinVersion)
	}

	// Each half alone is valid too: server verification only, or a client
	// certificate against the system roots.
	if cfg, err := loadTLS(cert, "", ""); err != nil || cfg.RootCAs == nil || len(cfg.Certificates) != 0 {
		t.Errorf("CA only: %v, %v", cfg, err)
	}
	if cfg, err := loadTLS("", cert, key); err != nil || cfg.RootCAs != nil || len(cfg.Certificates) != 1 {
		t.Errorf("pair only: %v, %v", cfg, err)
	}
}
